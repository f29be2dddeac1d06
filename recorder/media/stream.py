"""One direction of RTP turned into PCM on a timeline, with DTMF and quality counters.

Packets are fed in arrival order. A small reorder buffer puts them back in sequence order
(RFC 3550 §5.1 sequence numbers, extended past 16-bit wrap-around as in Appendix A.1);
each packet is then placed on the stream's timeline by its RTP timestamp, so that a lost
packet, a comfort-noise pause (RFC 3389) or a telephone-event (RFC 4733) becomes silence
of exactly the length the timestamps say. Where timestamps disagree with the arrival
clock (a new SSRC, a sender that restarts its timestamps, a hold during which the
timestamps stood still) the timeline follows the arrival clock instead, so the two
directions of a call stay aligned. The rules are written out in docs/audio.md.

Output is a list of PcmChunk(offset, pcm) per feed: PCM16 little-endian mono at the codec's
sample rate, `offset` in samples from the stream's first packet. Chunks never overlap and
offsets only grow; a gap between chunks (longer than `max_fill`) is silence the writer
pads. Memory is bounded by the reorder window: nothing else is kept per packet.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from recorder.media.bulk import (
    G711_TABLES,
    HEADER_BYTES,
    PLAIN_FIRST_OCTET,
    BlockHeaders,
    g711_types,
)
from recorder.media.codecs import (
    SAMPLE_BYTES,
    Codec,
    Decoder,
    MalformedPayload,
    PayloadFormat,
    PayloadKind,
    UndecodableCodec,
    payload_formats,
    repeat_samples,
    rtpmap_of,
)
from recorder.media.rtp import RTCP_PACKET_TYPES, RtpDecodeError, RtpPacket, parse_rtp

# RFC 3550 Appendix A.1: a forward jump beyond MAX_DROPOUT or a step back beyond
# MAX_MISORDER is a restarted sender, not loss or reordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32
# Sequence numbers remembered after playing them, to tell a duplicate from a late packet.
RECENT_SEQUENCES = 64
# Arrival times outside this range (seconds) are clock garbage, not capture times.
LATEST_ARRIVAL = 1e11

# RFC 4733 §3.2: events 0-9, *, #, A-D are the DTMF digits.
DTMF_DIGITS = "0123456789*#ABCD"
TELEPHONE_EVENT = struct.Struct("!BBH")


class PcmChunk(NamedTuple):
    offset: int
    pcm: bytes

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_BYTES


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A telephone-event digit (RFC 4733): start and duration in seconds on the timeline."""

    digit: str
    start: float
    duration: float
    volume: int  # dBm0 below zero, RFC 4733 §2.3.4


@dataclass(slots=True)
class StreamQuality:
    """Per-direction counters. `received` counts distinct packets, late ones included."""

    expected: int = 0
    received: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    late: int = 0
    jitter: float = 0.0  # RFC 3550 §6.4.1, in timestamp units
    clock_rate: int = 8000
    ssrc_changes: int = 0
    sequence_restarts: int = 0
    timestamp_jumps: int = 0
    comfort_noise: int = 0
    telephone_events: int = 0
    malformed: int = 0
    strays: int = 0
    silence_samples: int = 0
    not_rtp: Counter[str] = field(default_factory=Counter)
    undecodable: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        """RFC 3550 §6.4.1 cumulative number of packets lost: expected minus received."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate


class _Buffered(NamedTuple):
    arrival: float
    packet: RtpPacket


@dataclass(slots=True)
class _Source:
    """Sequence state of one synchronization source (RFC 3550 Appendix A.1)."""

    ssrc: int
    lowest: int
    highest: int
    next_release: int | None = None
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_SEQUENCES))
    last_arrival: tuple[float, int] | None = None  # (arrival, timestamp) for jitter
    stray: _Buffered | None = None

    def extend(self, sequence: int) -> int:
        """The extended sequence number nearest the highest seen, across 16-bit wrap."""
        step = (sequence - self.highest + SEQUENCE_MODULO // 2) % SEQUENCE_MODULO
        return self.highest + step - SEQUENCE_MODULO // 2


@dataclass(slots=True)
class _Anchor:
    """Where the last audio or CN packet sat: its RTP timestamp, timeline tick and arrival."""

    timestamp: int
    tick: int
    arrival: float


@dataclass(slots=True)
class _OpenEvent:
    key: tuple[int, int]
    event: int
    tick: int
    duration: int
    volume: int


def signed32(value: int) -> int:
    """A timestamp difference modulo 2**32 as the nearest signed value."""
    value %= TIMESTAMP_MODULO
    return value - TIMESTAMP_MODULO if value >= TIMESTAMP_MODULO // 2 else value


class StreamDecoder:
    """Decodes one direction of a call's RTP. Not thread-safe; one per MediaStream.

    `payload_types` is the SDP's map, e.g. ((0, "PCMU/8000"), (101, "telephone-event/8000")),
    overlaying RFC 3551's static types. `reorder_window` (seconds) and `reorder_packets`
    bound how long and how many packets wait for a missing one. `jump_limit` and
    `stall_limit` (seconds) are how far timestamps may run ahead of, or fall behind, the
    arrival clock before the timeline follows the arrival clock. Gaps up to `max_fill`
    seconds are emitted as silence bytes; longer ones are left as a jump in offset for the
    writer to pad, so a long hold costs no memory.
    """

    def __init__(
        self,
        payload_types: Iterable[tuple[int, str]] = (),
        *,
        reorder_window: float = 0.1,
        reorder_packets: int = 16,
        jump_limit: float = 1.0,
        stall_limit: float = 5.0,
        max_fill: float = 2.0,
    ) -> None:
        rtpmap = rtpmap_of(payload_types)
        self.formats = payload_formats(rtpmap)
        # Which payload types are G.711, as bulk.BlockHeaders asks (shared, read-only).
        self.g711_types = g711_types(rtpmap)
        self.reorder_window = reorder_window
        self.reorder_packets = max(1, reorder_packets)
        self.jump_limit = jump_limit
        self.stall_limit = stall_limit
        self.max_fill = max_fill
        self.quality = StreamQuality()
        self.codec: Codec | None = None
        self.clock_rate: int | None = None
        self.started_at: float | None = None
        self.decoders: dict[int, Decoder] = {}
        self.buffer: dict[int, _Buffered] = {}
        self.source: _Source | None = None
        self.anchor: _Anchor | None = None
        self.reanchor = False
        self.end_sample = 0
        self.last_arrival = 0.0
        self.open_event: _OpenEvent | None = None
        self.ended_events: deque[tuple[int, int]] = deque(maxlen=8)
        self.dtmf: list[DtmfEvent] = []
        # The PCM rate of the output, when the caller knows it before the stream (a finished
        # call's log, scanned first): a codec at a lower rate that divides it is upsampled
        # to it, so a call that changes codec (PCMU, then G.722) keeps all its audio.
        self.output_rate: int | None = None

    @property
    def sample_rate(self) -> int | None:
        """The PCM rate of the output: `output_rate`, else fixed by the first audio packet;
        None until a packet was decoded."""
        if self.codec is None:
            return None
        return self.output_rate or self.codec.sample_rate

    def take_dtmf(self) -> list[DtmfEvent]:
        """DTMF events completed since the last call, each exactly once."""
        events, self.dtmf = self.dtmf, []
        return events

    # --- arrival order -----------------------------------------------------------------

    def feed(self, at: float, datagram: bytes) -> list[PcmChunk]:
        """One UDP payload of this direction, in arrival order; PCM now placeable."""
        at = self._arrival(at)
        try:
            packet = parse_rtp(datagram)
        except RtpDecodeError as error:
            self.quality.not_rtp[error.kind] += 1
            return []
        chunks, accepted = self._follow_source(_Buffered(at, packet))
        for buffered in accepted:
            self._accept(buffered)
        return chunks + self._release(at)

    def feed_block(self, arrivals: array, lengths: array, data: bytes) -> list[PcmChunk]:
        """A log block of this direction (recorder/media/rtplog.py), in arrival order."""
        return self.feed_headers(BlockHeaders(arrivals, lengths, data))

    def feed_headers(self, headers: BlockHeaders) -> list[PcmChunk]:
        """A log block of this direction, its headers read (bulk.BlockHeaders).

        The result is exactly that of feed() on each packet: a packet that continues the
        stream just as the decoder expects (see _takes_stretch) starts a stretch that is
        decoded in one step, as far as bulk.BlockHeaders.links says its successors follow
        it; every other packet goes through feed().
        """
        limits = (-self.stall_limit * 8000, self.jump_limit * 8000)
        breaks = [*np.flatnonzero(~headers.links(self.g711_types, limits)).tolist(), len(headers)]
        chunks: list[PcmChunk] = []
        index = 0
        if self.source is None and self._starts_in_order(headers):
            # The first packet is played now, not after the reorder window: nothing that
            # arrives in the window comes before it, so waiting would play the same.
            chunks += self.feed(*headers.packet(0)) + self._drain()
            index = 1
        while index < len(headers):
            if self._takes_stretch(headers, index):
                end = breaks[bisect_right(breaks, index)]
                chunks += self._play_stretch(headers, index, end)
                index = end
            else:
                chunks += self.feed(*headers.packet(index))
                index += 1
        return chunks

    def _starts_in_order(self, headers: BlockHeaders) -> bool:
        """Whether the block opens the stream in order: every packet up to the first that
        arrives a reorder window after the first (which feed() would release them at)
        plain RTP of one SSRC, each the next sequence number, arriving in turn."""
        arrivals = headers.arrivals
        if not len(arrivals) or not 0.0 <= arrivals[0] < LATEST_ARRIVAL:
            return False
        # The same float steps as _due(): now - oldest >= reorder_window.
        after = np.flatnonzero(arrivals - arrivals[0] >= self.reorder_window)
        if not len(after):
            return False  # the window goes on past the block: the next may reorder it
        end = int(after[0]) + 1
        sequence = headers.sequence[:end]
        second = headers.second[:end]
        # The arrays' own .all() and slices' differences: np.all and np.diff cost more in
        # their Python wrappers than in the arithmetic, on a window's few packets.
        return bool(
            (headers.lengths[:end] > HEADER_BYTES).all()
            and (headers.first[:end] == PLAIN_FIRST_OCTET).all()
            and ((second < RTCP_PACKET_TYPES.start) | (second >= RTCP_PACKET_TYPES.stop)).all()
            and (headers.ssrc[:end] == headers.ssrc[0]).all()
            and ((sequence[1:] - sequence[:-1]) % SEQUENCE_MODULO == 1).all()
            and (arrivals[1:end] >= arrivals[: end - 1]).all()
            and arrivals[end - 1] < LATEST_ARRIVAL
        )

    def tick(self, now: float) -> list[PcmChunk]:
        """Time passed without a packet: release what waited longer than the window."""
        return self._release(self._arrival(now))

    def flush(self) -> list[PcmChunk]:
        """The stream ended: play everything still buffered and close an open DTMF event."""
        chunks = self._drain()
        self._close_event()
        return chunks

    def _arrival(self, at: float) -> float:
        if 0.0 <= at < LATEST_ARRIVAL:
            self.last_arrival = at
        return self.last_arrival

    def _follow_source(self, arrived: _Buffered) -> tuple[list[PcmChunk], list[_Buffered]]:
        """Which packets go on to the reorder buffer, after following the source.

        A new SSRC (RFC 3550 §8.2) starts a fresh source at once. A sequence number far
        from the last (Appendix A.1: beyond MAX_DROPOUT ahead or MAX_MISORDER behind) is
        held aside; only when the next packet follows it is the sender taken to have
        restarted its sequence, otherwise it was a stray and is dropped.
        """
        packet, source = arrived.packet, self.source
        if source is None:
            self._new_source(packet)
            return [], [arrived]
        if packet.ssrc != source.ssrc:
            chunks = self._drain()
            self._close_event()
            self.quality.ssrc_changes += 1
            self.reanchor = True
            self._new_source(packet)
            return chunks, [arrived]
        step = source.extend(packet.sequence) - source.highest
        if -MAX_MISORDER <= step <= MAX_DROPOUT:
            self._drop_stray(source)
            return [], [arrived]
        stray = source.stray
        if stray is None or packet.sequence != (stray.packet.sequence + 1) % SEQUENCE_MODULO:
            self._drop_stray(source)
            source.stray = arrived
            return [], []
        chunks = self._drain()
        self.quality.sequence_restarts += 1
        self._new_source(stray.packet)
        return chunks, [stray, arrived]

    def _new_source(self, packet: RtpPacket) -> None:
        self.source = _Source(packet.ssrc, packet.sequence, packet.sequence)
        self.quality.expected += 1

    def _drop_stray(self, source: _Source) -> None:
        if source.stray is not None:
            source.stray = None
            self.quality.strays += 1

    def _accept(self, arrived: _Buffered) -> None:
        """Count the packet and buffer it, unless it is a duplicate or came too late."""
        source, quality = self.source, self.quality
        assert source is not None
        sequence = source.extend(arrived.packet.sequence)
        if sequence in self.buffer or sequence in source.recent:
            quality.duplicated += 1
            return
        quality.received += 1
        self._measure_jitter(source, arrived.arrival, arrived.packet)
        if source.next_release is not None and sequence < source.next_release:
            # Its place was already played (declared lost): counted, not played.
            quality.out_of_order += 1
            quality.late += 1
            source.recent.append(sequence)
            return
        self._count_expected(source, sequence)
        self.buffer[sequence] = arrived

    def _count_expected(self, source: _Source, sequence: int) -> None:
        """RFC 3550 A.3: expected is the span of extended sequence numbers received."""
        quality = self.quality
        if sequence > source.highest:
            quality.expected += sequence - source.highest
            source.highest = sequence
            return
        if sequence < source.highest:
            quality.out_of_order += 1
        if sequence < source.lowest:
            quality.expected += source.lowest - sequence
            source.lowest = sequence

    def _measure_jitter(self, source: _Source, at: float, packet: RtpPacket) -> None:
        """RFC 3550 §6.4.1 / A.8: J += (|D(i-1,i)| - J) / 16, in timestamp units.

        Telephone-events are left out: all packets of one event carry its start timestamp.
        """
        packet_format = self.formats[packet.payload_type]
        if packet_format.kind is PayloadKind.TELEPHONE_EVENT:
            return
        previous, source.last_arrival = source.last_arrival, (at, packet.timestamp)
        if previous is None:
            return
        clock = self.quality.clock_rate = packet_format.clock_rate
        transit_change = (at - previous[0]) * clock - signed32(packet.timestamp - previous[1])
        self.quality.jitter += (abs(transit_change) - self.quality.jitter) / 16

    # --- regular stretches in bulk ------------------------------------------------------

    def _takes_stretch(self, headers: BlockHeaders, index: int) -> bool:
        """Whether packet `index` is exactly what feed() would play at once, gap-free:
        the next sequence number of the current source, nothing waiting in the reorder
        buffer, the same G.711 codec, and a timestamp that lands on the end of the audio
        emitted so far with an arrival the timestamps agree with."""
        source, anchor, codec = self.source, self.anchor, self.codec
        if self.buffer or source is None or anchor is None or codec is None or self.reanchor:
            return False
        if source.stray is not None or source.last_arrival is None:
            return False
        second, arrival = int(headers.second[index]), float(headers.arrivals[index])
        if headers.lengths[index] <= HEADER_BYTES or headers.first[index] != PLAIN_FIRST_OCTET:
            return False
        found = self.formats.get(second)
        if found is None or found.codec is not codec or codec.name not in G711_TABLES:
            return False
        if int(headers.ssrc[index]) != source.ssrc or source.next_release != source.highest + 1:
            return False
        if source.extend(int(headers.sequence[index])) != source.highest + 1:
            return False
        if not 0.0 <= arrival < LATEST_ARRIVAL or self.clock_rate != 8000:
            return False
        if self.sample_rate != 8000:
            return False  # G.711 upsampled into a wideband call: packet by packet
        by_timestamp = signed32(int(headers.timestamp[index]) - anchor.timestamp)
        if anchor.tick + by_timestamp != self.end_sample:
            return False
        return self._agrees(by_timestamp, (arrival - anchor.arrival) * 8000, 8000)

    def _play_stretch(self, headers: BlockHeaders, start: int, end: int) -> list[PcmChunk]:
        """Packets start..end-1, each the regular successor of the one before: counted,
        measured and placed as feed() would, one after the other, with no gap."""
        source, quality = self.source, self.quality
        assert source is not None and self.codec is not None
        count = end - start
        arrivals = headers.arrivals[start:end]
        timestamps = headers.timestamp[start:end]
        quality.received += count
        quality.expected += count
        quality.clock_rate = 8000
        self._stretch_jitter(source, arrivals, timestamps)
        first = source.highest + 1
        source.highest += count
        source.next_release = source.highest + 1
        source.recent.extend(range(max(first, source.highest + 1 - RECENT_SEQUENCES),
                                   source.highest + 1))  # fmt: skip
        source.last_arrival = (float(arrivals[-1]), int(timestamps[-1]))
        self.last_arrival = float(arrivals[-1])
        pcm = headers.pcm(start, end, self.codec.name)
        begin = self.end_sample
        samples = int(headers.lengths[start]) - HEADER_BYTES
        self.end_sample = begin + count * samples
        self.anchor = _Anchor(int(timestamps[-1]), self.end_sample - samples, float(arrivals[-1]))
        return [PcmChunk(begin, pcm)]

    def _stretch_jitter(
        self, source: _Source, arrivals: np.ndarray, timestamps: np.ndarray
    ) -> None:
        """RFC 3550 A.8 over the stretch, in the same floating-point steps as
        _measure_jitter so that both give the same figure to the last bit."""
        assert source.last_arrival is not None
        previous_arrival, previous_timestamp = source.last_arrival
        first = (float(arrivals[0]) - previous_arrival) * 8000 - signed32(
            int(timestamps[0]) - previous_timestamp
        )
        # Within a stretch each timestamp step is one packet's samples, modulo 2**32.
        steps = np.diff(arrivals) * 8000 - np.diff(timestamps) % TIMESTAMP_MODULO
        jitter = self.quality.jitter
        jitter += (abs(first) - jitter) / 16
        for change in np.abs(steps).tolist():
            jitter += (change - jitter) / 16
        self.quality.jitter = jitter

    # --- sequence order ----------------------------------------------------------------

    def _release(self, now: float) -> list[PcmChunk]:
        chunks: list[PcmChunk] = []
        while self.buffer and self._due(now):
            chunks += self._play_lowest()
        return chunks

    def _due(self, now: float) -> bool:
        source = self.source
        if source is not None and source.next_release in self.buffer:
            return True
        if len(self.buffer) > self.reorder_packets:
            return True
        oldest = min(buffered.arrival for buffered in self.buffer.values())
        return now - oldest >= self.reorder_window

    def _drain(self) -> list[PcmChunk]:
        chunks: list[PcmChunk] = []
        while self.buffer:
            chunks += self._play_lowest()
        return chunks

    def _play_lowest(self) -> list[PcmChunk]:
        """Play the lowest buffered sequence number; anything below it is lost for good."""
        sequence = min(self.buffer)
        arrival, packet = self.buffer.pop(sequence)
        source = self.source
        assert source is not None
        source.next_release = sequence + 1
        source.recent.append(sequence)
        return self._place(arrival, packet)

    def _place(self, at: float, packet: RtpPacket) -> list[PcmChunk]:
        packet_format = self.formats[packet.payload_type]
        if self.clock_rate is None and packet_format.kind is not PayloadKind.UNDECODABLE:
            self.clock_rate = packet_format.clock_rate
        if packet_format.kind is PayloadKind.UNDECODABLE:
            self.quality.undecodable[packet_format.name] += 1
        elif packet_format.clock_rate != self.clock_rate:
            self.quality.undecodable[f"{packet_format.name}/{packet_format.clock_rate}"] += 1
        elif packet_format.kind is PayloadKind.TELEPHONE_EVENT:
            self._telephone_event(at, packet)
        elif packet_format.kind is PayloadKind.COMFORT_NOISE:
            # RFC 3389: the noise level is not audio worth keeping; the pause it opens
            # becomes silence when the next audio packet says how long it lasted.
            self.quality.comfort_noise += 1
            self._advance(at, packet.timestamp)
        else:
            return self._audio(at, packet, packet_format)
        return []

    # --- the timeline ------------------------------------------------------------------

    def _advance(self, at: float, timestamp: int) -> int:
        """The timeline tick of an audio or CN packet, and the new anchor."""
        anchor = self.anchor
        if anchor is None:
            self.started_at = at
            tick = 0
        else:
            tick = self._tick_of(anchor, at, timestamp)
        self.anchor = _Anchor(timestamp, tick, at)
        self.reanchor = False
        return tick

    def _tick_of(self, anchor: _Anchor, at: float, timestamp: int) -> int:
        assert self.clock_rate is not None
        by_timestamp = signed32(timestamp - anchor.timestamp)
        by_arrival = (at - anchor.arrival) * self.clock_rate
        if self.reanchor or not self._agrees(by_timestamp, by_arrival, self.clock_rate):
            if not self.reanchor:
                self.quality.timestamp_jumps += 1
            return anchor.tick + round(by_arrival)
        return anchor.tick + by_timestamp

    def _agrees(self, by_timestamp: int, by_arrival: float, clock: int) -> bool:
        """Whether the timestamps may be trusted over the arrival clock for this step.

        Timestamps running ahead of the clock by more than `jump_limit` are a jump (a
        sender that restarted its timestamps); the clock running ahead by more than
        `stall_limit` is a hold or outage during which the timestamps stood still. Within
        those, the difference is network delay: a stall followed by a burst keeps the
        sender's timing (seen in rtpparsing-forensic.pcap: 1.9 s stall, then 2 s of
        audio in 0.1 s).
        """
        ahead = by_timestamp - by_arrival
        return -self.stall_limit * clock <= ahead <= self.jump_limit * clock

    def _audio(self, at: float, packet: RtpPacket, packet_format: PayloadFormat) -> list[PcmChunk]:
        codec = packet_format.codec
        assert codec is not None
        rate = self.output_rate or (self.codec or codec).sample_rate
        if codec.sample_rate != rate and (rate % codec.sample_rate or not self.output_rate):
            # Another rate than the stream's, with no output rate that takes both.
            before = self.codec.name if self.codec else f"{rate} Hz"
            self.quality.undecodable[f"{codec.name} after {before}"] += 1
            return []
        pcm = self._decode(packet, codec)
        if pcm is None:
            return []
        if codec.sample_rate != rate:
            pcm = repeat_samples(pcm, rate // codec.sample_rate)
        self.codec = codec
        per_tick = rate // packet_format.clock_rate
        start = self._advance(at, packet.timestamp) * per_tick
        if start < self.end_sample:
            # Timestamps stepped back into audio already played: append, and let the
            # next packets follow this one rather than the stepped-back clock.
            start = self.end_sample
            assert self.anchor is not None
            self.anchor.tick = -(-start // per_tick)
        return self._emit(start, pcm)

    def _decode(self, packet: RtpPacket, codec: Codec) -> bytes | None:
        try:
            decoder = self.decoders.get(packet.payload_type)
            if decoder is None:
                decoder = self.decoders[packet.payload_type] = codec.new_decoder()
            return decoder.decode(packet.payload)
        except UndecodableCodec as error:
            self.quality.undecodable[error.name] += 1
        except MalformedPayload:
            self.quality.malformed += 1
        return None

    def _emit(self, start: int, pcm: bytes) -> list[PcmChunk]:
        """PCM at `start`, after exact silence back to the end of what was emitted."""
        gap = start - self.end_sample
        self.quality.silence_samples += gap
        self.end_sample = start + len(pcm) // SAMPLE_BYTES
        assert self.codec is not None
        if 0 < gap <= self.max_fill * self.sample_rate:
            return [PcmChunk(start - gap, self.codec.silence(gap) + pcm)]
        return [PcmChunk(start, pcm)] if pcm else []

    # --- RFC 4733 telephone-events -----------------------------------------------------

    def _telephone_event(self, at: float, packet: RtpPacket) -> None:
        """Every packet of an event carries its start timestamp and the duration so far;
        the end bit closes it, and its three retransmissions are ignored (RFC 4733 §2.5.1)."""
        self.quality.telephone_events += 1
        if len(packet.payload) < TELEPHONE_EVENT.size:
            self.quality.malformed += 1
            return
        event, flags, duration = TELEPHONE_EVENT.unpack_from(packet.payload)
        key = (packet.ssrc, packet.timestamp)
        if key in self.ended_events or event >= len(DTMF_DIGITS):
            return
        if self.open_event is not None and self.open_event.key != key:
            self._close_event()
        if self.open_event is None:
            tick = self._event_tick(at, packet.timestamp, duration)
            self.open_event = _OpenEvent(key, event, tick, duration, flags & 0x3F)
        self.open_event.duration = max(self.open_event.duration, duration)
        if flags & 0x80:
            self.ended_events.append(key)
            self._close_event()

    def _event_tick(self, at: float, timestamp: int, duration: int) -> int:
        """An event's start on the timeline: by its timestamp when that agrees with the
        arrival clock (the packet arrives `duration` after the start), else by arrival."""
        anchor = self.anchor
        clock = self.clock_rate or 8000
        if anchor is None:
            # The stream opens with an event already `duration` old: its start is tick 0.
            self.started_at = at - duration / clock
            self.anchor = anchor = _Anchor(timestamp, 0, self.started_at)
        by_timestamp = signed32(timestamp - anchor.timestamp)
        by_arrival = (at - anchor.arrival) * clock - duration
        if not self._agrees(by_timestamp, by_arrival, clock):
            return max(0, anchor.tick + round(by_arrival))
        return max(0, anchor.tick + by_timestamp)

    def _close_event(self) -> None:
        event, self.open_event = self.open_event, None
        if event is None:
            return
        clock = self.clock_rate or 8000
        self.dtmf.append(
            DtmfEvent(
                digit=DTMF_DIGITS[event.event],
                start=event.tick / clock,
                duration=event.duration / clock,
                volume=-event.volume,
            )
        )
