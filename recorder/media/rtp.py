"""The RTP fixed header (RFC 3550 §5.1), parsed from the bytes of one UDP payload.

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

With X set, a header extension follows the CSRC list (RFC 3550 §5.3.1): a 16-bit profile
value, a 16-bit length in 32-bit words (not counting these 4 bytes), then the data. With P
set, the last octet of the packet counts the padding octets, itself included.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
FIXED_HEADER = struct.Struct("!BBHII")
EXTENSION_HEADER = struct.Struct("!HH")
# RTCP packet types SR, RR, SDES, BYE, APP share byte 1 with RTP's M+PT (RFC 5761 §4).
RTCP_PACKET_TYPES = range(200, 205)


class RtpDecodeError(ValueError):
    """Bytes that are not a well-formed RTP packet. `kind` is a short stable label."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(slots=True)
class RtpExtension:
    """A header extension (RFC 3550 §5.3.1); its profile says how to read the data."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0


def parse_rtp(datagram: bytes | bytearray | memoryview) -> RtpPacket:
    """One RTP packet from a UDP payload; RtpDecodeError for anything else (RTCP included)."""
    data = bytes(datagram)
    if len(data) < FIXED_HEADER.size:
        raise RtpDecodeError("truncated-header")
    first, second, sequence, timestamp, ssrc = FIXED_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpDecodeError("bad-version")
    if second in RTCP_PACKET_TYPES:
        raise RtpDecodeError("rtcp")
    csrcs, offset = _csrcs(data, first & 0x0F)
    extension = None
    if first & 0x10:
        extension, offset = _extension(data, offset)
    end = len(data) - (_padding(data, offset) if first & 0x20 else 0)
    return RtpPacket(
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=data[offset:end],
        csrcs=csrcs,
        extension=extension,
        padding=len(data) - end,
    )


def _csrcs(data: bytes, count: int) -> tuple[tuple[int, ...], int]:
    end = FIXED_HEADER.size + 4 * count
    if end > len(data):
        raise RtpDecodeError("truncated-csrc")
    return struct.unpack_from(f"!{count}I", data, FIXED_HEADER.size), end


def _extension(data: bytes, offset: int) -> tuple[RtpExtension, int]:
    if offset + EXTENSION_HEADER.size > len(data):
        raise RtpDecodeError("truncated-extension")
    profile, words = EXTENSION_HEADER.unpack_from(data, offset)
    start = offset + EXTENSION_HEADER.size
    end = start + 4 * words
    if end > len(data):
        raise RtpDecodeError("truncated-extension")
    return RtpExtension(profile, data[start:end]), end


def _padding(data: bytes, payload_start: int) -> int:
    # RFC 3550 §5.1: the count includes the count octet itself, so 0 is not valid, and
    # padding cannot reach back into the header (A.1's validity check).
    count = data[-1] if len(data) > payload_start else 0
    if count == 0 or count > len(data) - payload_start:
        raise RtpDecodeError("bad-padding")
    return count


def looks_like_rtp(datagram: bytes) -> bool:
    """RTP version 2 with a whole fixed header, not RTCP (RFC 3550 §5.1; RTCP puts its
    packet types 200-204 where RTP has marker and payload type). Cheap: no parsing."""
    return len(datagram) >= 12 and datagram[0] >> 6 == 2 and not 200 <= datagram[1] <= 204
