"""HEP packets built for the tests, from the HEP3 Network Protocol Specification (sipcapture/
HEP) and the HEPv2 layout, written here independently of recorder/capture/hep.py so that the
decoder is checked against the specification, not against itself.

    HEPv3: "HEP3", total length (16 bits), then chunks:
           vendor id (16) | type id (16) | length (16, header included) | value
    HEPv2: version, header length, family, protocol (8 bits each), ports (16 each),
           addresses, then seconds, microseconds (32 each) and capture id (16), little-endian,
           padded to 12 bytes; then the payload.
"""

from __future__ import annotations

import socket
import struct

AF_INET, AF_INET6 = 2, 10
SIP, RTP = 1, 4


def chunk(type_id: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, type_id, 6 + len(value)) + value


def hep3(chunks: list[bytes]) -> bytes:
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def hep3_chunks(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    payload: bytes,
    at: float,
    capture_id: int = 2001,
    protocol_type: int = SIP,
    ip_protocol: int = 17,
    auth_key: bytes | None = None,
) -> list[bytes]:
    """The chunks heplify sends for one packet, in its order: family and protocol, the
    addresses and ports, the time, the protocol type, the capture id, the key, the payload."""
    six = ":" in src
    family = AF_INET6 if six else AF_INET
    packed = socket.AF_INET6 if six else socket.AF_INET
    address_types = (0x0005, 0x0006) if six else (0x0003, 0x0004)
    seconds = int(at)
    chunks = [
        chunk(0x0001, bytes([family])),
        chunk(0x0002, bytes([ip_protocol])),
        chunk(address_types[0], socket.inet_pton(packed, src)),
        chunk(address_types[1], socket.inet_pton(packed, dst)),
        chunk(0x0007, struct.pack("!H", sport)),
        chunk(0x0008, struct.pack("!H", dport)),
        chunk(0x0009, struct.pack("!I", seconds)),
        chunk(0x000A, struct.pack("!I", round((at - seconds) * 1e6))),
        chunk(0x000B, bytes([protocol_type])),
        chunk(0x000C, struct.pack("!I", capture_id)),
    ]
    if auth_key is not None:
        chunks.append(chunk(0x000E, auth_key))
    chunks.append(chunk(0x000F, payload))
    return chunks


def hep3_packet(*args, **kwargs) -> bytes:
    return hep3(hep3_chunks(*args, **kwargs))


def hep2_packet(
    src: str, sport: int, dst: str, dport: int, payload: bytes, at: float,
    capture_id: int = 7, version: int = 2,
) -> bytes:  # fmt: skip
    """HEPv2 (or v1, without its time header) of an IPv4 UDP packet."""
    header = struct.pack("!BBBBHH", version, 16, AF_INET, 17, sport, dport)
    addresses = socket.inet_aton(src) + socket.inet_aton(dst)
    seconds = int(at)
    timing = struct.pack("<IIH2x", seconds, round((at - seconds) * 1e6), capture_id)
    return header + addresses + (timing if version == 2 else b"") + payload


def udp_parts(frame: bytes) -> tuple[str, int, str, int, bytes]:
    """An Ethernet/IPv4 (no options)/UDP frame of recorder.capture.synthesis as the agent
    saw it: source, source port, destination, destination port, payload."""
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    sport, dport = struct.unpack_from("!HH", frame, 34)
    return src, sport, dst, dport, frame[42:]


def hep3_of_frame(at: float, frame: bytes, capture_id: int = 2001, **kwargs) -> bytes:
    """HEPv3 of a synthesis frame: SIP or RTP by its first byte (RFC 3550 version 2)."""
    src, sport, dst, dport, payload = udp_parts(frame)
    kind = RTP if payload[:1] and payload[0] >> 6 == 2 else SIP
    return hep3_packet(
        src, sport, dst, dport, payload, at, capture_id, protocol_type=kind, **kwargs
    )


def hep2_of_frame(at: float, frame: bytes, capture_id: int = 7, version: int = 2) -> bytes:
    src, sport, dst, dport, payload = udp_parts(frame)
    return hep2_packet(src, sport, dst, dport, payload, at, capture_id, version)
