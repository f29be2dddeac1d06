"""A call's log decoded while it is written (recorder/media/live.py): what a listener hears
is the audio the phones sent, each side on its channel, at its place, whatever the reads'
timing against the writer's flushes; a block being written is never read half; a listener
who joins late starts near now."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

from integrations.observations import Side
from recorder.media.live import HOLD_SECONDS, JOIN_SECONDS, LiveDecoder
from recorder.media.rtplog import BLOCK_HEADER, RtpLog, read_blocks_from
from tests.recorder.media.rtp_build import FRAME, PCMA, rtp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
START = 1_700_000_000.0
PAYLOAD_TYPES = ((PCMA, "PCMA/8000"),)
# The caller is the agent: what the callee receives is the agent's voice (left channel).
AGENT_SENDS_TO, FAR_PARTY_SENDS_TO = Side.CALLEE, Side.CALLER


def voice(seed: int, packets: int) -> list[bytes]:
    """A-law payloads of random code words: every 20 ms differs, so a misplaced packet shows."""
    generator = np.random.default_rng(seed)
    return [generator.integers(0, 256, FRAME, dtype=np.uint8).tobytes() for _ in range(packets)]


def pcm_of(payloads: list[bytes]) -> np.ndarray:
    return np.frombuffer(audioop.alaw2lin(b"".join(payloads), 2), dtype="<i2")


class Call:
    """Both phones talking for `seconds`, logged as the capture does: a flush a second."""

    def __init__(self, tmp_path: Path, seconds: int) -> None:
        self.path = tmp_path / f"{int(START)}-call.rtp"
        self.log = RtpLog(self.path, {"call_id": "live-1", "protocol": "sip", "started_at": START})
        self.packets = seconds * 50
        self.agent = voice(1, self.packets)
        self.far_party = voice(2, self.packets)
        self.sent = 0

    def talk(self, seconds: float) -> None:
        """The next `seconds` of both voices, the far party 5 ms behind the agent."""
        for index in range(self.sent, min(self.packets, self.sent + int(seconds * 50))):
            at = START + index * 0.02
            self.log.append(at, AGENT_SENDS_TO, rtp(index, index * FRAME, self.agent[index]))
            packet = rtp(index, index * FRAME, self.far_party[index], ssrc=7)
            self.log.append(at + 0.005, FAR_PARTY_SENDS_TO, packet)
            self.sent = index + 1
        self.log.flush()

    def decoder(self) -> LiveDecoder:
        types = {Side.CALLER: PAYLOAD_TYPES, Side.CALLEE: PAYLOAD_TYPES}
        return LiveDecoder(self.path, Side.CALLER, types, RATE)


def heard(decoder: LiveDecoder, reads: list) -> tuple[int, np.ndarray]:
    """The first frame handed out and the stereo frames, from consecutive reads."""
    pieces = [audio for audio in reads if audio is not None]
    for earlier, later in itertools.pairwise(pieces):
        assert earlier.first + earlier.frames == later.first, "the reads must follow on"
    frames = np.frombuffer(b"".join(audio.pcm for audio in pieces), dtype="<i2").reshape(-1, 2)
    return pieces[0].first, frames


def test_a_listener_from_the_start_hears_each_side_on_its_channel_sample_for_sample(
    tmp_path: Path,
) -> None:
    call = Call(tmp_path, seconds=8)
    decoder = call.decoder()
    reads = []
    for _second in range(8):
        call.talk(1.0)
        reads.append(decoder.read())
    first, frames = heard(decoder, reads)
    assert first == 0
    # Everything up to the hold behind the newest packet is handed out.
    newest = (call.packets - 1) * 0.02 + 0.005
    assert len(frames) == round((newest - HOLD_SECONDS) * RATE)
    agent, far_party = pcm_of(call.agent), pcm_of(call.far_party)
    assert np.array_equal(frames[:, 0], agent[: len(frames)])
    # The far party's packets arrive 5 ms later: their audio starts 40 frames in.
    assert not frames[:40, 1].any()
    assert np.array_equal(frames[40:, 1], far_party[: len(frames) - 40])
    assert decoder.late_frames == 0


def test_reads_between_and_within_flushes_hear_the_same(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    once, often = Call(tmp_path / "a", seconds=6), Call(tmp_path / "b", seconds=6)
    whole, parts = once.decoder(), often.decoder()
    once.talk(6.0)
    whole_reads = [whole.read()]
    part_reads = []
    for _step in range(12):
        often.talk(0.5)
        part_reads.append(parts.read())
        part_reads.append(parts.read())  # nothing new: None
    assert part_reads[1] is None
    _first, all_at_once = heard(whole, whole_reads)
    _first, in_parts = heard(parts, part_reads)
    assert np.array_equal(in_parts, all_at_once)


def test_a_block_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    call = Call(tmp_path, seconds=3)
    call.talk(1.0)
    written = call.path.read_bytes()
    call.talk(1.0)
    grown = call.path.read_bytes()
    # The log as a reader may find it while the capture's write is under way.
    torn = tmp_path / "torn.rtp"
    torn.write_bytes(grown[: len(written) + BLOCK_HEADER.size + 100])
    blocks, offset = read_blocks_from(torn, 0)
    assert offset == len(written)
    assert sum(len(block.lengths) for block in blocks) == 100  # the first second, both sides
    with torn.open("ab") as rest:
        rest.write(grown[len(torn.read_bytes()) :])
    more, end = read_blocks_from(torn, offset)
    assert end == len(grown)
    assert sum(len(block.lengths) for block in more) == 100


def test_a_listener_who_joins_late_starts_near_now_with_the_same_audio(tmp_path: Path) -> None:
    call = Call(tmp_path, seconds=20)
    for _second in range(15):
        call.talk(1.0)
    decoder = call.decoder()
    audio = decoder.read()
    # It starts at most a couple of flushes before the join window, not at the call's start.
    joined_at = decoder.start - START
    assert 15 - JOIN_SECONDS - HOLD_SECONDS - 2.0 <= joined_at <= 15 - JOIN_SECONDS
    frames = np.frombuffer(audio.pcm, dtype="<i2").reshape(-1, 2)
    offset = round(joined_at * RATE)
    assert np.array_equal(frames[:, 0], pcm_of(call.agent)[offset : offset + len(frames)])


def test_a_finished_call_s_log_gone_is_said_as_such(tmp_path: Path) -> None:
    call = Call(tmp_path, seconds=2)
    call.talk(2.0)
    decoder = call.decoder()
    assert decoder.read() is not None
    call.path.unlink()
    with pytest.raises(FileNotFoundError):
        decoder.read()
