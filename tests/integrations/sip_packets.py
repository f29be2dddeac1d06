"""Pull SIP payloads out of the public captures for the SIP decoder tests (dpkt, read in place).

This is a test helper, not the capture layer: Ethernet (with 802.1Q) and Linux SLL, IPv4 and
IPv6, UDP datagrams and simple in-order TCP streams, nothing more.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dpkt

from integrations.observations import Endpoint, Observation
from integrations.sip.framing import SipStreamFramer
from integrations.sip.message import looks_like_sip
from integrations.sip.tracker import SipTracker


@dataclass(frozen=True)
class Segment:
    at: datetime
    src: Endpoint
    dst: Endpoint
    transport: str
    payload: bytes
    seq: int = 0


def read_segments(path: Path) -> Iterator[Segment]:
    with path.open("rb") as capture:
        reader = (
            dpkt.pcapng.Reader(capture) if path.suffix == ".pcapng" else dpkt.pcap.Reader(capture)
        )
        link = reader.datalink()
        for timestamp, frame in reader:
            segment = decode_frame(link, timestamp, frame)
            if segment is not None:
                yield segment


def decode_frame(link: int, timestamp: float, frame: bytes) -> Segment | None:
    try:
        packet = dpkt.sll.SLL(frame).data if link == 113 else dpkt.ethernet.Ethernet(frame).data
    except (dpkt.UnpackError, IndexError):
        return None
    if not isinstance(packet, dpkt.ip.IP | dpkt.ip6.IP6):
        return None
    layer4 = packet.data
    if not isinstance(layer4, dpkt.udp.UDP | dpkt.tcp.TCP):
        return None
    family = socket.AF_INET6 if isinstance(packet, dpkt.ip6.IP6) else socket.AF_INET
    return Segment(
        at=datetime.fromtimestamp(timestamp, UTC),
        src=Endpoint(socket.inet_ntop(family, packet.src), layer4.sport),
        dst=Endpoint(socket.inet_ntop(family, packet.dst), layer4.dport),
        transport="udp" if isinstance(layer4, dpkt.udp.UDP) else "tcp",
        payload=bytes(layer4.data),
        seq=getattr(layer4, "seq", 0),
    )


def sip_datagrams(path: Path) -> list[Segment]:
    """UDP payloads that start with a SIP start line, in capture order."""
    return [s for s in read_segments(path) if s.transport == "udp" and looks_like_sip(s.payload)]


def track(path: Path, tracker: SipTracker | None = None) -> list[Observation]:
    """Every observation the tracker makes from a capture's SIP over UDP and TCP, fed in
    capture order."""
    tracker = tracker or SipTracker()
    messages = [(s, s.payload) for s in sip_datagrams(path)] + tcp_messages(path)
    messages.sort(key=lambda pair: pair[0].at)
    observations: list[Observation] = []
    for segment, message in messages:
        observations += tracker.feed(
            message, segment.src, segment.dst, segment.at, segment.transport
        )
    return observations


def tcp_streams(path: Path) -> dict[tuple[Endpoint, Endpoint], list[Segment]]:
    """Each TCP direction's segments with payload, retransmissions (a sequence number
    already delivered) left out. Enough for the simple in-order public captures."""
    streams: dict[tuple[Endpoint, Endpoint], list[Segment]] = {}
    next_seq: dict[tuple[Endpoint, Endpoint], int] = {}
    for segment in read_segments(path):
        key = (segment.src, segment.dst)
        if segment.transport != "tcp" or not segment.payload:
            continue
        if key in next_seq and segment.seq != next_seq[key]:
            continue
        next_seq[key] = (segment.seq + len(segment.payload)) & 0xFFFFFFFF
        streams.setdefault(key, []).append(segment)
    return streams


def tcp_messages(path: Path) -> list[tuple[Segment, bytes]]:
    """SIP messages the framer cuts from every TCP direction, with the segment that ended each."""
    framed: list[tuple[Segment, bytes]] = []
    for segments in tcp_streams(path).values():
        framer = SipStreamFramer()
        for segment in segments:
            framed += [(segment, message) for message in framer.feed(segment.payload)]
    framed.sort(key=lambda pair: pair[0].at)
    return framed
