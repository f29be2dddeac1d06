"""A call's audio while the call goes on, decoded from its RTP log for live listening.

The capture process appends each call's packets to its log and writes them out once a
second (recorder/media/rtplog.py). A LiveDecoder, in the capture node's worker, never in
the capture process, reads the complete blocks written since its last read and decodes
them with the same StreamDecoder a finished call goes through, so what a supervisor hears
live is what the recording will hold: reordering, loss concealment, codecs. It starts near
the end of the log (a listener joins the call now, not at its start) and hands back the
call's timeline as stereo PCM16, the agent on the left and the far party on the right, up to
a little behind the newest packet: the decoder may still be holding packets back to put
them in order (its reorder window).

Nothing of this touches the per-packet path: it is a reader of the log like finishing,
and the log is the only thing the two processes share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from integrations.observations import Side
from recorder.media.bulk import BlockHeaders
from recorder.media.rtplog import LogBlock, read_blocks_from, tail_offset
from recorder.media.stream import PcmChunk, StreamDecoder

# How much of the call a listener gets when they join: the last seconds already logged.
JOIN_SECONDS = 2.0
# How far behind the newest packet the timeline is handed out: the decoder's reorder
# window (0.1 s) and a margin, so that a packet put back in order is still in time.
HOLD_SECONDS = 0.25
# The most a read hands out at once: a listener who fell behind skips ahead instead.
MOST_SECONDS = 10.0
AGENT, FAR_PARTY = 0, 1  # the stereo channels, as in the recordings


@dataclass(frozen=True)
class LiveAudio:
    """Frames `first` to `first + frames` of the call's live timeline, interleaved stereo
    PCM16 little-endian at `rate`."""

    first: int
    rate: int
    pcm: bytes

    @property
    def frames(self) -> int:
        return len(self.pcm) // 4


@dataclass
class _Direction:
    channel: int
    decoder: StreamDecoder
    # Where the direction's first packet falls on the timeline, in frames.
    base: int | None = None


@dataclass
class LiveDecoder:
    """The live timeline of the call whose log is `spool`. `local` is the agent's side:
    what it receives is the far party's voice. `payload_types` are each receiving side's
    SDP map, as a finished call's decoders get them; `rate` the timeline's."""

    spool: Path
    local: Side
    payload_types: dict[Side, tuple[tuple[int, str], ...]]
    rate: int = 8000
    offset: int | None = None
    # The arrival time at frame 0, the newest arrival read, and the frames handed out.
    start: float | None = None
    newest: float = 0.0
    sent: int = 0
    late_frames: int = 0
    directions: dict[Side, _Direction] = field(init=False)
    pending: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        far = self.local.other
        self.directions = {
            far: _Direction(AGENT, self._decoder(far)),
            self.local: _Direction(FAR_PARTY, self._decoder(self.local)),
        }
        self.pending = np.zeros((0, 2), dtype="<i2")

    def _decoder(self, side: Side) -> StreamDecoder:
        decoder = StreamDecoder(self.payload_types.get(side, ()))
        decoder.output_rate = self.rate
        return decoder

    def read(self) -> LiveAudio | None:
        """What the log holds now past what was handed out; None when nothing new is
        ready. FileNotFoundError once the log is gone (the call was finished)."""
        if self.offset is None:
            self.offset = tail_offset(self.spool, JOIN_SECONDS + HOLD_SECONDS)
        blocks, self.offset = read_blocks_from(self.spool, self.offset)
        self._decode(blocks)
        if self.start is None:
            return None
        until = round((self.newest - self.start - HOLD_SECONDS) * self.rate)
        return self._take(until)

    def _decode(self, blocks: list[LogBlock]) -> None:
        found = [(block, _headers(block)) for block in blocks]
        firsts = [self._first_rtp(block, headers) for block, headers in found]
        firsts = [arrival for arrival in firsts if arrival is not None]
        if self.start is None and firsts:
            self.start = min(firsts)
        for block, headers in found:
            direction = self.directions[block.receiver]
            first = self._first_rtp(block, headers)
            if first is None and direction.base is None:
                continue  # no RTP yet on this direction (a keepalive): nothing to place
            if direction.base is None:
                direction.base = round((first - self.start) * self.rate)
            self.newest = max(self.newest, block.arrivals[-1])
            self._place(direction, direction.decoder.feed_headers(headers))
        for direction in self.directions.values():
            if direction.base is not None:
                self._place(direction, direction.decoder.tick(self.newest))

    @staticmethod
    def _first_rtp(block: LogBlock, headers: BlockHeaders) -> float | None:
        index, _types = headers.payload_types()
        return None if index is None else block.arrivals[index]

    def _place(self, direction: _Direction, chunks: list[PcmChunk]) -> None:
        """Decoded PCM on the timeline, past what was handed out; earlier audio (a packet
        later than the hold) is dropped and counted."""
        for chunk in chunks:
            samples = np.frombuffer(chunk.pcm, dtype="<i2")
            at = direction.base + chunk.offset - self.sent
            if at < 0:
                self.late_frames += min(len(samples), -at)
                samples, at = samples[-at:], 0
            end = at + len(samples)
            if end > len(self.pending):
                grown = np.zeros((end, 2), dtype="<i2")
                grown[: len(self.pending)] = self.pending
                self.pending = grown
            self.pending[at:end, direction.channel] = samples

    def _take(self, until: int) -> LiveAudio | None:
        """The timeline's frames up to `until`, gaps as silence; a listener more than
        MOST_SECONDS behind skips to the newest of them."""
        if until <= self.sent:
            return None
        skipped = max(0, until - self.sent - round(MOST_SECONDS * self.rate))
        self.pending = self.pending[skipped:]
        self.sent += skipped
        frames = until - self.sent
        out = np.zeros((frames, 2), dtype="<i2")
        kept = min(frames, len(self.pending))
        out[:kept] = self.pending[:kept]
        self.pending = self.pending[kept:]
        audio = LiveAudio(self.sent, self.rate, out.tobytes())
        self.sent = until
        return audio


def _headers(block: LogBlock) -> BlockHeaders:
    return BlockHeaders(block.arrivals, block.lengths, block.data)
