"""Where packets come from: pcap and pcapng files (live interfaces: recorder/capture/tcpdump.py).

A source yields (timestamp, linktype, frame) in time order. Classic pcap is read here
directly (a header is two struct unpacks, far cheaper than an object per packet); pcapng
through recorder/capture/pcapng.py. What a file's reading found wrong (records skipped, the
place a file was cut) goes to the CaptureNotes the import prints in its summary.
"""

from __future__ import annotations

import heapq
import logging
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recorder.capture.pcapng import PcapngDamage, PcapngReader

log = logging.getLogger(__name__)

Packet = tuple[float, int, bytes]

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
READ_CHUNK = 4 * 1024 * 1024
# The engine's pcap loop classifies runs of records at once (recorder/engine/pcapfile.py):
# a chunk holds a run of RUN_MAX G.711 records (7.5 MB), and no more, since the chunk is
# memory the import holds whatever the number of calls.
PCAP_CHUNK = 8 * 1024 * 1024
PCAP_HEADER = 24
PCAP_RECORD_HEADER = 16
# The longest record read: the largest snapshot length any capture tool uses (262,144 bytes).
MAX_PCAP_RECORD = PCAP_RECORD_HEADER + 262144
# Timestamps a packet can have: from the Unix epoch to 2200. A pcapng timestamp is 64 bits
# with a resolution and an offset of the file's choosing, so a damaged one can name a
# year past what datetime holds; such a record is counted and skipped here, before the
# engine turns its time into a datetime. A classic pcap's 32-bit seconds end in 2106.
EARLIEST_TIMESTAMP = 0.0
LATEST_TIMESTAMP = 7258118400.0  # 2200-01-01T00:00:00Z
IMPOSSIBLE_TIMESTAMP = "impossible timestamp (before 1970 or after 2200)"


class CaptureFileError(Exception):
    """A capture file QMS cannot read, with a sentence saying why."""


@dataclass
class CaptureNotes:
    """What reading capture files found wrong with them, for the import's summary: the
    records skipped and why, and each file that was cut (read only up to a place)."""

    skipped: Counter = field(default_factory=Counter)
    cuts: list[str] = field(default_factory=list)

    def cut(self, path: Path, offset: int, record: int, why: str) -> None:
        sentence = (
            f"{path} is cut at byte {offset:,}, in record {record:,} ({why}): "
            "the records before it were imported, the rest of the file was not read"
        )
        log.warning("%s", sentence)
        self.cuts.append(sentence)

    def lines(self) -> list[str]:
        found = [f"records skipped: {kind} {number}" for kind, number in self.skipped.items()]
        return found + [f"file cut: {sentence}" for sentence in self.cuts]


def read_capture(path: Path, notes: CaptureNotes | None = None) -> Iterator[Packet]:
    notes = notes if notes is not None else CaptureNotes()
    with open(path, "rb") as capture:
        magic = capture.read(4)
        capture.seek(0)
        if magic in PCAP_MAGIC:
            yield from _read_pcap(capture, path, notes)
        elif magic == PCAPNG_MAGIC:
            yield from _possible(_read_pcapng(capture, path, notes), notes)
        else:
            raise CaptureFileError(f"{path} is neither a pcap nor a pcapng capture file.")


def _possible(packets: Iterator[Packet], notes: CaptureNotes) -> Iterator[Packet]:
    """The packets whose timestamps a packet can have; the others counted."""
    for packet in packets:
        if EARLIEST_TIMESTAMP <= packet[0] <= LATEST_TIMESTAMP:
            yield packet
        else:
            notes.skipped[IMPOSSIBLE_TIMESTAMP] += 1


def note_pcap_end(
    path: Path, found: PcapFormat, notes: CaptureNotes, records: int, frame_octets: int
) -> None:
    """After the engine's fast loop read a classic pcap file: a note if it stopped before
    the file's end. The loop reads whole records only, so what it read is the file
    header and `records` record headers and frames."""
    read = PCAP_HEADER + records * PCAP_RECORD_HEADER + frame_octets
    size = path.stat().st_size
    if read >= size:
        return
    with open(path, "rb") as capture:
        capture.seek(read)
        header = capture.read(PCAP_RECORD_HEADER)
    if len(header) < PCAP_RECORD_HEADER:
        why = f"the file ends {len(header)} bytes into its 16-byte header"
    else:
        captured = struct.unpack_from(found.byte_order + "I", header, 8)[0]
        why = f"it claims {captured:,} bytes and {size - read - len(header):,} follow"
    notes.cut(path, read, records + 1, why)


@dataclass(frozen=True, slots=True)
class PcapFormat:
    """What a classic pcap file header says about the records after it."""

    byte_order: str
    unit: float
    linktype: int


def pcap_format(capture, path: Path) -> PcapFormat:
    header = capture.read(PCAP_HEADER)
    if len(header) < PCAP_HEADER:
        raise CaptureFileError(f"{path} ends inside its pcap file header.")
    return pcap_header_format(header)


def pcap_header_format(header: bytes) -> PcapFormat:
    """What a classic pcap file header (24 bytes, its magic one of PCAP_MAGIC) says."""
    order, unit = PCAP_MAGIC[header[:4]]
    linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF
    return PcapFormat(order, unit, linktype)


def pcap_chunks(path: Path) -> tuple[PcapFormat, Iterator[bytes]] | None:
    """A classic pcap file as its format and large chunks of its records, for the engine's
    fast loop (Engine.feed_pcap carries a record cut by a chunk's end over to the next).
    None for anything but classic pcap."""
    capture = open(path, "rb")  # noqa: SIM115 (closed by the chunk generator)
    if capture.read(4) not in PCAP_MAGIC:
        capture.close()
        return None
    capture.seek(0)
    found = pcap_format(capture, path)
    return found, _chunks(capture)


def _chunks(capture) -> Iterator[bytes]:
    """The file in chunks; the pages of each chunk read are left for the kernel to drop,
    so that importing a capture larger than memory does not push everything else out."""
    with capture:
        done = capture.tell()
        while chunk := capture.read(PCAP_CHUNK):
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(capture.fileno(), done, len(chunk), os.POSIX_FADV_DONTNEED)
            done += len(chunk)
            yield chunk


def _read_pcap(capture, path: Path, notes: CaptureNotes) -> Iterator[Packet]:
    found = pcap_format(capture, path)
    order, unit, linktype = found.byte_order, found.unit, found.linktype
    record = struct.Struct(order + "IIII")
    # `read` is the file offset of the buffer's start.
    buffer, offset, read, records = b"", 0, PCAP_HEADER, 0
    while True:
        if len(buffer) - offset < 16:
            read += offset
            buffer, offset = buffer[offset:] + capture.read(READ_CHUNK), 0
            if len(buffer) < 16:
                break
        seconds, fraction, captured, _ = record.unpack_from(buffer, offset)
        if captured > MAX_PCAP_RECORD - PCAP_RECORD_HEADER:
            why = f"it claims {captured:,} bytes, more than any capture's snapshot length"
            notes.cut(path, read + offset, records + 1, why)
            return
        end = offset + 16 + captured
        if end > len(buffer):
            read += offset
            buffer, offset = buffer[offset:] + capture.read(max(READ_CHUNK, captured + 16)), 0
            end = 16 + captured
            if end > len(buffer):
                break
        yield seconds + fraction * unit, linktype, buffer[offset + 16 : end]
        offset, records = end, records + 1
    if buffer[offset:]:
        why = f"the file ends {len(buffer) - offset:,} bytes into it, its header included"
        notes.cut(path, read + offset, records + 1, why)


def _read_pcapng(capture, path: Path, notes: CaptureNotes) -> Iterator[Packet]:
    reader = PcapngReader(capture, notes.skipped)
    records = 0
    try:
        for packet in reader.packets():
            yield packet
            records += 1
    except PcapngDamage as damage:
        if damage.offset == 0:
            sentence = f"{path} is not a readable pcapng file ({damage.reason})."
            raise CaptureFileError(sentence) from None
        notes.cut(path, damage.offset, records + 1, damage.reason)


def read_captures(paths: list[Path], notes: CaptureNotes | None = None) -> Iterator[Packet]:
    """Several capture files as one stream, in time order (a rotated capture set)."""
    notes = notes if notes is not None else CaptureNotes()
    if len(paths) == 1:
        return read_capture(paths[0], notes)
    readers = (read_capture(path, notes) for path in paths)
    return heapq.merge(*readers, key=lambda packet: packet[0])
