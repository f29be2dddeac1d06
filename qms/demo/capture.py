"""The demo capture: three calls among the demo directory's phones, with audible audio.

Each party plays its own short tune (so the two stereo channels differ), encoded as
G.711 µ-law, and John dials two DTMF digits. Written from scratch by QMS, so `make demo`
needs no third-party capture and the recordings' content is known.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recorder.capture.synthesis import rtp, sdp, sip, telephone_event, udp, write_pcap

RATE = 8000
PTIME = 0.02
SAMPLES = int(RATE * PTIME)
PBX = "10.20.0.2"


# Upper ends of the eight µ-law segments for 14-bit magnitudes (ITU-T G.711 Table 2a).
ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ulaw_encode(sample: int) -> int:
    """One linear 16-bit sample to its G.711 µ-law code: the 14-bit magnitude plus the
    bias of 33, placed in its segment, with the bits inverted (ITU-T G.711 §3)."""
    value = sample >> 2
    value, mask = (-value, 0x7F) if value < 0 else (value, 0xFF)
    value = min(value, 8159) + 33
    for segment, end in enumerate(ULAW_SEGMENT_ENDS):
        if value <= end:
            return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


def tune(notes: list[float], seconds: float, loudness: float = 6000.0) -> bytes:
    """A little melody of sine notes, each an equal share of `seconds`, in µ-law."""
    total = int(seconds * RATE)
    per_note = total // len(notes)
    encoded = bytearray()
    for index in range(total):
        frequency = notes[min(index // per_note, len(notes) - 1)]
        envelope = min(1.0, (index % per_note) / 400)  # a soft attack, no clicks
        encoded.append(
            ulaw_encode(int(loudness * envelope * math.sin(2 * math.pi * frequency * index / RATE)))
        )
    return bytes(encoded)


@dataclass
class DemoCall:
    call_id: str
    caller: str
    caller_ip: str
    callee: str
    callee_ip: str
    start: float
    seconds: float
    caller_notes: list[float]
    callee_notes: list[float]
    digits: str = ""


def calls(now: float) -> list[DemoCall]:
    return [
        DemoCall("demo-1@qms", "9001", "10.20.0.11", "+15551230001", "10.20.9.1",
                 now - 50 * 60, 12.0, [392, 440, 494, 523], [262, 294, 330], digits="42"),
        DemoCall("demo-2@qms", "+15559870002", "10.20.9.1", "9002", "10.20.0.12",
                 now - 45 * 60, 10.0, [330, 349, 392], [523, 494, 440, 392]),
        DemoCall("demo-3@qms", "9003", "10.20.0.13", "9001", "10.20.0.11",
                 now - 40 * 60, 8.0, [440, 554, 659], [349, 440, 523]),
    ]  # fmt: skip


def signalling(call: DemoCall, phase: str) -> list[bytes]:
    """INVITE/200/ACK when the call starts, BYE/200 when it ends."""
    via = [f"Via: SIP/2.0/UDP {call.caller_ip}:5060;branch=z9hG4bK{phase}{call.call_id[5]}"]
    ends = [
        f"From: <sip:{call.caller}@{PBX}>;tag=c",
        f"To: <sip:{call.callee}@{PBX}>" + (";tag=e" if phase != "invite" else ""),
        f"Call-ID: {call.call_id}",
    ]
    caller_contact = [f"Contact: <sip:{call.caller}@{call.caller_ip}:5060>"]
    callee_contact = [f"Contact: <sip:{call.callee}@{call.callee_ip}:5060>"]
    if phase == "bye":
        bye = sip(f"BYE sip:{call.callee}@{call.callee_ip} SIP/2.0", via + ends + ["CSeq: 2 BYE"])
        ok = sip("SIP/2.0 200 OK", via + ends + ["CSeq: 2 BYE"])
        return [
            udp(call.caller_ip, 5060, call.callee_ip, 5060, bye),
            udp(call.callee_ip, 5060, call.caller_ip, 5060, ok),
        ]
    invite = sip(
        f"INVITE sip:{call.callee}@{call.callee_ip} SIP/2.0",
        via + ends + caller_contact + ["CSeq: 1 INVITE"],
        sdp(call.caller_ip, 16384),
    )
    ends[1] += ";tag=e"
    ok = sip(
        "SIP/2.0 200 OK",
        via + ends + callee_contact + ["CSeq: 1 INVITE"],
        sdp(call.callee_ip, 20000),
    )
    ack = sip(f"ACK sip:{call.callee}@{call.callee_ip} SIP/2.0", via + ends + ["CSeq: 1 ACK"])
    return [udp(call.caller_ip, 5060, call.callee_ip, 5060, invite),
            udp(call.callee_ip, 5060, call.caller_ip, 5060, ok),
            udp(call.caller_ip, 5060, call.callee_ip, 5060, ack)]  # fmt: skip


def media(call: DemoCall, start: float) -> Iterator[tuple[float, bytes]]:
    """Both directions' RTP, 20 ms apart, with the caller's DTMF as RFC 4733 events."""
    caller_audio = tune(call.caller_notes, call.seconds)
    callee_audio = tune(call.callee_notes, call.seconds)
    dtmf = dtmf_packets(call.digits)
    for tick in range(int(call.seconds / PTIME)):
        at, timestamp = start + tick * PTIME, tick * SAMPLES
        chunk = slice(tick * SAMPLES, (tick + 1) * SAMPLES)
        if tick in dtmf:
            payload, event_timestamp, marker = dtmf[tick]
            packet = rtp(tick, event_timestamp, 0x1000, payload, 101 | marker)
        else:
            packet = rtp(tick, timestamp, 0x1000, caller_audio[chunk])
        yield at, udp(call.caller_ip, 16384, call.callee_ip, 20000, packet)
        back = rtp(tick, timestamp, 0x2000, callee_audio[chunk])
        yield at + 0.005, udp(call.callee_ip, 20000, call.caller_ip, 16384, back)


def dtmf_packets(digits: str) -> dict[int, tuple[bytes, int, int]]:
    """RFC 4733 events: each digit lasts 6 packets (120 ms), starting at 2 s, 1 s apart;
    the last packet of each carries the end bit."""
    events = {}
    for index, digit in enumerate(digits):
        first = 100 + 50 * index
        for step in range(6):
            payload = telephone_event(int(digit), (step + 1) * SAMPLES, end=step == 5)
            events[first + step] = (payload, first * SAMPLES, 0x80 if step == 0 else 0)
    return events


def frames(now: float) -> list[tuple[float, bytes]]:
    found = []
    for call in calls(now):
        found += [
            (call.start + 0.01 * index, frame)
            for index, frame in enumerate(signalling(call, "invite"))
        ]
        found += list(media(call, call.start + 0.1))
        end = call.start + 0.2 + call.seconds
        found += [
            (end + 0.01 * index, frame) for index, frame in enumerate(signalling(call, "bye"))
        ]
    return sorted(found, key=lambda pair: pair[0])


def write_demo_capture(path: Path, now: float) -> int:
    return write_pcap(path, frames(now))
