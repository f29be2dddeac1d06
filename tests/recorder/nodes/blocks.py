"""A live source without an interface: what tcpdump would write into its pipes, handed
over in blocks, for the capture loop's tests."""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterable, Iterator

from recorder.capture.synthesis import PCAP_HEADER, pcap_record
from recorder.capture.tcpdump import MEDIA, SIGNALLING, Block, InterfaceStats


class BlockReplay:
    """A live source whose blocks are given: each item a Block, or None for a silence.
    Once stopped, `rest` hands over `still_held`: what a tcpdump writes after its stop."""

    def __init__(self, blocks: Iterable[Block | None], still_held: Iterable[Block] = ()) -> None:
        self.given = iter(blocks)  # one stream: a second blocks() goes on where it was
        self.still_held = still_held
        self.stopped = self.closed = False

    def blocks(self) -> Iterator[Block | None]:
        yield from self.given

    def stop(self) -> None:
        self.stopped = True

    def rest(self) -> Iterator[Block]:
        assert self.stopped, "the loop reads the rest only after it stopped the source"
        yield from self.still_held

    def close(self) -> None:
        self.closed = True

    def request_stats(self) -> None:
        pass

    def stats(self) -> list[InterfaceStats]:
        return [InterfaceStats("replay")]


def cut(data: bytes, sizes: Iterable[int], interface: str = "replay") -> list[Block]:
    """`data` in blocks of the given sizes in turn (the last one takes what is left)."""
    blocks, offset = [], 0
    for size in sizes:
        if offset >= len(data):
            break
        blocks.append(Block(interface, data[offset : offset + size]))
        offset += size
    if offset < len(data):
        blocks.append(Block(interface, data[offset:]))
    return blocks


class PacketBlocks:
    """Packets as one interface's pipe would carry them: the pcap file header before the
    first, then one record per block."""

    def __init__(self, interface: str = "replay") -> None:
        self.interface = interface
        self.started = False

    def block(self, at: float, frame: bytes) -> Block:
        data = pcap_record(at, frame)
        if not self.started:
            data, self.started = PCAP_HEADER + data, True
        return Block(self.interface, data)


def is_media(frame: bytes) -> bool:
    """Whether the media ring's filter takes an Ethernet frame (recorder/capture/tcpdump.py,
    MEDIA_FILTER), one VLAN tag removed first as the kernel does: an unfragmented UDP
    datagram over IPv4 or IPv6 whose payload starts as RTP version 2 does."""
    if frame[12:14] == b"\x81\x00":
        frame = frame[:12] + frame[16:]
    ethertype, ip = frame[12:14], frame[14:]
    if ethertype == b"\x08\x00" and ip[9] == 17 and not int.from_bytes(ip[6:8]) & 0x3FFF:
        header = (ip[0] & 0x0F) * 4
        return int.from_bytes(ip[2:4]) > header + 8 and ip[header + 8] & 0xC0 == 0x80
    if ethertype == b"\x86\xdd" and ip[6] == 17:
        return int.from_bytes(ip[4:6]) > 8 and ip[48] & 0xC0 == 0x80
    return False


def two_rings(
    capture: bytes, sizes: Iterator[int], signalling_lag: float, interface: str = "replay"
) -> list[Block]:
    """A classic pcap file's packets (little-endian, microseconds) as one interface's two
    rings would hand them over: each ring's pipe (the file's header first, then its
    records, byte for byte) cut into blocks of the given sizes in turn, and the blocks of
    both in the order they arrive, a block arriving when its last record was captured, the
    signalling ring's `signalling_lag` seconds later (earlier, if negative)."""
    header, offset = capture[:24], 24
    records: dict[str, list[tuple[float, bytes]]] = {MEDIA: [], SIGNALLING: []}
    while offset < len(capture):
        seconds, fraction, captured = struct.unpack_from("<III", capture, offset)
        record = capture[offset : offset + 16 + captured]
        ring = MEDIA if is_media(record[16:]) else SIGNALLING
        records[ring].append((seconds + fraction * 1e-6, record))
        offset += len(record)
    arriving = []
    for ring, found in records.items():
        lag = signalling_lag if ring == SIGNALLING else 0.0
        data = header + b"".join(record for _, record in found)
        ends = list(itertools.accumulate(len(record) for _, record in found))
        offset = 0
        while offset < len(data):
            block = data[offset : offset + next(sizes)]
            offset += len(block)
            last = min(bisect.bisect_left(ends, offset - len(header)), len(found) - 1)
            arriving.append((found[last][0] + lag, ring == MEDIA, Block(interface, block, ring)))
    # A stable sort: each ring's blocks keep their order.
    arriving.sort(key=lambda found: (found[0], found[1]))
    return [block for _, _, block in arriving]
