"""Packets written from scratch: Ethernet/IPv4 frames, SIP, SDP, RTP, RFC 4733 events,
Skinny messages, and classic pcap files.

The project's own traffic (the demo capture, the traffic generator in traffic.py, the tests'
packets) is built here so its ground truth is known exactly; nothing third-party is copied to
make it. The one place that writes these bytes: a test that needs a packet builds it here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

# Classic pcap (libpcap format): magic, version 2.4, no time zone, snap length, Ethernet.
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
RECORD = struct.Struct("<IIII")
ETHERNET_HEADER = b"\x00\x11\x22\x33\x44\xaa\x00\x11\x22\x33\x44\x55\x08\x00"
ETHERNET_IPV6_HEADER = ETHERNET_HEADER[:12] + b"\x86\xdd"


def ip_bytes(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def checksum(header: bytes) -> int:
    """The Internet checksum (RFC 1071) of an even-length header."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    """An Ethernet frame with an IPv4 packet (no options, DF set) around `payload`."""
    return ipv4_frame(ip_bytes(src), ip_bytes(dst), proto, payload)


def ipv4_frame(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    """ipv4() for addresses already packed (4 bytes each), as a HEP agent sends them."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return ETHERNET_HEADER + header + payload


def ipv6_frame(src: bytes, dst: bytes, next_header: int, payload: bytes) -> bytes:
    """An Ethernet frame with an IPv6 packet (RFC 8200 section 3: no extension headers,
    hop limit 64) around `payload`; the addresses packed, 16 bytes each."""
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64, src, dst)
    return ETHERNET_IPV6_HEADER + header + payload


def udp_segment(sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header (RFC 768) and its payload; checksum 0, which a receiver takes as none."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp_segment(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    """A TCP header (RFC 9293 section 3.1: no options, PSH and ACK) and its payload."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0)
    return header + payload


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    return ipv4(src, dst, 17, udp_segment(sport, dport, payload))


def tcp(src: str, sport: int, dst: str, dport: int, seq: int, payload: bytes) -> bytes:
    return ipv4(src, dst, 6, tcp_segment(sport, dport, seq, payload))


def sdp(ip: str, port: int) -> str:
    """An SDP body (RFC 4566) receiving G.711 µ-law and telephone-events at ip:port."""
    return (
        f"v=0\r\no=qms 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )


def sip(start_line: str, headers: list[str], body: str = "") -> bytes:
    """A SIP message (RFC 3261 §7) with its Content-Length."""
    extra = ["Content-Type: application/sdp"] if body else []
    lines = [start_line, *headers, *extra, f"Content-Length: {len(body.encode())}", "", ""]
    return ("\r\n".join(lines) + body).encode()


def rtp(
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    payload_type: int = 0,
    *,
    marker: bool = False,
) -> bytes:
    """An RTP packet (RFC 3550 §5.1): version 2, no padding, extension or CSRC. Sequence
    number and timestamp wrap as on the wire (modulo 2^16 and 2^32)."""
    second = (0x80 if marker else 0) | payload_type
    return (
        struct.pack("!BBHII", 0x80, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        + payload
    )


def telephone_event(event: int, duration: int, *, end: bool = False, volume: int = 10) -> bytes:
    """An RFC 4733 §2.3 telephone-event payload: event, E|R|volume, duration."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def skinny(message_id: int, payload: bytes = b"", version: int = 0) -> bytes:
    """A whole SCCP (Skinny) message: length (message id + payload), header version (0 is
    basic), message id, all u32 little-endian, then the payload."""
    return struct.pack("<III", len(payload) + 4, version, message_id) + payload


def fixed(text: str, size: int) -> bytes:
    """A Skinny fixed-size text field: the text, NUL-padded to `size` bytes."""
    return text.encode().ljust(size, b"\x00")


def write_pcap(path: Path, frames: Iterable[tuple[float, bytes]]) -> int:
    """Write (timestamp, frame) pairs as a classic pcap file; return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "wb") as capture:
        capture.write(PCAP_HEADER)
        for at, frame in frames:
            capture.write(pcap_record(at, frame))
            count += 1
    return count


def pcap_record(at: float, frame: bytes) -> bytes:
    """One classic pcap record (microseconds, the frame whole), as a file or a pipe holds it."""
    seconds = int(at)
    return RECORD.pack(seconds, int((at - seconds) * 1e6), len(frame), len(frame)) + frame
