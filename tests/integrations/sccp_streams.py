"""Test helper: the Skinny TCP payloads of a capture file, per direction, in sequence order.

Good enough for the small public captures (no reordering or loss to speak of); the real TCP
reassembly lives in recorder/. Reads the files in place with dpkt.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dpkt

from integrations.observations import Endpoint
from integrations.sccp.framing import SccpFrame, SccpStreamFramer

SKINNY_PORT = 2000


@dataclass(frozen=True)
class SkinnySegment:
    """One TCP segment of a Skinny session: its payload, or a FIN/RST (`closing`)."""

    at: datetime
    phone: Endpoint
    cm: Endpoint
    from_phone: bool
    payload: bytes
    closing: bool = False


def _packets(path: Path) -> Iterator[tuple[float, bytes]]:
    with path.open("rb") as handle:
        try:
            reader = dpkt.pcapng.Reader(handle)
        except ValueError:
            handle.seek(0)
            reader = dpkt.pcap.Reader(handle)
        yield from reader


def _address(raw: bytes) -> str:
    family = socket.AF_INET6 if len(raw) == 16 else socket.AF_INET
    return socket.inet_ntop(family, raw)


def skinny_segments(path: Path) -> list[SkinnySegment]:
    """Every TCP segment to or from port 2000, payloads deduplicated by sequence number."""
    segments: list[SkinnySegment] = []
    next_seq: dict[tuple[Endpoint, Endpoint, bool], int] = {}
    for timestamp, frame in _packets(path):
        ip = dpkt.ethernet.Ethernet(frame).data
        tcp = getattr(ip, "data", None)
        if not isinstance(tcp, dpkt.tcp.TCP) or SKINNY_PORT not in (tcp.sport, tcp.dport):
            continue
        source = Endpoint(_address(ip.src), tcp.sport)
        destination = Endpoint(_address(ip.dst), tcp.dport)
        from_phone = tcp.dport == SKINNY_PORT
        phone, cm = (source, destination) if from_phone else (destination, source)
        at = datetime.fromtimestamp(timestamp, UTC)
        payload = bytes(tcp.data)
        key = (phone, cm, from_phone)
        if payload and next_seq.get(key, tcp.seq) > tcp.seq:
            continue  # a retransmission of bytes already delivered
        if payload:
            next_seq[key] = tcp.seq + len(payload)
            segments.append(SkinnySegment(at, phone, cm, from_phone, payload))
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            segments.append(SkinnySegment(at, phone, cm, from_phone, b"", closing=True))
    return segments


def direction_bytes(path: Path, phone: Endpoint, from_phone: bool) -> bytes:
    """All payload bytes of one direction of one session, concatenated in order."""
    return b"".join(
        segment.payload
        for segment in skinny_segments(path)
        if segment.phone == phone and segment.from_phone == from_phone
    )


def skinny_frames(path: Path) -> list[tuple[Endpoint, bool, SccpFrame]]:
    """Every Skinny message of a capture: (phone endpoint, from_phone, frame), in order."""
    framers: dict[tuple[Endpoint, bool], SccpStreamFramer] = {}
    frames: list[tuple[Endpoint, bool, SccpFrame]] = []
    for segment in skinny_segments(path):
        framer = framers.setdefault((segment.phone, segment.from_phone), SccpStreamFramer())
        for frame in framer.feed(segment.payload):
            frames.append((segment.phone, segment.from_phone, frame))
    return frames


def first_frame(path: Path, message_id: int) -> SccpFrame:
    return next(frame for _, _, frame in skinny_frames(path) if frame.message_id == message_id)
