"""Synthetic traffic: N concurrent calls with G.711 RTP, in time order, with known truth.

Each call's phone (10.1.x.y) first announces itself (SIP REGISTER and 200 OK, or an SCCP
station session: Register, LineStat), then places or takes a call with a gateway
(10.2.x.y): INVITE/200/ACK with SDP, or SCCP CallState/CallInfo/OpenReceiveChannel(Ack)/
StartMediaTransmission. Then both directions send 20 ms G.711 µ-law RTP for the given
seconds, and the calls end (BYE, or CallState OnHook). Packets come from templates patched
in place, so a million packets take seconds, not minutes.

bench/traffic.py writes it to a pcap file for the benchmarks; the tests build their captures
from it. The bytes are part of the benchmarks' baseline: change them and the figures in
bench/RESULTS.md no longer compare.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recorder.capture.synthesis import fixed, ip_bytes, sdp, sip, skinny, tcp, udp, write_pcap

START = 1_700_000_000.0
PTIME = 0.020
SAMPLES = 160
SCCP_PORT = 2000
CM_IP = "10.3.0.1"
REGISTRAR_IP = "10.3.0.2"


@dataclass
class Call:
    """One generated call: the phone that announces itself, and the gateway it talks to."""

    index: int
    phone_ip: str
    gateway_ip: str
    extension: str
    phone_rtp: int
    gateway_rtp: int


def make_calls(count: int) -> list[Call]:
    return [make_call(index) for index in range(count)]


def make_call(index: int) -> Call:
    high, low = divmod(index, 250)
    return Call(
        index=index,
        phone_ip=f"10.1.{high}.{low + 1}",
        gateway_ip=f"10.2.{high}.{low + 1}",
        extension=str(20000 + index),
        phone_rtp=16384 + 2 * (index % 1000),
        gateway_rtp=30000 + 2 * (index % 1000),
    )


# -- SIP ---------------------------------------------------------------------------------


def sip_signalling(call: Call, phase: str) -> list[bytes]:
    """REGISTER/200 at the start ("register"), INVITE/200/ACK after ("invite"), BYE/200 at
    the end ("bye")."""
    return SIP_PHASES[phase](call)


def dialog_headers(call: Call) -> list[str]:
    """From, Call-ID and the phone's Contact, shared by the phone's requests."""
    return [
        f"From: <sip:{call.extension}@pbx.example>;tag=a{call.index}",
        f"Call-ID: bench-{call.index}@{call.phone_ip}",
        f"Contact: <sip:{call.extension}@{call.phone_ip}:5060>",
    ]


def sip_register(call: Call) -> list[bytes]:
    """The phone's REGISTER to the registrar (RFC 3261 §10) and its 200 OK."""
    phone, ext, common = call.phone_ip, call.extension, dialog_headers(call)
    via = [f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bKr{call.index}"]
    to = [f"To: <sip:{ext}@pbx.example>"]
    request = sip(
        "REGISTER sip:pbx.example SIP/2.0",
        via + to + common + ["CSeq: 1 REGISTER", "Expires: 3600"],
    )
    granted = [f"Contact: <sip:{ext}@{phone}:5060>;expires=3600"]
    response = sip("SIP/2.0 200 OK", via + to + common[:2] + ["CSeq: 1 REGISTER", *granted])
    return [
        udp(phone, 5060, REGISTRAR_IP, 5060, request),
        udp(REGISTRAR_IP, 5060, phone, 5060, response),
    ]


def sip_invite(call: Call) -> list[bytes]:
    """The phone's INVITE with its SDP offer, the gateway's 200 OK with the answer, the ACK."""
    phone, gateway, common = call.phone_ip, call.gateway_ip, dialog_headers(call)
    via = [f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bKi{call.index}invite"]
    to = [f"To: <sip:+1555{call.index:07d}@{gateway}>"]
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


def sip_bye(call: Call) -> list[bytes]:
    """The phone's BYE and the gateway's 200 OK."""
    phone, gateway, common = call.phone_ip, call.gateway_ip, dialog_headers(call)
    via = [f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bKi{call.index}bye"]
    to = [f"To: <sip:+1555{call.index:07d}@{gateway}>;tag=g"]
    bye = sip(f"BYE sip:{gateway}:5060 SIP/2.0", via + to + common + ["CSeq: 2 BYE"])
    ok = sip("SIP/2.0 200 OK", via + to + common[:2] + ["CSeq: 2 BYE"])
    return [udp(phone, 5060, gateway, 5060, bye), udp(gateway, 5060, phone, 5060, ok)]


SIP_PHASES: dict[str, Callable[[Call], list[bytes]]] = {
    "register": sip_register,
    "invite": sip_invite,
    "bye": sip_bye,
}


# -- SCCP --------------------------------------------------------------------------------


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
        """RegisterMessage, RegisterAckMessage, LineStatReqMessage, LineStatMessage."""
        call = self.call
        register = skinny(
            0x0001,
            fixed(self.device, 16)
            + struct.pack("<II4sIIIBBHI", 0, 1, ip_bytes(call.phone_ip), 30007, 5, 0, 7, 0, 0, 0),
        )
        line_stat = skinny(
            0x0092,
            struct.pack("<I", 1)
            + fixed(call.extension, 24)
            + fixed(call.extension, 40)
            + fixed(call.extension, 40)
            + b"\0" * 4,
        )
        return [
            self.frame(True, register),
            self.frame(False, skinny(0x0081, b"\0" * 20)),
            self.frame(True, skinny(0x000B, struct.pack("<I", 1))),
            self.frame(False, line_stat),
        ]

    def connect(self) -> list[bytes]:
        """CallState RingIn with CallInfo, OffHook, OpenReceiveChannel, CallState Connected,
        StartMediaTransmission, and the phone's OpenReceiveChannelAck."""
        call, ref, party = self.call, 0x01000000 + self.call.index, 0x02000000 + self.call.index
        state = skinny(0x0111, struct.pack("<IIIIII", 4, 1, ref, 0, 0, 0))
        info = skinny(
            0x008F,
            fixed("Gateway", 40)
            + fixed(f"+1555{call.index:07d}", 24)
            + fixed("", 40)
            + fixed(call.extension, 24)
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
        """CallState OnHook."""
        ref = 0x01000000 + self.call.index
        return [self.frame(False, skinny(0x0111, struct.pack("<IIIIII", 2, 1, ref, 0, 0, 0)))]


# -- the capture ---------------------------------------------------------------------------


def rtp_templates(call: Call) -> tuple[bytearray, bytearray]:
    """One frame per direction of 20 ms of µ-law silence, its RTP header to be patched."""
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
    """(time, frame) of the whole capture: every announcement, every call set-up, the media,
    every hang-up."""
    sessions = [SccpSession(call) for call in calls] if use_sccp else []
    clock = START
    for index, call in enumerate(calls):
        for frame in sessions[index].register() if use_sccp else sip_register(call):
            clock += 0.0001
            yield clock, frame
    for index, call in enumerate(calls):
        for frame in sessions[index].connect() if use_sccp else sip_invite(call):
            clock += 0.0001
            yield clock, frame
    yield from media(calls, seconds, clock)
    clock += seconds + 0.1
    for index, call in enumerate(calls):
        for frame in sessions[index].hang_up() if use_sccp else sip_bye(call):
            clock += 0.0001
            yield clock, frame


def media(calls: list[Call], seconds: float, start: float) -> Iterator[tuple[float, bytes]]:
    """Both directions of every call, every 20 ms, the calls spread evenly over each 20 ms."""
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
    """Write the capture as a classic pcap file; return how many packets."""
    return write_pcap(path, frames)
