"""A classic pcap file into the engine: its records one by one with the RTP fast path
inlined (PcapRecords), and runs of equal-length records classified and spooled at once
(RunFeeder, Run).

The engine is reached through PacketTaker, the part of it this path uses, so the file's
reader does not depend on the Engine class.

A mirror port carrying calls is mostly RTP of a few frame sizes (G.711 at 20 ms is a
214-byte Ethernet frame), so a classic pcap file is mostly long runs of records of one
length. Records of one length lie at a fixed stride, which numpy reads as columns without
a Python step per packet: the arrival times, the Ethernet/IPv4/UDP checks of the engine's
per-packet fast path, and the destination address and port that find the call. The
packets of each stream are then appended to its call's log together, one step per stream
and run instead of one per packet.

Order is kept. A packet the run cannot take as it is (the slow path's: signalling, an
unknown address, a learned NAT address) and each second's tick are handled at their own
place, in the engine's own way; when one of them changes the media index the rest of the
run is classified again.

    pcap record: 16-byte header (seconds, fraction, captured, original), then the frame
    +---------+---------+----------+----------+-----------+------+-------+----------+
    | seconds | fraction| captured | original | Ethernet  | IPv4 | UDP   | RTP ...  |
    | 0       | 4       | 8        | 12       | 16        | 30   | 50    | 58       |
    +---------+---------+----------+----------+-----------+------+-------+----------+
"""

from __future__ import annotations

import logging
import math
import struct
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.sources import (
    MAX_PCAP_RECORD,
    PCAP_HEADER,
    PCAP_MAGIC,
    pcap_header_format,
)
from recorder.engine.calls import PendingLog, SharedLog
from recorder.media.rtplog import BLOCK_PACKETS, MAX_BLOCK_PACKETS, PendingRun, RtpLog

if TYPE_CHECKING:
    from recorder.capture.sources import PcapFormat
    from recorder.engine.calls import MediaIndex, MediaStream
    from recorder.engine.sink import EngineStats

log = logging.getLogger(__name__)

ETHERNET_IPV4_NO_OPTIONS = b"\x08\x00\x45"
# Records classified at once: bounds the arrays, and what a run can add to one direction
# of a log block (whose count is 16 bits). An 8 MiB chunk of G.711 frames is one run.
RUN_MAX = MAX_BLOCK_PACKETS
# Records of one length in a row before the per-record loop hands over to a run.
RUN_STREAK = 8
RECORD_HEADER = 16
# Where the per-packet fast path's fields lie in a record: IPv4 without options in
# Ethernet II, then UDP.
ETHERTYPE_AND_VERSION = RECORD_HEADER + 12  # 08 00 45
IP_FLAGS = RECORD_HEADER + 20
IP_FRAGMENT_OFFSET = RECORD_HEADER + 21
IP_PROTOCOL = RECORD_HEADER + 23
DESTINATION_IP = RECORD_HEADER + 30
DESTINATION_PORT = RECORD_HEADER + 36
UDP_PAYLOAD = RECORD_HEADER + 42
SMALLEST_RECORD = UDP_PAYLOAD
UDP = 17
# The key of a packet the fast path cannot take: no 6-byte address reaches it.
NO_STREAM = np.uint64(1 << 63)
# The first look for the end of a run or the next tick is this far; each further look
# twice as far, so a short run costs little and a long one few steps.
FIRST_LOOK = 64


class PacketTaker(Protocol):
    """What the file's fast path needs of the engine."""

    media: MediaIndex
    next_tick: float
    stats: EngineStats

    def tick(self, now: float) -> None: ...

    def take(self, at: float, linktype: int, frame: bytes) -> None:
        """A packet already counted and ticked: RTP to its stream, the rest as slow_path."""

    def slow_path(self, at: float, linktype: int, frame: bytes) -> None:
        """A packet the fast path does not take: decoded, dispatched, errors counted."""

    def count(self, kind: str) -> None: ...


def feed_pcap(engine: PacketTaker, found: PcapFormat, chunks: Iterable[bytes]) -> None:
    """A classic pcap file's records (after its file header), in chunks cut anywhere."""
    stream = PcapStream(engine, found)
    for chunk in chunks:
        if not stream.feed(chunk):
            return
    stream.end()


class PcapStream:
    """Classic pcap in blocks cut anywhere: a file's chunks, or what each read of a capture
    tool's pipe returned. The one way records reach the engine's fast path, for files and
    for live capture alike.

    Without a format, the stream begins with its 24-byte file header (a pipe's first
    bytes). A record that runs past a block's end is completed from the start of the next
    (only that record is copied), so the bytes are walked once and a block is never copied
    whole.

    A live capture's two rings of one interface are two streams, fed in capture-time order
    (recorder/nodes/rings.py): `advance(until)` feeds only the records captured before
    `until` and holds the rest, blocks and all, until it is called again with a later time.
    """

    def __init__(self, engine: PacketTaker, found: PcapFormat | None = None) -> None:
        self.engine = engine
        self.records = PcapRecords(engine, found) if found is not None else None
        # The block being fed, where its first record not yet fed starts, and the blocks
        # after it (only a stream fed with an `until` keeps more than one).
        self.block, self.offset = b"", 0
        self.waiting: deque[bytes] = deque()
        self.waiting_bytes = 0
        # When the first record held back by `until` was captured; None once all whole
        # records are fed.
        self.held_at: float | None = None
        self.damaged = False

    def feed(self, block: bytes) -> bool:
        """The block's whole records to the engine; False once the stream is damaged (a
        record longer than any snapshot length, or not a classic pcap stream), after which
        nothing more is read."""
        self.add(block)
        self.advance()
        return not self.damaged

    def add(self, block: bytes) -> None:
        """A block read, fed by the next advance()."""
        if block and not self.damaged:
            self.waiting.append(block)
            self.waiting_bytes += len(block)

    @property
    def reached_at(self) -> float:
        """When the latest record looked at was captured (0 before the first): every record
        of the stream before it has been fed, or is held."""
        return self.records.reached_at if self.records is not None else 0.0

    @property
    def held_bytes(self) -> int:
        """What was added and not yet fed."""
        return self.waiting_bytes + len(self.block) - self.offset

    def advance(self, until: float = math.inf) -> float | None:
        """Every whole record captured before `until` to the engine, in order. Returns when
        the first record held back was captured (at `until` or later), or None when every
        whole record is fed."""
        if self.held_at is not None and self.held_at >= until:
            return self.held_at  # nothing more is due: no record is looked at
        self.held_at = None
        while not self.damaged and self._has_header():
            records = self.records
            self.offset = records.feed(self.block, self.offset, len(self.block), until)
            if records.held_at is not None:
                self.held_at = records.held_at
                return self.held_at
            if self._too_long() or not self.waiting:
                return None
            self._next_block(until)
            if self.held_at is not None:
                return self.held_at
        return None

    def end(self) -> None:
        """No more blocks: what is whole is fed, a record left incomplete is said, and
        skipped."""
        self.advance()
        if self.held_bytes and not self.damaged:
            log.warning("the capture ends inside a packet; the partial packet is skipped")
        self.block, self.offset = b"", 0
        self.waiting.clear()
        self.waiting_bytes = 0

    def _take_waiting(self) -> bytes:
        block = self.waiting.popleft()
        self.waiting_bytes -= len(block)
        return block

    def _has_header(self) -> bool:
        """Whether the stream's file header has been read (its first 24 bytes, when it came
        without a format); False while they have not all come."""
        if self.records is not None:
            return True
        while len(self.block) - self.offset < PCAP_HEADER and self.waiting:
            self.block, self.offset = self.block[self.offset :] + self._take_waiting(), 0
        if len(self.block) - self.offset < PCAP_HEADER:
            return False
        header = self.block[self.offset : self.offset + PCAP_HEADER]
        if header[:4] not in PCAP_MAGIC:
            self._damage("not-pcap-stream", "the stream is not classic pcap")
            return False
        self.records = PcapRecords(self.engine, pcap_header_format(header))
        self.offset += PCAP_HEADER
        return True

    def _next_block(self, until: float) -> None:
        """On to the next waiting block; the record the last one's end cut is completed
        from its start and fed, if it is due."""
        tail = self.block[self.offset :]
        block = self._take_waiting()
        if not tail:
            self.block, self.offset = block, 0
            return
        records = self.records
        used = records.feed(tail + block[:MAX_PCAP_RECORD], 0, len(tail), until)
        if used:
            self.block, self.offset = block, used - len(tail)
            return
        # Still incomplete, or whole but not due: it waits whole, in front of the block.
        self.block, self.offset = tail + block, 0
        self.held_at = records.held_at

    def _too_long(self) -> bool:
        """A record longer than any capture's snapshot length: the stream is damaged here."""
        if len(self.block) - self.offset <= MAX_PCAP_RECORD:
            return False
        self._damage(
            "bad-pcap-record", f"a pcap record claims {len(self.block) - self.offset} bytes"
        )
        return True

    def _damage(self, kind: str, why: str) -> bool:
        self.engine.count(kind)
        log.error("%s: the capture is damaged here, the rest is not read", why)
        self.damaged, self.block, self.offset = True, b"", 0
        self.waiting.clear()
        self.waiting_bytes = 0
        return False


class PcapRecords:
    """The records of a classic pcap file's chunks fed to an engine: the hot path of an
    import. For RTP to a known media endpoint it does one header unpack, four byte
    comparisons and one dict lookup, and builds nothing; runs of records of one length go
    to a RunFeeder (recorder/engine/pcapfile.py) after RUN_STREAK of them."""

    def __init__(self, engine: PacketTaker, found: PcapFormat) -> None:
        self.engine = engine
        self.unpack = struct.Struct(found.byte_order + "IIII").unpack_from
        self.unit, self.linktype = found.unit, found.linktype
        self.runs = RunFeeder(engine, found) if found.linktype == LINKTYPE_ETHERNET else None
        # When the latest record looked at was captured (every one before it is fed or
        # held), and the first one `until` held back.
        self.reached_at = 0.0
        self.held_at: float | None = None

    def feed(self, buffer: bytes, offset: int, limit: int, until: float = math.inf) -> int:
        """Every whole record of `buffer` that starts at `offset` or after and before
        `limit`, up to the first one captured at `until` or later (its time is then
        `held_at`); returns where the first record not fed starts."""
        engine, unpack, unit, linktype = self.engine, self.unpack, self.unit, self.linktype
        # A run may go on to the buffer's end: only where the caller wants all of it.
        runs = self.runs if limit >= len(buffer) else None
        media, stats = engine.media, engine.stats
        ethernet = linktype == LINKTYPE_ETHERNET
        first, end, packets, rtp_packets = offset, len(buffer), 0, 0
        last_header = min(end - 16, limit - 1)
        # One comparison per record serves both the next tick and the stop.
        next_tick = min(engine.next_tick, until)
        run_length, streak = -1, 0
        at, self.held_at = self.reached_at, None
        while offset <= last_header:
            seconds, fraction, captured, _ = unpack(buffer, offset)
            start = offset + 16
            if start + captured > end:
                break  # the record goes on in the next chunk
            if captured != run_length:
                run_length, streak = captured, 0
            elif streak < RUN_STREAK:
                streak += 1
            elif runs is not None and captured >= SMALLEST_RECORD - 16:
                # Records of one length in a row: the rest of the run at once.
                records, recorded = runs.feed(buffer, offset, captured, end, until)
                packets += records
                rtp_packets += recorded
                offset += records * (16 + captured)
                streak = RUN_STREAK if records >= RUN_STREAK else 0
                next_tick = min(engine.next_tick, until)
                at = runs.reached_at
                if runs.held_at is not None:
                    self.held_at = runs.held_at
                    break
                continue
            at = seconds + fraction * unit
            if at >= next_tick:
                if at >= until:
                    self.held_at = at
                    break
                engine.tick(at)
                next_tick = min(engine.next_tick, until)
            offset = start + captured
            packets += 1
            # Ethernet II, IPv4 without options, UDP, not a fragment (flags/offset 0 or DF).
            if (
                ethernet
                and captured >= 42
                and buffer[start + 12 : start + 15] == ETHERNET_IPV4_NO_OPTIONS
                and buffer[start + 23] == 17
                and not buffer[start + 20] & 0xBF
                and not buffer[start + 21]
            ):
                stream = media.get(
                    buffer[start + 30 : start + 34] + buffer[start + 36 : start + 38]
                )
                if stream is not None:
                    rtp_packets += 1
                    stream.packets += 1
                    stream.octets += captured - 42
                    stream.last_at = at
                    if not stream.first_at:
                        stream.first_at = at
                    logged = stream.log_packets
                    if logged is not None:
                        # RtpLog.append_coded, inlined: two list appends.
                        logged.append(buffer[start + 42 : offset])
                        stream.log_arrivals.append(at)
                        if len(logged) >= BLOCK_PACKETS:
                            stream.log.flush()
                    elif stream.log is not None:
                        stream.log.append_coded(at, stream.log_code, buffer[start + 42 : offset])
                    continue
            engine.slow_path(at, linktype, buffer[start:offset])
        self.reached_at = at
        stats.packets += packets
        stats.rtp_packets += rtp_packets
        stats.octets += offset - first - 16 * packets
        return offset


class RunFeeder:
    """Feeds the engine the runs of a classic pcap file of Ethernet frames."""

    def __init__(self, engine: PacketTaker, found: PcapFormat) -> None:
        self.engine = engine
        self.unit = found.unit
        self.word = np.dtype(found.byte_order + "u4")
        # As PcapRecords has them, for the last run.
        self.reached_at = 0.0
        self.held_at: float | None = None

    def feed(
        self, buffer: bytes, offset: int, captured: int, end: int, until: float = math.inf
    ) -> tuple[int, int]:
        """The run of records of `captured` bytes starting at `offset`: every record is
        handled, in order, up to the first captured at `until` or later; returns the
        records handled and the RTP packets the run took itself."""
        stride = RECORD_HEADER + captured
        count = self._length(buffer, offset, captured, min((end - offset) // stride, RUN_MAX))
        due, arrivals = count, None
        if until != math.inf:
            # Only the records before `until` make the run: a stream held back (a live
            # ring waiting for the other) is asked again and again for the same records,
            # and would otherwise classify all of them at every ask.
            arrivals = self.arrivals_of(buffer, offset, stride, count)
            due = _first(np.greater_equal, arrivals, until, 0, count)
            if due == 0:
                self.held_at = self.reached_at = float(arrivals[0])
                return 0, 0
        run = Run(buffer, offset, stride, due, self, None if arrivals is None else arrivals[:due])
        handled = run.feed(until)
        if handled < due:
            self.held_at = self.reached_at = float(run.arrivals[handled])
        elif due < count:
            self.held_at = self.reached_at = float(arrivals[due])  # looked at, held
        else:
            self.held_at, self.reached_at = None, float(run.arrivals[due - 1])
        return handled, run.recorded

    def arrivals_of(self, buffer: bytes, offset: int, stride: int, count: int) -> np.ndarray:
        """The capture times of `count` records of `stride` bytes from `offset`."""
        seconds = np.ndarray((count,), self.word, buffer, offset, (stride,))
        fraction = np.ndarray((count,), self.word, buffer, offset + 4, (stride,))
        return seconds + fraction * self.unit

    def _length(self, buffer: bytes, offset: int, captured: int, limit: int) -> int:
        lengths = np.ndarray((limit,), self.word, buffer, offset + 8, (RECORD_HEADER + captured,))
        return _first(np.not_equal, lengths, captured, 0, limit)


class Run:
    """One run: its columns, its streams, and where it has got to."""

    def __init__(
        self,
        buffer: bytes,
        offset: int,
        stride: int,
        count: int,
        feeder: RunFeeder,
        arrivals: np.ndarray | None = None,
    ):
        self.engine = feeder.engine
        self.buffer, self.offset, self.stride, self.count = buffer, offset, stride, count
        self.rows = np.ndarray((count, stride), np.uint8, buffer, offset, (stride, 1))
        # Given when the feeder has read them already (to find where `until` cuts the run).
        if arrivals is None:
            arrivals = feeder.arrivals_of(buffer, offset, stride, count)
        self.arrivals = arrivals
        self.keys = self._keys()
        self.length_bytes = struct.pack("<H", stride - UDP_PAYLOAD)
        self.recorded = 0

    def _keys(self) -> np.ndarray:
        """Each packet's destination address and port as one number, or NO_STREAM where
        the frame is not plain IPv4 UDP (the per-packet fast path's own test)."""
        rows, stride = self.rows, self.stride
        plain = (
            (rows[:, ETHERTYPE_AND_VERSION] == 0x08)
            & (rows[:, ETHERTYPE_AND_VERSION + 1] == 0x00)
            & (rows[:, ETHERTYPE_AND_VERSION + 2] == 0x45)
            & (rows[:, IP_PROTOCOL] == UDP)
            & ((rows[:, IP_FLAGS] & 0xBF) == 0)
            & (rows[:, IP_FRAGMENT_OFFSET] == 0)
        )
        address = np.ndarray((self.count,), ">u4", self.buffer, self.offset + DESTINATION_IP,
                             (stride,))  # fmt: skip
        port = np.ndarray((self.count,), ">u2", self.buffer, self.offset + DESTINATION_PORT,
                          (stride,))  # fmt: skip
        keys = address.astype(np.uint64) << np.uint64(16) | port
        return np.where(plain, keys, NO_STREAM)

    def feed(self, until: float) -> int:
        """The run's packets in order, up to the first captured at `until` or later;
        returns how many were handled."""
        engine, media = self.engine, self.engine.media
        position = 0
        self._classify(position)
        while position < self.count:
            # The next packet the run cannot take, or before it the next second's tick or
            # the stop.
            special = self._next_special(position)
            due = min(engine.next_tick, until)
            stop = _first(np.greater_equal, self.arrivals, due, position, special)
            if stop > position:
                self._deliver(position, stop)
            if stop == self.count or self.arrivals[stop] >= until:
                return stop
            version = media.version
            if self.arrivals[stop] >= engine.next_tick:
                engine.tick(float(self.arrivals[stop]))
                position = stop
            else:
                self._one_by_one(stop)
                position = stop + 1
            if media.version != version:
                self._classify(position)
        return self.count

    def _classify(self, start: int) -> None:
        """Which stream each packet from `start` goes to, as the media index is now; and
        which packets the run cannot take itself."""
        keys, inverse = np.unique(self.keys[start:], return_inverse=True)
        media = self.engine.media
        streams = [media.get(int(key).to_bytes(6, "big")) if key != NO_STREAM else None
                   for key in keys.tolist()]  # fmt: skip
        takes = np.array([_takes(stream) for stream in streams], dtype=bool)
        self.base, self.streams, self.group = start, streams, inverse.reshape(-1)
        self.specials = np.flatnonzero(~takes[self.group]) + start
        self.next_special_at = 0

    def _next_special(self, position: int) -> int:
        specials, at = self.specials, self.next_special_at
        while at < len(specials) and specials[at] < position:
            at += 1
        self.next_special_at = at
        return int(specials[at]) if at < len(specials) else self.count

    def _deliver(self, start: int, stop: int) -> None:
        """Packets start..stop-1, every one a stream's: counted and logged per stream.

        The packets are put in stream order once (a stable sort keeps each stream's own
        order), their arrival times and payloads gathered in that order in one step each,
        and every stream takes its slice."""
        group = self.group[start - self.base : stop - self.base]
        order = np.argsort(group, kind="stable")
        sorted_group = group[order]
        cuts = np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1
        firsts = np.concatenate(([0], cuts))
        lasts = np.concatenate((cuts, [len(order)]))
        order += start
        arrivals = self.arrivals[order]
        arrival_bytes = memoryview(arrivals.astype("<f8")).cast("B")
        payload_bytes = memoryview(self.rows[order, UDP_PAYLOAD:]).cast("B")
        streams = [self.streams[index] for index in sorted_group[firsts].tolist()]
        length = self.stride - UDP_PAYLOAD
        for stream, first, last, first_at, last_at in zip(
            streams, firsts.tolist(), lasts.tolist(), arrivals[firsts].tolist(),
            arrivals[lasts - 1].tolist(), strict=True,
        ):  # fmt: skip
            count = last - first
            stream.packets += count
            stream.octets += count * length
            stream.last_at = last_at
            if not stream.first_at:
                stream.first_at = first_at
            if stream.log is not None:
                run = PendingRun(
                    count,
                    arrival_bytes[first * 8 : last * 8],
                    self.length_bytes * count,
                    payload_bytes[first * length : last * length],
                )
                stream.log.append_run(stream.log_code, run)
        self.recorded += stop - start

    def _one_by_one(self, index: int) -> None:
        """A packet the run does not take itself, handed to the engine as a packet."""
        start = self.offset + index * self.stride
        frame = self.buffer[start + RECORD_HEADER : start + self.stride]
        self.engine.take(float(self.arrivals[index]), LINKTYPE_ETHERNET, frame)


def _takes(stream: MediaStream | None) -> bool:
    """A stream whose packets a run appends itself: its log (if it has one) an RtpLog, the
    PendingLog that opens one at the stream's first packet, or the SharedLog of an address
    two calls share. A learned NAT address's log judges each packet
    (recorder.engine.calls.LearnedLog)."""
    return stream is not None and (
        stream.log is None or isinstance(stream.log, RtpLog | PendingLog | SharedLog)
    )


def _first(test: np.ufunc, values: np.ndarray, value: float, start: int, stop: int) -> int:
    """The first index in start..stop-1 where test(values[i], value) holds, else `stop`;
    looking a short way first, then twice as far each time."""
    look = FIRST_LOOK
    while start < stop:
        upto = min(stop, start + look)
        hits = np.flatnonzero(test(values[start:upto], value))
        if len(hits):
            return start + int(hits[0])
        start, look = upto, look * 2
    return stop
