"""Traffic generator: N concurrent calls with G.711 RTP, as a pcap with known truth.

    python bench/traffic.py --calls 1000 --seconds 10 --out var/bench/sip-1000.pcap
    python bench/traffic.py --calls 1000 --seconds 10 --sccp --out var/bench/sccp-1000.pcap

Each call's phone (10.1.x.y) first announces itself (SIP REGISTER and 200 OK, or an SCCP
station session: Register, LineStat), then places or takes a call with a gateway
(10.2.x.y): INVITE/200/ACK with SDP, or SCCP CallState/CallInfo/OpenReceiveChannel(Ack)/
StartMediaTransmission. Then both directions send 20 ms G.711 µ-law RTP for the given
seconds, and the calls end (BYE, or CallState OnHook). Packets are written in time order
from templates patched in place, so a million packets take seconds, not minutes.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/traffic.py

from recorder.capture.synthesis import (  # noqa: F401 (PCAP_HEADER, RECORD re-exported)
    PCAP_HEADER,
    RECORD,
    ip_bytes,
    sdp,
    sip,
    tcp,
    udp,
    write_pcap,
)

START = 1_700_000_000.0
PTIME = 0.020
SAMPLES = 160
SCCP_PORT = 2000
CM_IP = "10.3.0.1"
REGISTRAR_IP = "10.3.0.2"


@dataclass
class Call:
    index: int
    phone_ip: str
    gateway_ip: str
    extension: str
    phone_rtp: int
    gateway_rtp: int


def make_calls(count: int) -> list[Call]:
    calls = []
    for index in range(count):
        high, low = divmod(index, 250)
        calls.append(
            Call(
                index=index,
                phone_ip=f"10.1.{high}.{low + 1}",
                gateway_ip=f"10.2.{high}.{low + 1}",
                extension=str(20000 + index),
                phone_rtp=16384 + 2 * (index % 1000),
                gateway_rtp=30000 + 2 * (index % 1000),
            )
        )
    return calls


def sip_signalling(call: Call, phase: str) -> list[bytes]:
    """REGISTER/200 at the start, INVITE/200/ACK after, BYE/200 at the end."""
    phone, gateway, ext = call.phone_ip, call.gateway_ip, call.extension
    call_id = f"bench-{call.index}@{phone}"
    common = [
        f"From: <sip:{ext}@pbx.example>;tag=a{call.index}",
        f"Call-ID: {call_id}",
        f"Contact: <sip:{ext}@{phone}:5060>",
    ]
    if phase == "register":
        via = [f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bKr{call.index}"]
        to = [f"To: <sip:{ext}@pbx.example>"]
        request = sip(
            "REGISTER sip:pbx.example SIP/2.0",
            via + to + common + ["CSeq: 1 REGISTER", "Expires: 3600"],
        )
        response = sip(
            "SIP/2.0 200 OK",
            via
            + to
            + common[:2]
            + ["CSeq: 1 REGISTER", f"Contact: <sip:{ext}@{phone}:5060>;expires=3600"],
        )
        return [
            udp(phone, 5060, REGISTRAR_IP, 5060, request),
            udp(REGISTRAR_IP, 5060, phone, 5060, response),
        ]
    via = [f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bKi{call.index}{phase}"]
    to = [f"To: <sip:+1555{call.index:07d}@{gateway}>" + (";tag=g" if phase != "invite" else "")]
    if phase == "invite":
        invite = sip(
            f"INVITE sip:+1555{call.index:07d}@{gateway} SIP/2.0",
            via + to + common + ["CSeq: 1 INVITE"],
            sdp(phone, call.phone_rtp),
        )
        to = [to[0] + ";tag=g"]
        ok = sip(
            "SIP/2.0 200 OK",
            via + to + common[:2] + [f"Contact: <sip:{gateway}:5060>", "CSeq: 1 INVITE"],
            sdp(gateway, call.gateway_rtp),
        )
        ack = sip(f"ACK sip:{gateway}:5060 SIP/2.0", via + to + common + ["CSeq: 1 ACK"])
        return [
            udp(phone, 5060, gateway, 5060, invite),
            udp(gateway, 5060, phone, 5060, ok),
            udp(phone, 5060, gateway, 5060, ack),
        ]
    bye = sip(f"BYE sip:{gateway}:5060 SIP/2.0", via + to + common + ["CSeq: 2 BYE"])
    ok = sip("SIP/2.0 200 OK", via + to + common[:2] + ["CSeq: 2 BYE"])
    return [udp(phone, 5060, gateway, 5060, bye), udp(gateway, 5060, phone, 5060, ok)]


def skinny(message_id: int, payload: bytes) -> bytes:
    # SCCP header: length (payload + 4), header version (0 = basic), message id; all u32 LE.
    return struct.pack("<III", len(payload) + 4, 0, message_id) + payload


def text(value: str, size: int) -> bytes:
    return value.encode().ljust(size, b"\x00")


class SccpSession:
    """The TCP byte streams of one phone's station session, with their sequence numbers."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.device = f"SEP0000{call.index:08X}"
        self.port = 50000 + call.index % 10000
        self.seq = {True: 1000, False: 9000}

    def frame(self, from_phone: bool, *messages: bytes) -> bytes:
        payload = b"".join(messages)
        seq = self.seq[from_phone]
        self.seq[from_phone] += len(payload)
        if from_phone:
            return tcp(self.call.phone_ip, self.port, CM_IP, SCCP_PORT, seq, payload)
        return tcp(CM_IP, SCCP_PORT, self.call.phone_ip, self.port, seq, payload)

    def register(self) -> list[bytes]:
        call = self.call
        register = skinny(
            0x0001,
            text(self.device, 16)
            + struct.pack("<II4sIIIBBHI", 0, 1, ip_bytes(call.phone_ip), 30007, 5, 0, 7, 0, 0, 0),
        )
        line_stat = skinny(
            0x0092,
            struct.pack("<I", 1)
            + text(call.extension, 24)
            + text(call.extension, 40)
            + text(call.extension, 40)
            + b"\0" * 4,
        )
        return [
            self.frame(True, register),
            self.frame(False, skinny(0x0081, b"\0" * 20)),
            self.frame(True, skinny(0x000B, struct.pack("<I", 1))),
            self.frame(False, line_stat),
        ]

    def connect(self) -> list[bytes]:
        call, ref, party = self.call, 0x01000000 + self.call.index, 0x02000000 + self.call.index
        state = skinny(0x0111, struct.pack("<IIIIII", 4, 1, ref, 0, 0, 0))
        info = skinny(
            0x008F,
            text("Gateway", 40)
            + text(f"+1555{call.index:07d}", 24)
            + text("", 40)
            + text(call.extension, 24)
            + struct.pack("<III", 1, ref, 1)
            + b"\0" * 244,
        )
        orc = skinny(0x0105, struct.pack("<IIIIIII", ref, party, 20, 4, 0, 0, ref) + b"\0" * 40)
        connected = skinny(0x0111, struct.pack("<IIIIII", 5, 1, ref, 0, 0, 0))
        smt = skinny(
            0x008A,
            struct.pack("<II4sIII", ref, party, ip_bytes(call.gateway_ip), call.gateway_rtp, 20, 4)
            + b"\0" * 16
            + struct.pack("<I", ref)
            + b"\0" * 40,
        )
        ack = skinny(
            0x0022, struct.pack("<I4sIII", 0, ip_bytes(call.phone_ip), call.phone_rtp, party, ref)
        )
        return [
            self.frame(False, state, info),
            self.frame(True, skinny(0x0006, b"")),
            self.frame(False, orc, connected, smt),
            self.frame(True, ack),
        ]

    def hang_up(self) -> list[bytes]:
        ref = 0x01000000 + self.call.index
        return [self.frame(False, skinny(0x0111, struct.pack("<IIIIII", 2, 1, ref, 0, 0, 0)))]


def rtp_templates(call: Call) -> tuple[bytearray, bytearray]:
    payload = bytes([0xFF]) * SAMPLES
    header = struct.pack("!BBHII", 0x80, 0, 0, 0, 0)
    to_gateway = udp(
        call.phone_ip, call.phone_rtp, call.gateway_ip, call.gateway_rtp, header + payload
    )
    to_phone = udp(
        call.gateway_ip, call.gateway_rtp + 1000, call.phone_ip, call.phone_rtp, header + payload
    )
    return bytearray(to_gateway), bytearray(to_phone)


def packets(calls: list[Call], seconds: float, use_sccp: bool) -> Iterator[tuple[float, bytes]]:
    sessions = [SccpSession(call) for call in calls] if use_sccp else []
    clock = START
    for index, call in enumerate(calls):
        for frame in sessions[index].register() if use_sccp else sip_signalling(call, "register"):
            clock += 0.0001
            yield clock, frame
    for index, call in enumerate(calls):
        for frame in sessions[index].connect() if use_sccp else sip_signalling(call, "invite"):
            clock += 0.0001
            yield clock, frame
    yield from media(calls, seconds, clock)
    clock += seconds + 0.1
    for index, call in enumerate(calls):
        for frame in sessions[index].hang_up() if use_sccp else sip_signalling(call, "bye"):
            clock += 0.0001
            yield clock, frame


def media(calls: list[Call], seconds: float, start: float) -> Iterator[tuple[float, bytes]]:
    templates = [rtp_templates(call) for call in calls]
    spread = PTIME / max(len(calls), 1)
    for tick in range(int(seconds / PTIME)):
        for index, (to_gateway, to_phone) in enumerate(templates):
            at = start + tick * PTIME + index * spread
            for direction, template in enumerate((to_gateway, to_phone)):
                # RTP header at offset 42: sequence number, timestamp, SSRC (RFC 3550 §5.1).
                struct.pack_into(
                    "!HII", template, 44, tick & 0xFFFF, tick * SAMPLES, (index << 1) | direction
                )
                yield at, bytes(template)


def write(path: Path, frames: Iterator[tuple[float, bytes]]) -> int:
    return write_pcap(path, frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sccp", action="store_true", help="SCCP signalling instead of SIP")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    count = write(options.out, packets(make_calls(options.calls), options.seconds, options.sccp))
    print(f"{options.out}: {count} packets, {options.calls} calls, {options.seconds} s of RTP")


if __name__ == "__main__":
    main()
