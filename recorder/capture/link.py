"""Link layers and mirror-session encapsulations, peeled down to the IP packet.

A SPAN port hands QMS Ethernet frames, often VLAN-tagged (sometimes twice); a remote
mirror session arrives wrapped in GRE (ERSPAN type II/III) or VXLAN; a capture on Linux's
`any` device is in cooked (SLL/SLL2) form. Everything here returns the IP packet inside,
or raises LinkError naming what it could not peel. Pure byte slicing: no objects per
layer, because this runs for every packet that misses the RTP fast path.
"""

from __future__ import annotations

import struct

# pcap LINKTYPE_ values (tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW as some BSDs number it in pcap files.
LINKTYPE_RAW_BSD = (12, 14)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100, 0x9200)
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_ERSPAN_II = 0x88BE
ETHERTYPE_ERSPAN_III = 0x22EB
ETHERTYPE_TRANSPARENT_BRIDGING = 0x6558

PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

IP_VERSION_4 = 4
IP_VERSION_6 = 6

MAX_ENCAPSULATION_DEPTH = 8


class LinkError(Exception):
    """A frame QMS cannot peel to IP. `kind` is what the statistics count."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def ip_of_frame(linktype: int, frame: bytes) -> bytes:
    """The IP packet inside one captured frame."""
    if linktype == LINKTYPE_ETHERNET:
        return ip_of_ethernet(frame, 0)
    if linktype == LINKTYPE_LINUX_SLL:
        return ip_of_ethertype(_u16(frame, 14), frame, 16, 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        return ip_of_ethertype(_u16(frame, 0), frame, 20, 0)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, *LINKTYPE_RAW_BSD):
        return frame
    if linktype == LINKTYPE_NULL:
        return frame[4:]
    raise LinkError(f"linktype-{linktype}")


def ip_of_ethernet(frame: bytes, depth: int) -> bytes:
    # Ethernet II: destination MAC (6), source MAC (6), EtherType (2).
    return ip_of_ethertype(_u16(frame, 12), frame, 14, depth)


def ip_of_ethertype(ethertype: int, frame: bytes, offset: int, depth: int) -> bytes:
    if depth > MAX_ENCAPSULATION_DEPTH:
        raise LinkError("encapsulation-too-deep")
    while ethertype in ETHERTYPE_VLAN:
        # 802.1Q / 802.1ad tag: TCI (2) then the inner EtherType (2); tags may stack.
        ethertype = _u16(frame, offset + 2)
        offset += 4
    if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return frame[offset:]
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        return ip_of_pppoe(frame, offset)
    raise LinkError("not-ip")


def ip_of_pppoe(frame: bytes, offset: int) -> bytes:
    # RFC 2516 session header: ver/type, code, session id, length (6), then PPP protocol (2).
    protocol = _u16(frame, offset + 6)
    if protocol in (PPP_IPV4, PPP_IPV6):
        return frame[offset + 8 :]
    raise LinkError("pppoe-not-ip")


def ip_of_gre(gre: bytes, depth: int) -> bytes:
    """The IP packet inside a mirrored GRE payload (ERSPAN II/III, transparent bridging).

    GRE header (RFC 2784/2890): flags+version (2), protocol type (2), then 4 bytes each
    for checksum (C bit), key (K bit) and sequence number (S bit) when present.
    """
    flags = _u16(gre, 0)
    protocol = _u16(gre, 2)
    offset = 4 + 4 * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000))
    if protocol == ETHERTYPE_ERSPAN_II:
        # ERSPAN type II: version/VLAN (2), COS/En/T/session (2), reserved/index (4).
        return ip_of_ethernet(gre[offset + 8 :], depth + 1)
    if protocol == ETHERTYPE_ERSPAN_III:
        # ERSPAN type III: 12-byte header, plus an 8-byte platform subheader when the
        # O flag (lowest bit of the last byte) is set.
        if len(gre) < offset + 12:
            raise LinkError("truncated-erspan")
        extra = 8 if gre[offset + 11] & 0x01 else 0
        return ip_of_ethernet(gre[offset + 12 + extra :], depth + 1)
    if protocol == ETHERTYPE_TRANSPARENT_BRIDGING:
        return ip_of_ethernet(gre[offset:], depth + 1)
    if protocol in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return gre[offset:]
    raise LinkError("gre-not-mirror")


def ip_of_vxlan(vxlan: bytes, depth: int) -> bytes:
    # RFC 7348: flags (1, I bit 0x08), reserved (3), VNI (3), reserved (1), then Ethernet.
    if len(vxlan) < 8 or not vxlan[0] & 0x08:
        raise LinkError("bad-vxlan")
    return ip_of_ethernet(vxlan[8:], depth + 1)


def _u16(data: bytes, offset: int) -> int:
    try:
        return struct.unpack_from("!H", data, offset)[0]
    except struct.error:
        raise LinkError("truncated-link-header") from None
