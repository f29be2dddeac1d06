"""The waveform the player draws: per-channel minimum and maximum over equal slices of time.

Computed once, when a recording is finalised (recorder/recordings/finish.py) or by the
`compute_peaks` command for recordings made before, and kept in Recording.peaks, so the
recording page never reads the audio to draw it. The shape of what is stored::

    {"version": 1, "sample_rate": 8000, "frames": 160000, "buckets": 1000,
     "channels": [{"min": [-12, ...], "max": [15, ...]}, {"min": [...], "max": [...]}]}

Values are the PCM16 samples scaled to -128..127 (the high byte): plenty for a picture a
thousand pixels wide, and a quarter of the JSON. Channel 0 is the agent (left), channel 1
the far party (right), as in the file.

The file is read in blocks of BLOCK_FRAMES, so a four-hour call costs a few megabytes of
memory, not a gigabyte; a 20 s call is one block, a fraction of a millisecond.
"""

from __future__ import annotations

import json
import logging
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from qms.lib.jsontext import WithJSON, int8_list_text
from recorder.models import Recording
from recorder.recordings.encryption import stored_audio

log = logging.getLogger(__name__)

PEAKS_VERSION = 1
# About one bucket per pixel of a wide player; a 20 s call gets one per 20 ms.
BUCKETS = 1000
# Formats with audio to draw; "rtp" (an undecodable call kept raw) has none.
DRAWABLE_FORMATS = ("wav", "opus")
PCM16_TO_BYTE = 8  # -32768..32767 >> 8 is -128..127
BLOCK_FRAMES = 1 << 20  # 4 MiB of stereo PCM16 at a time

AudioSource = Path | str | IO[bytes]


class UnreadableAudio(ValueError):
    """The file is not audio this module can read (not PCM16 WAV, Opus, or truncated)."""


def compute_peaks(source: AudioSource, audio_format: str = "wav") -> dict:
    """The peaks of a finished recording file, read from a path or an open binary file."""
    if audio_format == "wav":
        return _wav_peaks(source)
    if audio_format == "opus":
        return _soundfile_peaks(source)
    raise UnreadableAudio(f"no waveform for {audio_format!r} audio")


def peaks_of(samples: np.ndarray, sample_rate: int, buckets: int = BUCKETS) -> WithJSON:
    """Peaks of interleaved PCM16 frames shaped (frames, channels), all in memory."""
    frames, channels = samples.shape
    return _peaks([samples], frames, channels, sample_rate, buckets)


class PeaksBuilder:
    """Peaks of stereo PCM16 as it is written (a recorder.media.spool.BlockObserver): the
    finished file need not be read back to draw it. `peaks` is None until begin()."""

    def __init__(self, buckets: int = BUCKETS) -> None:
        self.buckets = buckets
        self.frames = self.rate = self.seen = 0
        self.starts = self.lows = self.highs = None

    def begin(self, frames: int, sample_rate: int) -> None:
        self.frames, self.rate, self.seen = frames, sample_rate, 0
        count = min(self.buckets, frames)
        self.starts = (np.arange(count, dtype=np.int64) * frames) // max(count, 1)
        self.lows = np.full((2, count), np.iinfo(np.int16).max, dtype=np.int16)
        self.highs = np.full((2, count), np.iinfo(np.int16).min, dtype=np.int16)

    def block(self, stereo: bytes) -> None:
        frames = np.frombuffer(stereo, dtype="<i2").reshape(-1, 2)
        _fold(frames, self.seen, self.starts, self.lows, self.highs)
        self.seen += len(frames)

    @property
    def peaks(self) -> dict | None:
        if self.starts is None:
            return None
        return _result(self.lows, self.highs, self.frames, self.rate)


def peaks_for_recording(recording: Recording) -> dict | None:
    """The peaks of a stored recording's file; None when it has no audio to draw."""
    if not recording.file or recording.audio_format not in DRAWABLE_FORMATS:
        return None
    with stored_audio(recording).reader() as audio:
        return compute_peaks(audio, recording.audio_format)


def peaks_or_none(path: Path | str, audio_format: str) -> dict | None:
    """For the recorder: a waveform that cannot be computed must not cost the recording."""
    try:
        return compute_peaks(path, audio_format)
    except (OSError, UnreadableAudio):
        log.exception("no waveform for %s: its audio could not be read", path)
        return None


def _peaks(
    blocks: Iterable[np.ndarray], frames: int, channels: int, sample_rate: int, buckets: int
) -> dict:
    count = min(buckets, frames)
    # Equal slices of time, the last one taking the remainder.
    starts = (np.arange(count, dtype=np.int64) * frames) // max(count, 1)
    lows = np.full((channels, count), np.iinfo(np.int16).max, dtype=np.int16)
    highs = np.full((channels, count), np.iinfo(np.int16).min, dtype=np.int16)
    first_frame = 0
    for block in blocks:
        _fold(block, first_frame, starts, lows, highs)
        first_frame += len(block)
    return _result(lows, highs, frames, sample_rate)


def _result(lows: np.ndarray, highs: np.ndarray, frames: int, sample_rate: int) -> WithJSON:
    # Slices a truncated file never reached are drawn as silence.
    unread = lows > highs
    lows[unread] = highs[unread] = 0
    # The high byte of each sample: -128..127, an int8 exactly.
    scaled = [(lows >> PCM16_TO_BYTE).astype(np.int8), (highs >> PCM16_TO_BYTE).astype(np.int8)]
    channels = list(zip(*scaled, strict=True))
    head = {"version": PEAKS_VERSION, "sample_rate": sample_rate, "frames": frames,
            "buckets": lows.shape[1]}  # fmt: skip
    peaks = {**head, "channels": [{"min": low.tolist(), "max": high.tolist()}
                                  for low, high in channels]}  # fmt: skip
    # The row's text, written from the arrays: json.dumps of the lists costs ten times more.
    listed = ", ".join(
        f'{{"min": {int8_list_text(low)}, "max": {int8_list_text(high)}}}' for low, high in channels
    )
    return WithJSON(peaks, f'{json.dumps(head)[:-1]}, "channels": [{listed}]}}')


def _fold(
    block: np.ndarray, first_frame: int, starts: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> None:
    """Merge one block of frames into the slices it overlaps."""
    if not len(block) or not len(starts):
        return
    last_frame = first_frame + len(block) - 1
    first = int(np.searchsorted(starts, first_frame, side="right")) - 1
    last = int(np.searchsorted(starts, last_frame, side="right")) - 1
    offsets = np.maximum(starts[first : last + 1], first_frame) - first_frame
    # One contiguous row per channel: reduceat then runs over memory in order (SIMD), and
    # on int32 twice as fast as on int16 (numpy 2's loops), the copy made in one step.
    by_channel = np.array(block.T, dtype=np.int32, order="C")
    low, high = lows[:, first : last + 1], highs[:, first : last + 1]  # views, updated in place
    np.minimum(low, np.minimum.reduceat(by_channel, offsets, axis=1), out=low)
    np.maximum(high, np.maximum.reduceat(by_channel, offsets, axis=1), out=high)


def _wav_peaks(source: AudioSource) -> dict:
    try:
        with wave.open(str(source) if isinstance(source, Path) else source, "rb") as reader:
            if reader.getsampwidth() != 2:
                raise UnreadableAudio("only 16-bit PCM WAV is drawn")
            channels, rate, frames = (
                reader.getnchannels(),
                reader.getframerate(),
                reader.getnframes(),
            )
            return _peaks(_wav_blocks(reader, channels), frames, channels, rate, BUCKETS)
    except (wave.Error, EOFError) as error:
        raise UnreadableAudio(f"not a readable WAV file: {error}") from error


def _wav_blocks(reader: wave.Wave_read, channels: int) -> Iterator[np.ndarray]:
    while data := reader.readframes(BLOCK_FRAMES):
        whole = len(data) // (2 * channels) * channels
        yield np.frombuffer(data, dtype="<i2", count=whole).reshape(-1, channels)


def _soundfile_peaks(source: AudioSource) -> dict:
    # Imported here: libsndfile loads only in a process that meets Opus.
    import soundfile

    try:
        with soundfile.SoundFile(source) as audio:
            blocks = audio.blocks(BLOCK_FRAMES, dtype="int16", always_2d=True)
            return _peaks(blocks, audio.frames, audio.channels, audio.samplerate, BUCKETS)
    except soundfile.LibsndfileError as error:
        raise UnreadableAudio(f"not a readable Opus file: {error}") from error
