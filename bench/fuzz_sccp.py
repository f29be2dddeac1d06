"""Fuzz the SCCP decoders, the stream framer and the tracker (deterministic, plain Python).

Inputs are mutations of real Skinny messages from the public pyskinny captures, hand-built
messages for the newer layouts, and random bytes. Every input goes to `decode_message`
(only SccpDecodeError may come out), to a `SccpStreamFramer` and to a `SccpTracker` (nothing
may come out). Run from the project root:

    .venv/bin/python bench/fuzz_sccp.py [--inputs 120000] [--seed 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dpkt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from integrations.observations import Endpoint
from integrations.sccp import messages as m
from integrations.sccp.framing import SccpStreamFramer
from integrations.sccp.tracker import SccpTracker

CAPTURES = Path(
    os.environ.get(
        "QMS_PUBLIC_CAPTURES",
        Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / "public",
    )
)
SCCP_CAPTURES = (
    "pyskinny-cm_call_from_pyskinny_to_7912.pcapng",
    "pyskinny-cm_cap.pcapng",
    "pyskinny-cm2_register.pcapng",
    "pyskinny-vphone_hold_unhold.pcap",
)
PHONE, CM = Endpoint("192.0.2.10", 51000), Endpoint("198.51.100.1", 2000)
T0 = datetime(2025, 1, 6, tzinfo=UTC)
Message = tuple[int, int, bytes]  # header version, message id, payload


def capture_payloads(path: Path) -> list[bytes]:
    with path.open("rb") as handle:
        try:
            reader = dpkt.pcapng.Reader(handle)
        except ValueError:
            handle.seek(0)
            reader = dpkt.pcap.Reader(handle)
        payloads = []
        for _, frame in reader:
            tcp = getattr(dpkt.ethernet.Ethernet(frame).data, "data", None)
            if isinstance(tcp, dpkt.tcp.TCP) and 2000 in (tcp.sport, tcp.dport) and tcp.data:
                payloads.append(bytes(tcp.data))
        return payloads


def real_messages() -> list[Message]:
    messages: list[Message] = []
    for name in SCCP_CAPTURES:
        if (CAPTURES / name).is_file():
            for payload in capture_payloads(CAPTURES / name):
                frames = SccpStreamFramer().feed(payload)
                messages += [(f.version, f.message_id, f.payload) for f in frames]
    return messages


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def built_messages() -> list[Message]:
    v4or6 = u32(0) + bytes([10, 0, 0, 1]) + bytes(12)
    v6 = u32(1) + bytes(range(16))
    call_info_v2 = u32(1, 9, 1, 0, 0, 1, 0, 0) + b"9002\x00\x009001" + bytes(8) + b"Mary\x00"
    return [
        (0x11, m.OPEN_RECEIVE_CHANNEL_ACK, u32(0) + v4or6 + u32(24000, 7, 9)),
        (0x11, m.OPEN_RECEIVE_CHANNEL_ACK, u32(0) + v6 + u32(24000, 7, 9)),
        (0x11, m.START_MEDIA_TRANSMISSION, u32(9, 7) + v4or6 + u32(30000, 20, 0x56) + bytes(20)),
        (0x11, m.LINE_STAT_V2, u32(1, 0) + b"9001\x00John\x009001\x00"),
        (0x11, m.CALL_INFO_V2, call_info_v2),
        (0x12, m.DIALED_NUMBER, b"6175551212".ljust(25, b"\x00") + u32(1, 9)),
        (0x00, m.DIALED_NUMBER, b"6175551212".ljust(24, b"\x00") + u32(1, 9)),
    ]  # fmt: skip


def mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6:
            data = data[: rng.randint(0, len(data))]
        elif choice < 0.8:
            data += rng.randbytes(rng.randint(1, 32))
        elif data:
            start = rng.randrange(len(data))
            data[start : start + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", u32(1)])
    return bytes(data)


def make_input(rng: random.Random, corpus: list[Message]) -> Message:
    roll = rng.random()
    if roll < 0.15:
        return (
            rng.choice(sorted(m.HEADER_VERSIONS)),
            rng.choice(sorted(m.DECODERS)),
            rng.randbytes(rng.randint(0, 420)),
        )
    version, message_id, payload = rng.choice(corpus)
    if roll < 0.25:
        version = rng.choice(sorted(m.HEADER_VERSIONS))
    return version, message_id, mutate(rng, payload)


def wire(version: int, message_id: int, payload: bytes) -> bytes:
    return struct.pack("<III", len(payload) + 4, version, message_id) + payload


def run(inputs: int, seed: int) -> int:
    rng = random.Random(seed)
    corpus = real_messages() + built_messages()
    decode_errors: Counter[str] = Counter()
    uncaught: Counter[str] = Counter()
    framer, tracker = SccpStreamFramer(), SccpTracker()
    started = time.perf_counter()
    for index in range(inputs):
        version, message_id, payload = make_input(rng, corpus)
        try:
            m.decode_message(version, message_id, payload)
        except m.SccpDecodeError as error:
            decode_errors[error.kind] += 1
        except Exception as error:  # the fuzzer's job is to count these; there must be none
            uncaught[f"decoder {type(error).__name__}"] += 1
        stream = wire(version, message_id, payload)
        if rng.random() < 0.1:
            stream = mutate(rng, stream)
        try:
            framer.feed(stream)
            if rng.random() < 0.01:
                framer.gap()
            at = T0 + timedelta(seconds=index // 100)
            tracker.feed(stream, PHONE, CM, rng.random() < 0.5, at)
            if index % 5000 == 4999:
                tracker.expire(at + timedelta(seconds=rng.choice([1, 500])))
        except Exception as error:
            uncaught[f"framer/tracker {type(error).__name__}"] += 1
    elapsed = time.perf_counter() - started
    uncaught["tracker internal"] = tracker.errors["internal"]
    print(f"inputs: {inputs} (corpus: {len(corpus)} messages, seed {seed})")
    print("decode errors by kind:", dict(sorted(decode_errors.items())))
    print("framer/tracker errors by kind:", dict(sorted(tracker.errors.items())))
    print("uncaught exceptions:", sum(uncaught.values()), dict(+uncaught))
    print(f"elapsed seconds: {elapsed:.1f}")
    return 1 if sum(uncaught.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=2000)
    arguments = parser.parse_args()
    return run(arguments.inputs, arguments.seed)


if __name__ == "__main__":
    sys.exit(main())
