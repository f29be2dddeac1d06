"""The waveform of the player (issue 6, section 2): computed once when a recording is
finalised, per channel, from the finished file, and backfilled by a command."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile
from django.core.management import call_command

from qms.lib.jsontext import TextKeepingEncoder, WithJSON, int8_list_text
from recorder.capture.synthesis import write_pcap
from recorder.models import Recording
from recorder.recordings import waveform
from recorder.recordings.waveform import UnreadableAudio, compute_peaks, peaks_of, peaks_or_none
from tests.recorder.playback.support import build_world
from tests.recorder.recordings.test_recording_hold import media, signalling


def stereo_wav(left: np.ndarray, right: np.ndarray, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.column_stack([left, right]).astype("<i2").tobytes())
    return buffer.getvalue()


def loud_buckets(channel: dict, threshold: int = 8) -> list[int]:
    return [
        index
        for index, (low, high) in enumerate(zip(channel["min"], channel["max"], strict=True))
        if max(-low, high) > threshold
    ]


def test_each_bucket_holds_the_minimum_and_maximum_of_its_slice_per_channel() -> None:
    left = np.zeros(10_000, dtype=np.int16)
    right = np.zeros(10_000, dtype=np.int16)
    left[2_500] = 32767  # bucket 250 of 1000 (10 frames each)
    left[2_501] = -32768
    right[9_999] = -12_800  # the last bucket
    peaks = compute_peaks(io.BytesIO(stereo_wav(left, right)), "wav")
    assert (peaks["version"], peaks["sample_rate"], peaks["frames"]) == (1, 8000, 10_000)
    assert peaks["buckets"] == 1000
    agent, far_party = peaks["channels"]
    assert loud_buckets(agent) == [250]
    assert (agent["max"][250], agent["min"][250]) == (127, -128)
    assert loud_buckets(far_party) == [999]
    assert far_party["min"][999] == -50


def test_frames_that_do_not_divide_evenly_all_count() -> None:
    samples = np.zeros((1003, 1), dtype=np.int16)
    samples[1002, 0] = 25_600  # the very last frame lands in the last bucket
    peaks = peaks_of(samples, 8000, buckets=10)
    assert peaks["buckets"] == 10
    assert peaks["channels"][0]["max"] == [0] * 9 + [100]


@pytest.mark.parametrize("frames, channels", [(1, 1), (999, 2), (32_000, 2), (160_001, 1)])
def test_the_text_written_to_the_row_reads_back_as_the_peaks(frames: int, channels: int) -> None:
    samples = np.random.default_rng(frames).integers(-32768, 32768, (frames, channels))
    samples[0] = (-32768, 32767)[:channels]  # the extremes of both ends
    peaks = peaks_of(samples.astype(np.int16), 8000)
    assert isinstance(peaks, WithJSON)
    assert json.loads(peaks.text) == json.loads(json.dumps(dict(peaks)))
    assert json.dumps(peaks, cls=TextKeepingEncoder) == peaks.text
    assert json.dumps({"other": [1, 2]}, cls=TextKeepingEncoder) == '{"other": [1, 2]}'


def test_int8_text_takes_only_an_int8_array() -> None:
    assert int8_list_text(np.array([], dtype=np.int8)) == "[]"
    assert int8_list_text(np.array([-128, 0, 127], dtype=np.int8)) == "[-128,0,127]"
    with pytest.raises(TypeError, match="int8 array, not int16"):
        int8_list_text(np.array([128], dtype=np.int16))


def test_a_file_shorter_than_the_buckets_gets_one_bucket_per_frame() -> None:
    samples = np.array([[256, -256], [512, 0], [0, 0]], dtype=np.int16)
    peaks = peaks_of(samples, 8000)
    assert peaks["buckets"] == 3
    assert peaks["channels"][0]["max"] == [1, 2, 0]
    assert peaks["channels"][1]["min"] == [-1, 0, 0]
    empty = peaks_of(np.zeros((0, 2), dtype=np.int16), 8000)
    assert empty["buckets"] == 0 and empty["channels"] == [{"min": [], "max": []}] * 2


def test_reading_in_blocks_gives_the_peaks_of_reading_at_once(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    left = rng.integers(-32768, 32767, 12_345, dtype=np.int16)
    right = rng.integers(-32768, 32767, 12_345, dtype=np.int16)
    wav = stereo_wav(left, right)
    at_once = peaks_of(np.column_stack([left, right]), 8000)
    # Blocks that end inside slices, on slice edges, and shorter than a slice.
    for block_frames in (1000, 37, 5):
        monkeypatch.setattr(waveform, "BLOCK_FRAMES", block_frames)
        assert compute_peaks(io.BytesIO(wav), "wav") == at_once, block_frames


def test_a_truncated_wav_draws_what_it_has_and_silence_after() -> None:
    left = np.full(10_000, 12_800, dtype=np.int16)
    wav = stereo_wav(left, left)
    peaks = compute_peaks(io.BytesIO(wav[: 44 + 4 * 5_000]), "wav")  # half the frames
    assert peaks["frames"] == 10_000
    agent = peaks["channels"][0]
    assert agent["max"][:500] == [50] * 500
    assert agent["max"][500:] == [0] * 500 and agent["min"][500:] == [0] * 500


def test_what_is_not_audio_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UnreadableAudio):
        compute_peaks(io.BytesIO(b"RIFF but not really a wave file"), "wav")
    with pytest.raises(UnreadableAudio):
        compute_peaks(io.BytesIO(b"OggS nothing"), "opus")
    with pytest.raises(UnreadableAudio):
        compute_peaks(io.BytesIO(b""), "rtp")
    assert peaks_or_none(tmp_path / "gone.wav", "wav") is None


def test_opus_is_read_through_soundfile(tmp_path: Path) -> None:
    rate = 16000
    tone = (12_000 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.int16)
    silence = np.zeros(rate, dtype=np.int16)
    path = tmp_path / "call.opus"
    soundfile.write(path, np.column_stack([tone, silence]), rate, format="OGG", subtype="OPUS")
    peaks = compute_peaks(path, "opus")
    assert peaks["sample_rate"] == rate
    agent, far_party = peaks["channels"]
    assert len(loud_buckets(agent)) > 900  # a second of tone, every bucket
    assert loud_buckets(far_party) == []


@pytest.mark.django_db(transaction=True)
def test_the_recorder_stores_the_waveform_of_both_channels_once_finalised(
    tmp_path: Path,
) -> None:
    # The hold call: the caller speaks in seconds 0-1, the callee answers in seconds 12-13.
    capture = tmp_path / "hold.pcap"
    write_pcap(capture, sorted(signalling() + media(), key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())
    recording = Recording.objects.get()
    peaks = recording.peaks
    assert peaks is not None and peaks["buckets"] == 1000
    assert peaks == compute_peaks(Path(recording.file.path), "wav")
    seconds_per_bucket = recording.duration_seconds / peaks["buckets"]
    agent, far_party = peaks["channels"]
    agent_seconds = {int(index * seconds_per_bucket) for index in loud_buckets(agent)}
    far_seconds = {int(index * seconds_per_bucket) for index in loud_buckets(far_party)}
    assert agent_seconds == {0, 1}
    assert far_seconds == {12, 13}


@pytest.mark.django_db
def test_the_command_backfills_missing_waveforms_and_survives_a_missing_file() -> None:
    world = build_world()
    Path(world.recording_b.file.path).unlink()
    output, errors = io.StringIO(), io.StringIO()
    call_command("compute_peaks", stdout=output, stderr=errors)
    assert "Waveforms computed: 2; audio unreadable: 1." in output.getvalue()
    assert f"recording {world.recording_b.pk}" in errors.getvalue()
    world.recording_a.refresh_from_db()
    assert world.recording_a.peaks["frames"] == 1000  # tone_wav() is 1000 mono frames
    assert len(world.recording_a.peaks["channels"]) == 1
    world.recording_b.refresh_from_db()
    assert world.recording_b.peaks is None
    again = io.StringIO()
    call_command("compute_peaks", stdout=again, stderr=io.StringIO())
    assert "Waveforms computed: 0; audio unreadable: 1." in again.getvalue()


@pytest.mark.django_db
def test_the_command_recomputes_every_waveform_only_when_asked() -> None:
    world = build_world()
    Recording.objects.update(peaks={"stale": True})
    call_command("compute_peaks", stdout=io.StringIO())
    world.recording_a.refresh_from_db()
    assert world.recording_a.peaks == {"stale": True}
    output = io.StringIO()
    call_command("compute_peaks", "--all", stdout=output)
    assert "Waveforms computed: 3; audio unreadable: 0." in output.getvalue()
    world.recording_a.refresh_from_db()
    assert world.recording_a.peaks["frames"] == 1000
