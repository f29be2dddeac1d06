"""HEP, the HOMER Encapsulation Protocol: packets mirrored by remote agents, decoded here.

A HEP agent (heplify, captagent, an SBC such as Kamailio, OpenSIPS or FreeSWITCH) copies
the packets it sees and sends each one, with its addresses, ports and capture time, to a
collector over UDP. QMS is such a collector: each datagram is decoded here into the
packet the agent saw, rebuilt as an Ethernet/IPv4 (or IPv6) frame with its UDP or TCP
header, and fed to the same engine as a mirror port's (recorder/capture/hepsocket.py
listens; recorder/nodes/live.py feeds). Nothing here imports Django.

HEPv3 (the HEP3 Network Protocol Specification, sipcapture/HEP, "HEP-EEP") is a header
and a list of chunks, every number in network byte order:

    0       4       6
    +-------+-------+--------------------------------------------------+
    | HEP3  | total | chunk | chunk | ...                              |
    +-------+-------+--------------------------------------------------+
    chunk:  vendor id (2) | type id (2) | length (2, the 6 bytes included) | value

Generic chunks (vendor 0) that QMS reads: 0x0001 IP family (2 = IPv4, 10 = IPv6),
0x0002 IP protocol (17 UDP, 6 TCP), 0x0003/0x0004 IPv4 source/destination, 0x0005/0x0006
IPv6 source/destination, 0x0007/0x0008 source/destination port, 0x0009 seconds since the
epoch and 0x000a microseconds of the capture time, 0x000b protocol type (1 SIP, 4 RTP),
0x000c capture agent id (32 bits), 0x000e authentication key, 0x000f the packet's payload.

HEPv2 and HEPv1 (the older fixed layout, as Kamailio's sipcapture reads it) are an 8-byte
header (version, header length, family, protocol, source and destination port in network
byte order), the two addresses (4 bytes each for IPv4, 16 for IPv6), in HEPv2 a time
header of 12 bytes (seconds and microseconds as 32-bit numbers and the capture id as a
16-bit one, in the sender's byte order, little-endian on the agents' machines, padded to
12 by the C struct), then the payload. HEPv1 has no time header.

Every byte comes from whoever can reach the port: each length is checked against the
datagram before anything is read, and a datagram that fails a check is refused with the
kind of its fault (HepRefused.kind), counted by the engine; nothing here raises anything
else on any input.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
from collections import OrderedDict
from dataclasses import dataclass

from recorder.capture.synthesis import ipv4_frame, ipv6_frame, tcp_segment, udp_segment

HEP3_MAGIC = b"HEP3"
HEP3_HEADER = 6
CHUNK_HEADER = 6
# The generic chunk types QMS reads (HEP3 specification, "generic chunk types").
IP_FAMILY, IP_PROTOCOL = 0x0001, 0x0002
IPV4_SOURCE, IPV4_DESTINATION, IPV6_SOURCE, IPV6_DESTINATION = 0x0003, 0x0004, 0x0005, 0x0006
SOURCE_PORT, DESTINATION_PORT = 0x0007, 0x0008
SECONDS, MICROSECONDS = 0x0009, 0x000A
PROTOCOL_TYPE, CAPTURE_ID = 0x000B, 0x000C
KEEP_ALIVE, AUTH_KEY, PAYLOAD, COMPRESSED_PAYLOAD = 0x000D, 0x000E, 0x000F, 0x0010
# Defined by the specification and of no use to a recorder (a correlation id, a VLAN, MOS
# figures, tags, an agent's name...): skipped without a count. Any other generic type is
# counted as unknown, and skipped too; the packet around it is used.
LAST_DEFINED_CHUNK = 0x0025
# The sizes of the fixed-size chunks' values; the capture id was 16 bits in early HEP3
# agents and is 32 in the specification, both are read.
VALUE_SIZES = {
    IP_FAMILY: (1,),
    IP_PROTOCOL: (1,),
    IPV4_SOURCE: (4,),
    IPV4_DESTINATION: (4,),
    IPV6_SOURCE: (16,),
    IPV6_DESTINATION: (16,),
    SOURCE_PORT: (2,),
    DESTINATION_PORT: (2,),
    SECONDS: (4,),
    MICROSECONDS: (4,),
    PROTOCOL_TYPE: (1,),
    CAPTURE_ID: (2, 4),
}
# IP families as HEP writes them: Linux's AF_INET and AF_INET6.
AF_INET, AF_INET6 = 2, 10
ADDRESS_SIZE = {AF_INET: 4, AF_INET6: 16}
UDP, TCP = 17, 6
# HEP protocol types of packets a call is made of; the others (RTCP and QoS reports as
# JSON, logs, DNS, Diameter...) are not packets the engine reads, and are counted apart.
SIP_TYPE, RTP_TYPE = 0x01, 0x04
PACKET_TYPES = {SIP_TYPE, RTP_TYPE}
# HEPv2/v1: the fixed header, and HEPv2's time header as the C struct lays it out.
HEP2_HEADER = struct.Struct("!BBBBHH")
HEP2_TIME = struct.Struct("<IIH2x")
# The longest payload an IPv4 packet holds behind a 20-byte IP and an 8-byte UDP header.
MAX_PAYLOAD = 65535 - 28
# TCP connections whose sequence numbers are kept (see InnerTcp).
TCP_FLOWS_KEPT = 10_000

# The kinds a refused datagram is counted under.
SHORT = "hep-short"
BAD_LENGTH = "hep-bad-length"
BAD_CHUNK_LENGTH = "hep-bad-chunk-length"
UNKNOWN_VERSION = "hep-unknown-version"
BAD_FAMILY = "hep-bad-ip-family"
MISSING_CHUNK = "hep-missing-chunk"
NO_PAYLOAD = "hep-no-payload"
COMPRESSED = "hep-compressed-payload"
PAYLOAD_TOO_LONG = "hep-payload-too-long"
BAD_TIMESTAMP = "hep-bad-timestamp"
AUTH_REFUSED = "hep-auth-refused"
# Counted, and not errors: what an agent may well send a recorder has no use for.
NOT_UDP_OR_TCP = "hep-not-udp-or-tcp"
OTHER_PROTOCOL = "hep-other-protocol"
# Counted once per datagram that held one; the datagram itself is used.
UNKNOWN_CHUNK = "hep-unknown-chunk"
CLOCK_OFF = "hep-clock-off"
NOT_ERRORS = frozenset({NOT_UDP_OR_TCP, OTHER_PROTOCOL, UNKNOWN_CHUNK})


class HepRefused(Exception):
    """A datagram that is not a HEP packet QMS can use; `kind` is what is counted."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class HepPacket:
    """What one HEP datagram says the agent saw. Addresses are packed (4 or 16 bytes);
    `at` is None when the datagram carries no capture time (HEPv1, or no time chunks)."""

    version: int
    family: int
    protocol: int
    source: bytes
    source_port: int
    destination: bytes
    destination_port: int
    payload: bytes
    at: float | None = None
    capture_id: int | None = None
    protocol_type: int | None = None
    auth_key: bytes | None = None
    unknown_chunks: int = 0


def decode(datagram: bytes) -> HepPacket:
    """One datagram as HEP, any version; HepRefused when it is not one QMS can use."""
    if datagram[:4] == HEP3_MAGIC:
        return decode_hep3(datagram)
    if datagram[:1] in (b"\x01", b"\x02"):
        return decode_hep2(datagram)
    if len(datagram) < 4:
        raise HepRefused(SHORT)
    raise HepRefused(UNKNOWN_VERSION)


def decode_hep3(datagram: bytes) -> HepPacket:
    if len(datagram) < HEP3_HEADER:
        raise HepRefused(SHORT)
    total = struct.unpack_from("!H", datagram, 4)[0]
    # A datagram holds one HEP packet, whole: its length is the datagram's.
    if total != len(datagram):
        raise HepRefused(BAD_LENGTH)
    chunks, unknown = _chunks(datagram, total)
    return _packet_of(chunks, unknown)


def _chunks(datagram: bytes, total: int) -> tuple[dict[int, bytes], int]:
    """The generic chunks' values by type (a type sent twice: its last value), and how many
    chunks were of a type QMS does not know."""
    chunks: dict[int, bytes] = {}
    unknown, offset = 0, HEP3_HEADER
    while offset < total:
        if total - offset < CHUNK_HEADER:
            raise HepRefused(BAD_CHUNK_LENGTH)
        vendor, kind, length = struct.unpack_from("!HHH", datagram, offset)
        if length < CHUNK_HEADER or offset + length > total:
            raise HepRefused(BAD_CHUNK_LENGTH)
        value = datagram[offset + CHUNK_HEADER : offset + length]
        offset += length
        if vendor != 0 or kind == 0 or kind > LAST_DEFINED_CHUNK:
            unknown += 1
            continue
        if kind in VALUE_SIZES and len(value) not in VALUE_SIZES[kind]:
            raise HepRefused(BAD_CHUNK_LENGTH)
        chunks[kind] = value
    return chunks, unknown


def _packet_of(chunks: dict[int, bytes], unknown: int) -> HepPacket:
    payload = chunks.get(PAYLOAD)
    if payload is None:
        raise HepRefused(COMPRESSED if COMPRESSED_PAYLOAD in chunks else NO_PAYLOAD)
    family = _number(chunks, IP_FAMILY)
    if family is None:
        raise HepRefused(MISSING_CHUNK)
    if family not in ADDRESS_SIZE:
        raise HepRefused(BAD_FAMILY)
    source_chunk, destination_chunk = (
        (IPV4_SOURCE, IPV4_DESTINATION) if family == AF_INET else (IPV6_SOURCE, IPV6_DESTINATION)
    )
    needed = (IP_PROTOCOL, source_chunk, destination_chunk, SOURCE_PORT, DESTINATION_PORT)
    if any(kind not in chunks for kind in needed):
        raise HepRefused(MISSING_CHUNK)
    return HepPacket(
        version=3,
        family=family,
        protocol=chunks[IP_PROTOCOL][0],
        source=chunks[source_chunk],
        source_port=_number(chunks, SOURCE_PORT),
        destination=chunks[destination_chunk],
        destination_port=_number(chunks, DESTINATION_PORT),
        payload=payload,
        at=_capture_time(chunks),
        capture_id=_number(chunks, CAPTURE_ID),
        protocol_type=_number(chunks, PROTOCOL_TYPE),
        auth_key=chunks.get(AUTH_KEY),
        unknown_chunks=unknown,
    )


def _number(chunks: dict[int, bytes], kind: int) -> int | None:
    value = chunks.get(kind)
    return None if value is None else int.from_bytes(value, "big")


def _capture_time(chunks: dict[int, bytes]) -> float | None:
    seconds = _number(chunks, SECONDS)
    if seconds is None:
        return None
    microseconds = _number(chunks, MICROSECONDS) or 0
    if microseconds > 999_999:
        raise HepRefused(BAD_TIMESTAMP)
    return seconds + microseconds / 1e6


def decode_hep2(datagram: bytes) -> HepPacket:
    """HEPv1 or HEPv2: the fixed layout; the header length byte is not trusted (Kamailio
    does not read it either), the layout follows from the version and the family."""
    if len(datagram) < HEP2_HEADER.size:
        raise HepRefused(SHORT)
    version, _, family, protocol, source_port, destination_port = HEP2_HEADER.unpack_from(datagram)
    size = ADDRESS_SIZE.get(family)
    if size is None:
        raise HepRefused(BAD_FAMILY)
    offset = HEP2_HEADER.size + 2 * size
    if len(datagram) < offset + (HEP2_TIME.size if version == 2 else 0):
        raise HepRefused(SHORT)
    source = datagram[HEP2_HEADER.size : HEP2_HEADER.size + size]
    destination = datagram[HEP2_HEADER.size + size : offset]
    at, capture_id = None, None
    if version == 2:
        seconds, microseconds, capture_id = HEP2_TIME.unpack_from(datagram, offset)
        if microseconds > 999_999:
            raise HepRefused(BAD_TIMESTAMP)
        at, offset = seconds + microseconds / 1e6, offset + HEP2_TIME.size
    if offset == len(datagram):
        raise HepRefused(NO_PAYLOAD)
    return HepPacket(
        version, family, protocol, source, source_port, destination, destination_port,
        datagram[offset:], at=at, capture_id=capture_id,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class HepFrame:
    """A HEP packet ready for the engine: its capture time, the frame the agent saw
    (Ethernet, IP, UDP or TCP, payload) and the agent's capture id."""

    at: float
    frame: bytes
    capture_id: int | None


class InnerTcp:
    """Sequence numbers for the TCP segments rebuilt from HEP packets.

    An agent sends the payload of a TCP segment (heplify: a whole SIP message) without
    its sequence number; the engine's reassembly needs one. Each connection direction's
    payloads are numbered in the order they arrive, so the engine reads them as one
    in-order stream, and a SIP message an agent split in two is joined again. The least
    recently used directions are forgotten beyond TCP_FLOWS_KEPT (a flood of connections
    costs memory once): one forgotten and heard again starts over, which the engine takes
    as a gap in that stream."""

    def __init__(self, kept: int = TCP_FLOWS_KEPT) -> None:
        self.kept = kept
        self.next_seq: OrderedDict[tuple, int] = OrderedDict()

    def seq_for(self, packet: HepPacket) -> int:
        flow = (packet.source, packet.source_port, packet.destination, packet.destination_port)
        seq = self.next_seq.pop(flow, 0)
        self.next_seq[flow] = (seq + len(packet.payload)) % (1 << 32)
        if len(self.next_seq) > self.kept:
            self.next_seq.popitem(last=False)
        return seq


def frame_of(packet: HepPacket, tcp: InnerTcp) -> bytes:
    """The frame the agent saw, rebuilt: Ethernet, IPv4 or IPv6, UDP or TCP, the payload."""
    if packet.protocol == UDP:
        segment = udp_segment(packet.source_port, packet.destination_port, packet.payload)
    else:
        seq = tcp.seq_for(packet)
        segment = tcp_segment(packet.source_port, packet.destination_port, seq, packet.payload)
    if packet.family == AF_INET:
        return ipv4_frame(packet.source, packet.destination, packet.protocol, segment)
    return ipv6_frame(packet.source, packet.destination, packet.protocol, segment)


class HepDecoder:
    """HEP datagrams into frames for the engine, with the listener's rules: the shared
    secret, when one is set, and the capture times believed.

    `auth_key` empty takes every agent; set, only HEPv3 packets whose authentication key
    chunk holds it (one NUL at its end, as some agents send a C string, is not part of
    it). A capture time more than `clock_tolerance` seconds from the collector's own clock
    is an agent's clock gone wrong: the packet is used with its arrival time, so that one
    agent's clock cannot end every other agent's calls early."""

    def __init__(self, auth_key: bytes = b"", clock_tolerance: float = 60.0) -> None:
        self.auth_key = auth_key
        self.clock_tolerance = clock_tolerance
        self.tcp = InnerTcp()

    def frame(self, datagram: bytes, arrival: float, faults: dict[str, int]) -> HepFrame | None:
        """The datagram's frame, or None with its fault counted in `faults`."""
        try:
            packet = decode(datagram)
            self._check(packet)
        except HepRefused as refused:
            faults[refused.kind] = faults.get(refused.kind, 0) + 1
            return None
        if packet.unknown_chunks:
            faults[UNKNOWN_CHUNK] = faults.get(UNKNOWN_CHUNK, 0) + 1
        at = packet.at
        if at is None or abs(at - arrival) > self.clock_tolerance:
            if at is not None:
                faults[CLOCK_OFF] = faults.get(CLOCK_OFF, 0) + 1
            at = arrival
        return HepFrame(at, frame_of(packet, self.tcp), packet.capture_id)

    def _check(self, packet: HepPacket) -> None:
        if self.auth_key and not self._authenticated(packet):
            raise HepRefused(AUTH_REFUSED)
        if packet.protocol not in (UDP, TCP):
            raise HepRefused(NOT_UDP_OR_TCP)
        if packet.protocol_type is not None and packet.protocol_type not in PACKET_TYPES:
            raise HepRefused(OTHER_PROTOCOL)
        if len(packet.payload) > MAX_PAYLOAD:
            raise HepRefused(PAYLOAD_TOO_LONG)

    def _authenticated(self, packet: HepPacket) -> bool:
        key = packet.auth_key
        if key is None:
            return False
        if key.endswith(b"\x00"):
            key = key[:-1]
        return hmac.compare_digest(key, self.auth_key)


def listen_address(text: str) -> tuple[str, int]:
    """A HEP listener's address as an operator writes it, `0.0.0.0:9060` or `[::]:9060`,
    as (host, port); ValueError with a sentence when it is not one."""
    host, separator, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        wanted = ipaddress.IPv6Address
    else:
        wanted = ipaddress.IPv4Address
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not separator or not isinstance(address, wanted) or not _is_port(port):
        raise ValueError(
            f"A HEP address is an IP address and a UDP port, such as 0.0.0.0:9060 or "
            f"[::]:9060, not {text[:60]!r}."
        )
    return host, int(port)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535
