"""Where packets come from: pcap/pcapng files, or live interfaces through libpcap.

A source yields (timestamp, linktype, frame) in time order. Classic pcap is read here
directly (a header is two struct unpacks, far cheaper than an object per packet); pcapng
goes through dpkt's reader.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dpkt

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
# The engine's pcap loop classifies runs of records at once (recorder/capture/runs.py):
# a chunk holds a run of RUN_MAX G.711 records (7.5 MB), and no more, since the chunk is
# memory the import holds whatever the number of calls.
PCAP_CHUNK = 8 * 1024 * 1024


class CaptureFileError(Exception):
    """A capture file QMS cannot read, with a sentence saying why."""


def read_capture(path: Path) -> Iterator[Packet]:
    with open(path, "rb") as capture:
        magic = capture.read(4)
        capture.seek(0)
        if magic in PCAP_MAGIC:
            yield from _read_pcap(capture, path)
        elif magic == PCAPNG_MAGIC:
            yield from _read_pcapng(capture, path)
        else:
            raise CaptureFileError(f"{path} is neither a pcap nor a pcapng capture file.")


@dataclass(frozen=True, slots=True)
class PcapFormat:
    """What a classic pcap file header says about the records after it."""

    byte_order: str
    unit: float
    linktype: int


def pcap_format(capture, path: Path) -> PcapFormat:
    header = capture.read(24)
    if len(header) < 24:
        raise CaptureFileError(f"{path} ends inside its pcap file header.")
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


def _read_pcap(capture, path: Path) -> Iterator[Packet]:
    found = pcap_format(capture, path)
    order, unit, linktype = found.byte_order, found.unit, found.linktype
    record = struct.Struct(order + "IIII")
    buffer, offset = b"", 0
    while True:
        if len(buffer) - offset < 16:
            buffer, offset = buffer[offset:] + capture.read(READ_CHUNK), 0
            if len(buffer) < 16:
                break
        seconds, fraction, captured, _ = record.unpack_from(buffer, offset)
        end = offset + 16 + captured
        if end > len(buffer):
            buffer, offset = buffer[offset:] + capture.read(max(READ_CHUNK, captured + 16)), 0
            end = 16 + captured
            if end > len(buffer):
                log.warning("%s ends inside a packet; the partial packet is skipped", path)
                break
        yield seconds + fraction * unit, linktype, buffer[offset + 16 : end]
        offset = end


def _read_pcapng(capture, path: Path) -> Iterator[Packet]:
    try:
        reader = dpkt.pcapng.Reader(capture)
    except (ValueError, dpkt.UnpackError) as error:
        raise CaptureFileError(f"{path} is not a readable pcapng file ({error}).") from None
    linktype = reader.datalink()
    try:
        for timestamp, frame in reader:
            yield timestamp, linktype, frame
    except (ValueError, dpkt.UnpackError, struct.error) as error:
        log.warning("%s: stopped reading at a damaged block (%s)", path, error)


def read_captures(paths: list[Path]) -> Iterator[Packet]:
    """Several capture files as one stream, in time order (a rotated capture set)."""
    if len(paths) == 1:
        return read_capture(paths[0])
    return heapq.merge(*(read_capture(path) for path in paths), key=lambda packet: packet[0])


@dataclass
class InterfaceStats:
    interface: str
    received: int = 0
    dropped: int = 0
    interface_dropped: int = 0


class LiveCapture:
    """Live interfaces in promiscuous mode through libpcap (pcapy-ng), with a BPF filter.

    Each interface is read by its own thread into one bounded queue; the engine reads
    the queue. Kernel drop counters come from pcap_stats().
    """

    def __init__(self, interfaces: list[str], bpf: str = "", snaplen: int = 65535) -> None:
        import pcapy

        self.handles = {}
        for interface in interfaces:
            try:
                handle = pcapy.open_live(interface, snaplen, 1, 100)
                if bpf:
                    handle.setfilter(bpf)
            except pcapy.PcapError as error:
                raise CaptureFileError(f"Cannot capture on {interface}: {error}") from None
            self.handles[interface] = handle
        self.packets: queue.Queue[Packet] = queue.Queue(maxsize=200_000)
        self.stopping = threading.Event()
        self.queue_dropped = 0
        self.threads = [
            threading.Thread(target=self._read, args=(interface,), daemon=True, name=interface)
            for interface in self.handles
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=2)

    def _read(self, interface: str) -> None:
        handle = self.handles[interface]
        linktype = handle.datalink()
        while not self.stopping.is_set():
            header, frame = handle.next()
            if header is None:
                continue
            seconds, microseconds = header.getts()
            try:
                self.packets.put_nowait((seconds + microseconds * 1e-6, linktype, frame))
            except queue.Full:
                self.queue_dropped += 1

    def __iter__(self) -> Iterator[Packet | None]:
        """Packets as they come; None every 100 ms of silence so the caller can tick."""
        while not self.stopping.is_set():
            try:
                yield self.packets.get(timeout=0.1)
            except queue.Empty:
                yield None

    def drain(self, until: float, quiet: float = 0.3, limit: float = 2.0) -> Iterator[Packet]:
        """After the caller stopped iterating: the packets captured up to `until` (a wall-clock
        time) that are still queued or still inside libpcap, which hands a partly filled
        buffer over only after its 100 ms timeout. Ends when none came for `quiet` seconds,
        and after `limit` seconds at most, so a busy link cannot hold a stop up."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                packet = self.packets.get(timeout=quiet)
            except queue.Empty:
                return
            if packet[0] <= until:
                yield packet

    def stats(self) -> list[InterfaceStats]:
        found = []
        for interface, handle in self.handles.items():
            received, dropped, interface_dropped = handle.stats()
            found.append(InterfaceStats(interface, received, dropped, interface_dropped))
        return found
