"""IPv4 and IPv6 down to the transport payload, with fragment reassembly.

Large SIP INVITEs over UDP arrive as IP fragments; a recorder that ignores fragments
silently loses those calls. Reassembly here is bounded in datagrams, bytes and time.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from recorder.capture.link import LinkError, ip_of_gre, ip_of_vxlan

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47
VXLAN_PORT = 4789

# IPv6 extension headers that are skipped on the way to the transport (RFC 8200 §4).
IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_DEST_OPTIONS = 0, 43, 44, 60
IPV6_SKIPPED = {IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_DEST_OPTIONS}

MAX_DATAGRAM = 65535
MAX_ENCAPSULATION_DEPTH = 8


@dataclass(slots=True)
class Datagram:
    """A transport payload with its addresses; addresses in packed form until needed."""

    family: int
    src: bytes
    dst: bytes
    proto: int
    payload: bytes

    @property
    def src_ip(self) -> str:
        return socket.inet_ntop(self.family, self.src)

    @property
    def dst_ip(self) -> str:
        return socket.inet_ntop(self.family, self.dst)


@dataclass(slots=True)
class PendingDatagram:
    first_seen: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    total_length: int | None = None
    size: int = 0


class Defragmenter:
    """IPv4 (RFC 791) and IPv6 (RFC 8200 §4.5) fragment reassembly.

    Keyed by (source, destination, identification, protocol). At most `max_pending`
    datagrams wait at once (the oldest is dropped to make room) and a datagram whose
    fragments do not all arrive within `timeout` seconds is dropped. Drops are counted.
    """

    def __init__(
        self, count: Callable[[str], None], max_pending: int = 1024, timeout: float = 30.0
    ) -> None:
        self.count = count
        self.max_pending = max_pending
        self.timeout = timeout
        self.pending: OrderedDict[tuple, PendingDatagram] = OrderedDict()

    def add(self, key: tuple, offset: int, more: bool, piece: bytes, now: float) -> bytes | None:
        entry = self.pending.get(key)
        if entry is None:
            self._make_room(now)
            entry = self.pending[key] = PendingDatagram(now)
        if offset + len(piece) > MAX_DATAGRAM:
            self.count("fragment-too-large")
            del self.pending[key]
            return None
        if offset in entry.pieces:
            self.count("fragment-duplicate")
            return None
        entry.pieces[offset] = piece
        entry.size += len(piece)
        if not more:
            entry.total_length = offset + len(piece)
        return self._complete(key, entry)

    def _complete(self, key: tuple, entry: PendingDatagram) -> bytes | None:
        if entry.total_length is None or entry.size < entry.total_length:
            return None
        whole = bytearray(entry.total_length)
        end = 0
        for offset in sorted(entry.pieces):
            if offset > end:
                return None  # a hole remains; overlapping pieces inflated the size
            if offset < end:
                self.count("fragment-overlap")
            piece = entry.pieces[offset]
            whole[offset : offset + len(piece)] = piece
            end = max(end, offset + len(piece))
        del self.pending[key]
        return bytes(whole[: entry.total_length])

    def _make_room(self, now: float) -> None:
        self.expire(now)
        while len(self.pending) >= self.max_pending:
            self.pending.popitem(last=False)
            self.count("fragments-dropped-overflow")

    def expire(self, now: float) -> None:
        while self.pending:
            key, entry = next(iter(self.pending.items()))
            if now - entry.first_seen < self.timeout:
                break
            del self.pending[key]
            self.count("fragments-timed-out")


class IpDecoder:
    """IP packet bytes to a Datagram, following fragments and mirror tunnels."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self.count = count
        self.defragmenter = Defragmenter(count)

    def decode(self, packet: bytes, now: float, depth: int = 0) -> Datagram | None:
        if depth > MAX_ENCAPSULATION_DEPTH:
            raise LinkError("encapsulation-too-deep")
        if not packet:
            raise LinkError("empty-ip-packet")
        version = packet[0] >> 4
        if version == 4:
            datagram = self.ipv4(packet, now)
        elif version == 6:
            datagram = self.ipv6(packet, now)
        else:
            raise LinkError("bad-ip-version")
        return self._unwrap(datagram, now, depth)

    def _unwrap(self, datagram: Datagram | None, now: float, depth: int) -> Datagram | None:
        if datagram is None:
            return None
        if datagram.proto == PROTO_GRE:
            return self.decode(ip_of_gre(datagram.payload, depth), now, depth + 1)
        if (
            datagram.proto == PROTO_UDP
            and len(datagram.payload) >= 8
            and struct.unpack_from("!H", datagram.payload, 2)[0] == VXLAN_PORT
        ):
            return self.decode(ip_of_vxlan(datagram.payload[8:], depth), now, depth + 1)
        return datagram

    def ipv4(self, packet: bytes, now: float) -> Datagram | None:
        # RFC 791 header: IHL in the low nibble of byte 0, total length at 2, id at 4,
        # flags+fragment offset at 6, protocol at 9, addresses at 12 and 16.
        if len(packet) < 20:
            raise LinkError("truncated-ipv4")
        header_length = (packet[0] & 0x0F) * 4
        total_length = struct.unpack_from("!H", packet, 2)[0]
        if header_length < 20 or total_length < header_length or len(packet) < header_length:
            raise LinkError("bad-ipv4-header")
        # Trailing Ethernet padding is cut by total length; a capture snapped short is not.
        payload = packet[header_length:total_length]
        flags_offset = struct.unpack_from("!H", packet, 6)[0]
        src, dst, proto = packet[12:16], packet[16:20], packet[9]
        if flags_offset & 0x3FFF:
            key = (src, dst, packet[4:6], proto)
            more = bool(flags_offset & 0x2000)
            payload = self.defragmenter.add(key, (flags_offset & 0x1FFF) * 8, more, payload, now)
            if payload is None:
                return None
        return Datagram(socket.AF_INET, src, dst, proto, payload)

    def ipv6(self, packet: bytes, now: float) -> Datagram | None:
        if len(packet) < 40:
            raise LinkError("truncated-ipv6")
        payload_length = struct.unpack_from("!H", packet, 4)[0]
        # A payload length past the captured bytes must not walk off the packet.
        next_header, offset, end = packet[6], 40, min(40 + payload_length, len(packet))
        src, dst = packet[8:24], packet[24:40]
        while next_header in IPV6_SKIPPED:
            if offset + 2 > end:
                raise LinkError("truncated-ipv6-extension")
            next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        if next_header == IPV6_FRAGMENT:
            return self._ipv6_fragment(packet, src, dst, offset, end, now)
        return Datagram(socket.AF_INET6, src, dst, next_header, packet[offset:end])

    def _ipv6_fragment(
        self, packet: bytes, src: bytes, dst: bytes, offset: int, end: int, now: float
    ) -> Datagram | None:
        # Fragment header: next header (1), reserved (1), offset+flags (2), identification (4).
        if offset + 8 > end:
            raise LinkError("truncated-ipv6-fragment")
        next_header = packet[offset]
        offset_flags = struct.unpack_from("!H", packet, offset + 2)[0]
        key = (src, dst, packet[offset + 4 : offset + 8], next_header)
        piece = packet[offset + 8 : end]
        whole = self.defragmenter.add(
            key, offset_flags & 0xFFF8, bool(offset_flags & 1), piece, now
        )
        if whole is None:
            return None
        return Datagram(socket.AF_INET6, src, dst, next_header, whole)
