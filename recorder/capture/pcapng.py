"""A pcapng reader that says where and why a file stops being readable.

pcapng (draft-ietf-opsawg-pcapng) is a sequence of blocks, each framed the same way:

    +------------+--------------+---------------------+--------------+
    | type (u32) | length (u32) | body (length - 12)  | length (u32) |
    +------------+--------------+---------------------+--------------+

Read here, in the byte order each Section Header Block declares:
- Section Header Block (0x0A0D0D0A): byte-order magic 0x1A2B3C4D, version 1.x. A new one
  starts a new section whose interfaces are numbered from 0 again (section 4.1).
- Interface Description Block (1): link type, snapshot length, and the if_tsresol (9) and
  if_tsoffset (14) options that turn a packet's 64-bit timestamp into seconds (4.2).
- Enhanced Packet Block (6) and the obsolete Packet Block (2): interface, timestamp, captured
  length, frame (4.3, appendix). Simple Packet Blocks carry no timestamp and are skipped, as
  are the blocks that are not packets.

Nothing from the file is trusted: a block length is checked against the file's framing and
bounded before anything is read (dpkt's reader reads whatever length a block claims, and a
length below 8 reads the rest of the file), and every failure is a PcapngDamage naming the
byte offset of the block it was found in and why.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

SECTION_HEADER = 0x0A0D0D0A
INTERFACE_DESCRIPTION = 1
PACKET = 2
ENHANCED_PACKET = 6
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPTION_TSRESOL = 9
OPTION_TSOFFSET = 14
# The largest block read: a packet of the largest snapshot length any capture tool uses
# (262,144 bytes) with room for its options; a longer claim is damage, not a packet.
MAX_BLOCK = 1 << 20
SMALLEST_BLOCK = 12


class PcapngDamage(Exception):
    """The file cannot be read on from `offset`, for `reason` (a phrase)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Interface:
    """What an Interface Description Block says about the packets captured on it."""

    linktype: int
    divisor: float
    offset: int


class PcapngReader:
    """The packets of a pcapng file as (timestamp in seconds, link type, frame)."""

    def __init__(self, capture: BinaryIO, skipped: Counter) -> None:
        self.capture = capture
        # Packets skipped and why, counted for the import's summary.
        self.skipped = skipped
        self.position = 0
        self.order = "<"
        self.interfaces: list[Interface] = []

    def packets(self) -> Iterator[tuple[float, int, bytes]]:
        self._section(*self._head(first=True))
        while True:
            head = self._head(first=False)
            if head is None:
                return
            block_type, body, start = head
            if block_type == SECTION_HEADER:
                self._section(block_type, body, start)
            elif block_type == INTERFACE_DESCRIPTION:
                self.interfaces.append(self._interface(body, start))
            elif block_type in (ENHANCED_PACKET, PACKET):
                packet = self._packet(block_type, body, start)
                if packet is not None:
                    yield packet

    def _head(self, first: bool) -> tuple[int, bytes, int] | None:
        """The next block's type and body; None at the end of the file."""
        start = self.position
        frame = self.capture.read(8)
        if not frame and not first:
            return None
        if len(frame) < 8:
            why = f"the file ends inside a block header ({len(frame)} of 8 bytes)"
            raise PcapngDamage(start, why)
        block_type = struct.unpack_from("<I", frame)[0]
        magic = b""
        if block_type == SECTION_HEADER:
            magic = self.capture.read(4)
            self.order = self._byte_order(magic, start)
        elif first:
            raise PcapngDamage(start, "the file does not start with a Section Header Block")
        length = struct.unpack_from(self.order + "I", frame, 4)[0]
        self._check_length(length, start)
        rest = magic + self.capture.read(length - 8 - len(magic))
        if len(rest) < length - 8:
            raise PcapngDamage(
                start, f"the file ends inside a block of {length:,} bytes ({len(rest) + 8:,} read)"
            )
        if struct.unpack_from(self.order + "I", rest, len(rest) - 4)[0] != length:
            raise PcapngDamage(start, "a block's trailing length differs from its leading one")
        self.position = start + length
        return block_type, rest[:-4], start

    @staticmethod
    def _byte_order(magic: bytes, start: int) -> str:
        if len(magic) < 4:
            raise PcapngDamage(start, "the file ends inside its Section Header Block")
        for order in "<>":
            if struct.unpack(order + "I", magic)[0] == BYTE_ORDER_MAGIC:
                return order
        raise PcapngDamage(start, f"the byte-order magic is 0x{magic.hex()}, not 1a2b3c4d")

    @staticmethod
    def _check_length(length: int, start: int) -> None:
        if length < SMALLEST_BLOCK or length % 4:
            raise PcapngDamage(
                start, f"a block claims {length:,} bytes, not a multiple of 4 of at least 12"
            )
        if length > MAX_BLOCK:
            raise PcapngDamage(
                start, f"a block claims {length:,} bytes, more than the {MAX_BLOCK:,} QMS reads"
            )

    def _section(self, block_type: int, body: bytes, start: int) -> None:
        if len(body) < 16:
            raise PcapngDamage(start, "the Section Header Block is too short")
        major, minor = struct.unpack_from(self.order + "HH", body, 4)
        if major != 1:
            raise PcapngDamage(start, f"pcapng version {major}.{minor} is not 1.x")
        self.interfaces = []

    def _interface(self, body: bytes, start: int) -> Interface:
        if len(body) < 8:
            raise PcapngDamage(start, "an Interface Description Block is too short")
        linktype = struct.unpack_from(self.order + "H", body)[0]
        divisor, offset = 1e6, 0
        for code, value in self._options(body[8:]):
            if code == OPTION_TSRESOL and value:
                # Most significant bit clear: a negative power of 10; set: of 2 (4.2).
                exponent = value[0] & 0x7F
                divisor = float(2**exponent if value[0] & 0x80 else 10**exponent)
            elif code == OPTION_TSOFFSET and len(value) == 8:
                offset = struct.unpack(self.order + "q", value)[0]
        return Interface(linktype, divisor, offset)

    def _options(self, options: bytes) -> Iterator[tuple[int, bytes]]:
        """Each option as (code, value), up to opt_endofopt or the block's end; a length
        past the block's end ends the options (they only refine timestamps)."""
        at = 0
        while at + 4 <= len(options):
            code, length = struct.unpack_from(self.order + "HH", options, at)
            if code == 0 or at + 4 + length > len(options):
                return
            yield code, options[at + 4 : at + 4 + length]
            at += 4 + (length + 3) // 4 * 4

    def _packet(self, block_type: int, body: bytes, start: int) -> tuple[float, int, bytes] | None:
        if len(body) < 20:
            raise PcapngDamage(start, "a packet block is too short")
        if block_type == ENHANCED_PACKET:
            number, high, low, captured = struct.unpack_from(self.order + "IIII", body)
        else:
            number, _, high, low, captured = struct.unpack_from(self.order + "HHIII", body)
        if captured > len(body) - 20:
            raise PcapngDamage(
                start, f"a packet claims {captured:,} bytes in a block of {len(body) + 12:,}"
            )
        if number >= len(self.interfaces):
            self.skipped["packet of an interface no block describes"] += 1
            return None
        interface = self.interfaces[number]
        timestamp = interface.offset + ((high << 32) | low) / interface.divisor
        return timestamp, interface.linktype, body[20 : 20 + captured]
