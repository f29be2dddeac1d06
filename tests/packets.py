"""Test traffic with known ground truth, written by dpkt: frames, fragments, TCP streams,
and pcap files of them. A third party writes these on purpose: the capture layers are tested
against bytes that QMS's own writer (recorder/capture/synthesis.py, where RTP comes from)
did not make, so a misreading shared by QMS's writer and its parser still shows."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from pathlib import Path

import dpkt

MAC_A = b"\x00\x11\x22\x33\x44\x55"
MAC_B = b"\x00\x11\x22\x33\x44\xaa"


def ip4(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, address)


def ip6(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, address)


def udp4(src: str, sport: int, dst: str, dport: int, payload: bytes, ident: int = 1) -> dpkt.ip.IP:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    datagram.ulen = len(datagram)
    packet = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=dpkt.ip.IP_PROTO_UDP, id=ident, data=datagram)
    packet.len = len(packet)
    return packet


def tcp4(
    src: str, sport: int, dst: str, dport: int, seq: int, payload: bytes = b"", flags: int = 0x18
) -> dpkt.ip.IP:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=payload)
    packet = dpkt.ip.IP(src=ip4(src), dst=ip4(dst), p=dpkt.ip.IP_PROTO_TCP, data=segment)
    packet.len = len(packet)
    return packet


def udp6(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    datagram.ulen = len(datagram)
    header = struct.pack("!IHBB", 6 << 28, len(datagram), dpkt.ip.IP_PROTO_UDP, 64)
    return header + ip6(src) + ip6(dst) + bytes(datagram)


def ethernet(ip_packet: bytes | dpkt.Packet, ethertype: int | None = None) -> bytes:
    raw = bytes(ip_packet)
    if ethertype is None:
        ethertype = 0x86DD if raw[0] >> 4 == 6 else 0x0800
    return MAC_B + MAC_A + struct.pack("!H", ethertype) + raw


def vlan(ip_packet: bytes | dpkt.Packet, *tags: int) -> bytes:
    raw = bytes(ip_packet)
    inner = 0x86DD if raw[0] >> 4 == 6 else 0x0800
    frame = MAC_B + MAC_A
    types = [0x88A8] * (len(tags) - 1) + [0x8100]
    for tpid, tag in zip(types, tags, strict=True):
        frame += struct.pack("!HH", tpid, tag)
    return frame + struct.pack("!H", inner) + raw


def fragments4(packet: dpkt.ip.IP, size: int) -> list[bytes]:
    """Split an IPv4 packet into fragments whose payloads are `size` bytes (a multiple of 8)."""
    payload = bytes(packet.data)
    pieces = []
    for offset in range(0, len(payload), size):
        piece = payload[offset : offset + size]
        more = 0x2000 if offset + size < len(payload) else 0
        # RFC 791: flags (MF = 0x2000) and the offset in 8-byte units share one word.
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(piece),
            packet.id,
            more | offset // 8,
            64,
            packet.p,
            0,
            packet.src,
            packet.dst,
        )
        pieces.append(header + piece)
    return pieces


def fragments6(packet: bytes, size: int, ident: int = 1) -> list[bytes]:
    """Split an IPv6 packet (its header, then the upper layer: no extension headers) into
    fragments whose payloads are `size` bytes (a multiple of 8), each with a Fragment
    header (RFC 8200 section 4.5: next header 44)."""
    header, payload = packet[:40], packet[40:]
    next_header = header[6]
    pieces = []
    for offset in range(0, len(payload), size):
        piece = payload[offset : offset + size]
        more = 1 if offset + size < len(payload) else 0
        fragment = struct.pack("!BBHI", next_header, 0, offset | more, ident)
        fixed = header[:4] + struct.pack("!HBB", 8 + len(piece), 44, header[7]) + header[8:40]
        pieces.append(fixed + fragment + piece)
    return pieces


def write_pcap(path: Path, frames: Iterable[tuple[float, bytes]], linktype: int = 1) -> Path:
    with open(path, "wb") as capture:
        writer = dpkt.pcap.Writer(capture, linktype=linktype)
        for timestamp, frame in frames:
            writer.writepkt(frame, ts=timestamp)
    return path
