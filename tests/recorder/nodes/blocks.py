"""A live source without an interface: what tcpdump would write into its pipes, handed
over in blocks, for the capture loop's tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from recorder.capture.synthesis import PCAP_HEADER, pcap_record
from recorder.capture.tcpdump import Block, InterfaceStats


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
