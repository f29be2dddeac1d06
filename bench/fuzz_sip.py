"""Fuzz the SIP decoder: parser, TCP framer and tracker (run by hand, not by CI).

    .venv/bin/python bench/fuzz_sip.py [--inputs 100000] [--seed 3261]

Inputs are real SIP messages from the public captures (read in place) and hand-built ones,
mutated deterministically, plus random bytes. Each input goes to `parse_message` (only
SipDecodeError is allowed), to a `SipStreamFramer` (nothing may raise) and to one long-lived
`SipTracker` (nothing may raise, and its catch-all counter must stay at zero).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integrations.observations import Endpoint  # noqa: E402
from integrations.sip.errors import SipDecodeError  # noqa: E402
from integrations.sip.framing import SipStreamFramer  # noqa: E402
from integrations.sip.message import parse_message  # noqa: E402
from integrations.sip.tracker import SipTracker  # noqa: E402
from tests.integrations.sip_packets import sip_datagrams, tcp_messages  # noqa: E402

CAPTURES = Path(os.environ.get("QMS_PUBLIC_CAPTURES", ROOT.parent / "shared/captures/public"))
TOKENS = [
    *(b"\r\n", b"\r\n\r\n", b":", b";", b",", b"<", b">", b'"', b" ", b"\t", b"@", b"="),
    *(b"SIP/2.0", b"Content-Length: ", b"l: -1", b"l: 99999999", b"\xff\xfe", b"\x00"),
    *(b"v=0\r\n", b"m=audio 70000 RTP/AVP x\r\n", b"c=IN IP6 ::\r\n", b"[", b"]", b"%"),
]
HAND_BUILT = [
    b"INVITE sip:2001@pbx SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    b'f: "A, B" <sip:1001@pbx>;tag=1\r\nt: <sip:2001@pbx>\r\ni: c1\r\nCSeq: 1 INVITE\r\n'
    b"m: <sip:1001@10.0.0.1>\r\nc: application/sdp\r\nl: 53\r\n\r\n"
    b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=sendonly\r\n",
    b"REGISTER sip:contoso.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.21:50000;branch=z9hG4bKl\r\n"
    b"From: <sip:alice@contoso.com>;tag=1;epid=0101\r\nTo: <sip:alice@contoso.com>\r\n"
    b"Call-ID: lync\r\nCSeq: 1 REGISTER\r\n"
    b'Contact: <sip:10.0.0.21:50000>;+sip.instance="<urn:1>"\r\n'
    b"ms-keep-alive: UAC\r\nP-Asserted-Identity: <tel:+14255550100;ext=100>\r\nExpires: 0\r\n\r\n",
]


def load_seeds() -> list[bytes]:
    seeds = list(HAND_BUILT)
    for path in sorted(CAPTURES.glob("*.pcap*")):
        seeds += [segment.payload for segment in sip_datagrams(path)]
        seeds += [message for _, message in tcp_messages(path)]
    return seeds


def mutate(rng: random.Random, message: bytes) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 8)):
        position = rng.randint(0, len(data))
        chunk = rng.choice(TOKENS) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 8))
        operation = rng.randrange(5)
        if operation == 0:
            data[position : position + len(chunk)] = chunk
        elif operation == 1:
            data[position:position] = chunk
        elif operation == 2:
            del data[position : position + rng.randint(1, 16)]
        elif operation == 3:
            del data[position:]
        else:
            data[position:position] = data[position : position + 64] * rng.randint(2, 50)
    return bytes(data)


def next_input(rng: random.Random, seeds: list[bytes]) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randint(0, 1500))
    if roll < 0.15:
        return rng.choice(seeds)
    return mutate(rng, rng.choice(seeds))


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--inputs", type=int, default=100_000)
    options.add_argument("--seed", type=int, default=3261)
    args = options.parse_args()
    rng = random.Random(args.seed)
    seeds = load_seeds()
    decode_errors: Counter[str] = Counter()
    uncaught: Counter[str] = Counter()
    tracker, framer = SipTracker(), SipStreamFramer()
    phone, pbx = Endpoint("10.0.0.11", 5060), Endpoint("10.0.0.1", 5060)
    started, at = time.perf_counter(), datetime(2024, 1, 1, tzinfo=UTC)
    parsed = framed = observations = 0
    for index in range(args.inputs):
        payload = next_input(rng, seeds)
        at += timedelta(milliseconds=50)
        try:
            parse_message(payload)
            parsed += 1
        except SipDecodeError as error:
            decode_errors[error.kind] += 1
        except Exception as error:  # the fuzzer's job is to count these
            uncaught[f"parser {type(error).__name__}"] += 1
        try:
            framed += len(framer.feed(payload))
            if index % 97 == 0:
                framer.gap()
        except Exception as error:
            uncaught[f"framer {type(error).__name__}"] += 1
        try:
            src, dst = (phone, pbx) if index % 2 else (pbx, phone)
            observations += len(tracker.feed(payload, src, dst, at, "udp" if index % 5 else "tcp"))
            if index % 1000 == 0:
                observations += len(tracker.expire(at))
        except Exception as error:
            uncaught[f"tracker {type(error).__name__}"] += 1
    uncaught["tracker internal (caught at its edge)"] += tracker.errors["internal"]
    elapsed = time.perf_counter() - started
    print(f"seed messages: {len(seeds)} (public captures + {len(HAND_BUILT)} hand-built)")
    print(f"inputs: {args.inputs} (seed {args.seed}), each to parser, framer and tracker")
    print(f"parsed cleanly: {parsed}; framed messages: {framed}; observations: {observations}")
    print(f"decode errors by kind: {dict(decode_errors.most_common())}")
    print(f"framer errors by kind: {dict(framer.errors.most_common())}")
    print(f"tracker errors by kind: {dict(tracker.errors.most_common())}")
    print(f"uncaught exceptions: {sum(uncaught.values())} {dict(+uncaught)}")
    print(f"elapsed seconds: {elapsed:.1f}")
    sys.exit(1 if sum(uncaught.values()) else 0)


if __name__ == "__main__":
    main()
