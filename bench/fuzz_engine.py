"""Fuzz the capture engine's packet path: link layers, tunnels, fragments, TCP, dispatch.

    .venv/bin/python bench/fuzz_engine.py [--inputs 100000] [--seed 7]

Frames come from the public captures (read in place), the project's traffic generator and
random bytes; each is mutated (bit flips, truncation, byte runs, splices) and fed to one
long-lived engine under every link type it could claim, so state (fragments waiting, TCP
streams, live calls) builds up as it would on a hostile mirror port. Any exception that
escapes Engine.feed is counted as uncaught; the run must end with zero.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

from recorder.capture import traffic  # noqa: E402
from recorder.capture.sources import read_capture  # noqa: E402
from recorder.engine.engine import Engine  # noqa: E402
from recorder.engine.sink import NullSink  # noqa: E402

CAPTURES = Path(os.environ.get("QMS_PUBLIC_CAPTURES", ROOT.parent / "shared/captures/public"))
LINKTYPES = [1, 1, 1, 113, 276, 101, 0]


def corpus() -> list[tuple[int, bytes]]:
    frames = []
    for path in sorted(CAPTURES.glob("*cap*")):
        frames += [(linktype, frame) for _, linktype, frame in read_capture(path)]
    generated = traffic.packets(traffic.make_calls(5), 0.2, use_sccp=False)
    generated_sccp = traffic.packets(traffic.make_calls(5), 0.2, use_sccp=True)
    frames += [(1, frame) for _, frame in generated] + [(1, frame) for _, frame in generated_sccp]
    return frames


def mutate(rng: random.Random, frame: bytes, corpus_frames: list[tuple[int, bytes]]) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice < 0.55:
            del data[rng.randrange(len(data) + 1) :]
        elif choice < 0.7 and data:
            start = rng.randrange(len(data))
            data[start : start + rng.randint(1, 8)] = bytes([rng.choice([0, 0xFF, 0x7F])]) * 4
        elif choice < 0.85:
            other = rng.choice(corpus_frames)[1]
            cut = rng.randrange(len(data) + 1)
            data = data[:cut] + other[rng.randrange(len(other) + 1) :]
        else:
            data += rng.randbytes(rng.randint(1, 64))
    return bytes(data)


def run(inputs: int, seed: int) -> int:
    rng = random.Random(seed)
    corpus_frames = corpus()
    engine = Engine(NullSink())
    uncaught: Counter[str] = Counter()
    started = time.perf_counter()
    for index in range(inputs):
        if rng.random() < 0.1:
            linktype, frame = rng.choice(LINKTYPES), rng.randbytes(rng.randint(0, 200))
        else:
            linktype, frame = rng.choice(corpus_frames)
            frame = mutate(rng, frame, corpus_frames)
            if rng.random() < 0.1:
                linktype = rng.choice(LINKTYPES)
        try:
            engine.feed(1_700_000_000.0 + index * 0.001, linktype, frame)
        except Exception as error:  # the fuzzer's whole purpose is to count these
            uncaught[type(error).__name__] += 1
            if uncaught.total() <= 3:
                traceback.print_exc()
    elapsed = time.perf_counter() - started
    errors = Counter(engine.stats.errors)
    errors.update({f"sip {kind}": n for kind, n in engine.sip.errors.items()})
    errors.update({f"sccp {kind}": n for kind, n in engine.sccp.errors.items()})
    print(f"inputs: {inputs} (corpus: {len(corpus_frames)} frames, seed {seed})")
    print(f"decode errors by kind: {dict(errors.most_common())}")
    print(
        f"live state at the end: {len(engine.tcp.connections)} TCP connections, "
        f"{len(engine.ip.defragmenter.pending)} datagrams waiting, "
        f"{len(engine.calls.calls)} live calls"
    )
    # The engine counts what trips a bug at its loop's edge as an internal error: a fuzzer
    # finding one has found a bug just as much as an exception escaping.
    internal = engine.stats.errors["internal-error"] + engine.sip.errors["internal"]
    internal += engine.sccp.errors["internal"]
    print(f"uncaught exceptions: {uncaught.total()} {dict(uncaught)}")
    print(f"internal errors caught at the loop's edge: {internal}")
    print(f"elapsed seconds: {elapsed:.1f}")
    return uncaught.total() + internal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    sys.exit(1 if run(options.inputs, options.seed) else 0)


if __name__ == "__main__":
    main()
