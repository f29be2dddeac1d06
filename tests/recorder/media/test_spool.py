"""The call spool and the finished file: real bytes on disk, parsed back with `wave`."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tracemalloc
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.media import spool as spool_module
from recorder.media.spool import (
    CallSpool,
    Channel,
    MemorySpool,
    SpoolFullError,
    finalize,
)
from tests.conftest import mounted_tmpfs


def pattern(channel: int, start: int, count: int) -> bytes:
    """Sample k of a channel is a function of k alone, so what a spool holds can be checked
    from how far it got."""
    return array(
        "h", (((k * 31 + channel * 12345) % 65535) - 32767 for k in range(start, start + count))
    ).tobytes()


def pcm(*samples: int) -> bytes:
    return array("h", samples).tobytes()


def read_stereo(path: Path) -> tuple[list[int], list[int], wave.Wave_read]:
    with wave.open(str(path), "rb") as reader:
        assert reader.getnchannels() == 2
        assert reader.getsampwidth() == 2
        frames = array("h", reader.readframes(reader.getnframes()))
    return list(frames[0::2]), list(frames[1::2]), reader


def wav_params(path: Path) -> tuple[int, int]:
    with wave.open(str(path), "rb") as reader:
        return reader.getframerate(), reader.getnframes()


# -- writing and finishing -------------------------------------------------------------------


def test_agent_is_left_and_far_party_is_right_in_the_finished_wav(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path / "spool", "a84b4c76e66710@pc33", 8000)
    spool.write(Channel.AGENT, 0, pcm(1, 2, 3))
    spool.write(Channel.FAR_PARTY, 0, pcm(-1, -2, -3))
    spool.write(Channel.AGENT, 3, pcm(4, 5))
    spool.write(1, 3, pcm(-4, -5))

    audio = spool.finalize(tmp_path / "out" / "call.wav")

    left, right, reader = read_stereo(audio.path)
    assert left == [1, 2, 3, 4, 5]
    assert right == [-1, -2, -3, -4, -5]
    assert reader.getframerate() == 8000
    assert audio.sample_rate == 8000
    assert audio.duration_seconds == pytest.approx(5 / 8000)


def test_gaps_are_silence_and_late_writes_overwrite(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path, "gap", 8000)
    spool.write(Channel.AGENT, 0, pcm(1, 1, 1, 1))
    spool.write(Channel.AGENT, 10, pcm(7, 7))
    spool.write(Channel.AGENT, 2, pcm(9, 9, 9))  # late, overlaps the first write

    audio = spool.finalize(tmp_path / "gap.wav")

    left, right, _ = read_stereo(audio.path)
    assert left == [1, 1, 9, 9, 9, 0, 0, 0, 0, 0, 7, 7]
    assert right == [0] * 12


def test_the_shorter_channel_is_padded_with_silence(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path, "uneven", 8000)
    spool.write(Channel.AGENT, 0, pcm(5, 6))
    spool.write(Channel.FAR_PARTY, 0, pcm(1, 2, 3, 4, 5, 6))

    left, right, _ = read_stereo(spool.finalize(tmp_path / "uneven.wav").path)

    assert left == [5, 6, 0, 0, 0, 0]
    assert right == [1, 2, 3, 4, 5, 6]


def test_a_call_without_any_audio_gives_an_empty_but_valid_wav(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path, "silent", 8000)
    audio = spool.finalize(tmp_path / "silent.wav")
    assert wav_params(audio.path) == (8000, 0)
    assert audio.size == 44
    assert audio.duration_seconds == 0


def test_sha256_size_and_header_describe_the_file_on_disk(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path, "hash", 16000)
    spool.write(Channel.AGENT, 0, pattern(0, 0, 40000))  # several finalize blocks
    spool.write(Channel.FAR_PARTY, 123, pattern(1, 0, 39000))

    audio = spool.finalize(tmp_path / "hash.wav")

    raw = audio.path.read_bytes()
    assert audio.sha256 == hashlib.sha256(raw).hexdigest()
    assert audio.size == len(raw) == 44 + 40000 * 4
    assert raw[:4] == b"RIFF" and int.from_bytes(raw[4:8], "little") == len(raw) - 8
    assert int.from_bytes(raw[40:44], "little") == 40000 * 4
    left, right, _ = read_stereo(audio.path)
    assert array("h", left).tobytes() == pattern(0, 0, 40000)
    assert array("h", right).tobytes() == bytes(246) + pattern(1, 0, 39000) + bytes(877 * 2)
    assert audio.duration_seconds == pytest.approx(2.5)


def test_finalize_removes_the_spool_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path / "spool", "tidy", 8000)
    spool.write(Channel.AGENT, 0, pcm(1))
    spool.finalize(tmp_path / "out" / "tidy.wav")

    assert list((tmp_path / "spool").iterdir()) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tidy.wav"]


def test_finalize_by_directory_works_without_the_spool_object(tmp_path: Path) -> None:
    with CallSpool.create(tmp_path, "by-dir", 8000) as spool:
        spool.write(Channel.FAR_PARTY, 1, pcm(3))
    left, right, _ = read_stereo(finalize(spool.directory, tmp_path / "d.wav").path)
    assert (left, right) == ([0, 0], [0, 3])


def test_the_manifest_names_the_call_rate_channels_and_metadata(tmp_path: Path) -> None:
    call_id = "3848276298220188511@atlanta.example.com/../x"
    spool = CallSpool.create(tmp_path, call_id, 8000, metadata={"extension": "9001"})

    manifest = json.loads((spool.directory / "manifest.json").read_text())

    assert spool.directory.parent == tmp_path  # a hostile Call-ID cannot climb out
    assert manifest["call_id"] == call_id
    assert manifest["sample_rate"] == 8000
    assert manifest["channels"]["left"]["party"] == "agent"
    assert manifest["channels"]["right"]["party"] == "far_party"
    assert manifest["metadata"] == {"extension": "9001"}
    assert manifest["created_at"].endswith("+00:00")
    spool.close()


def test_metadata_that_json_cannot_hold_is_refused_before_anything_is_made(
    tmp_path: Path,
) -> None:
    with pytest.raises(TypeError):
        CallSpool.create(tmp_path / "spool", "bad-metadata", 8000, metadata={"at": object()})
    assert not (tmp_path / "spool").exists()


def test_the_same_call_id_twice_gets_two_spools(tmp_path: Path) -> None:
    first = CallSpool.create(tmp_path, "same", 8000)
    second = CallSpool.create(tmp_path, "same", 8000)
    assert first.directory != second.directory
    first.close()
    second.close()


def test_an_8khz_side_is_upsampled_into_a_16khz_spool_by_sample_repetition(
    tmp_path: Path,
) -> None:
    spool = CallSpool.create(tmp_path, "g722-g711", 16000)
    spool.write(Channel.AGENT, 0, pcm(10, 20, 30, 40), sample_rate=16000)  # G.722
    spool.write(Channel.FAR_PARTY, 1, pcm(-5, 7), sample_rate=8000)  # G.711 from 1/8000 s

    left, right, reader = read_stereo(spool.finalize(tmp_path / "mixed.wav").path)

    assert reader.getframerate() == 16000
    assert left == [10, 20, 30, 40, 0, 0]
    assert right == [0, 0, -5, -5, 7, 7]


@pytest.mark.parametrize("rate", [32000, 12000, 0])
def test_it_refuses_a_rate_it_cannot_upsample_from(tmp_path: Path, rate: int) -> None:
    spool = CallSpool.create(tmp_path, "rates", 16000)
    with pytest.raises(ValueError, match="cannot put"):
        spool.write(Channel.AGENT, 0, pcm(1), sample_rate=rate)
    spool.close()


def test_it_refuses_odd_bytes_and_negative_offsets(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path, "bad", 8000)
    with pytest.raises(ValueError, match="even number"):
        spool.write(Channel.AGENT, 0, b"\x01\x02\x03")
    with pytest.raises(ValueError, match="negative"):
        spool.write(Channel.AGENT, -1, pcm(1))
    with pytest.raises(ValueError):
        spool.write(2, 0, pcm(1))
    spool.close()


def tone(frequency: float, rate: int, count: int, amplitude: int = 12000) -> bytes:
    return array(
        "h", (round(amplitude * math.sin(2 * math.pi * frequency * k / rate)) for k in range(count))
    ).tobytes()


def correlation(a: list[float], b: list[float]) -> float:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cross = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    norm = math.sqrt(sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b))
    return cross / norm


@pytest.mark.parametrize("rate", [8000, 16000])
def test_opus_output_keeps_each_side_on_its_channel_and_is_much_smaller(
    tmp_path: Path, rate: int
) -> None:
    soundfile = pytest.importorskip("soundfile")
    seconds = 3
    agent, far = tone(440, rate, rate * seconds), tone(1000, rate, rate * seconds - 800)
    spool = CallSpool.create(tmp_path / "spool", "opus", rate)
    spool.write(Channel.AGENT, 0, agent)
    spool.write(Channel.FAR_PARTY, 800, far)

    audio = spool.finalize(tmp_path / "call.ogg", format="opus")

    raw = audio.path.read_bytes()
    assert raw[:4] == b"OggS" and b"OpusHead" in raw[:100]
    assert audio.sha256 == hashlib.sha256(raw).hexdigest() and audio.size == len(raw)
    assert (audio.sample_rate, audio.duration_seconds) == (rate, seconds)
    # Measured 5.9x (8 kHz) and 8.6x (16 kHz) smaller than the WAV at libsndfile's defaults.
    assert audio.size * 4 < 44 + rate * seconds * 4
    decoded, decoded_rate = soundfile.read(str(audio.path), dtype="int16")
    assert decoded_rate == rate and len(decoded) == rate * seconds
    skip = rate // 50  # the codec's first 20 ms settle
    left, right = decoded[:, 0].tolist(), decoded[:, 1].tolist()
    assert correlation(left[skip:], list(array("h", agent))[skip:]) >= 0.99
    assert correlation(right[800 + skip :], list(array("h", far))[skip:]) >= 0.99
    # Silence before the far side speaks (short of the codec's pre-echo just before it).
    assert max(abs(v) for v in right[: 800 - 80]) < 100


def test_opus_refuses_a_rate_it_cannot_encode_and_leaves_the_spool(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path / "spool", "cd", 44100)
    spool.close()
    with pytest.raises(ValueError, match="Opus cannot encode 44100 Hz"):
        finalize(spool.directory, tmp_path / "x.ogg", format="opus")
    assert (spool.directory / "manifest.json").exists()


def test_an_unknown_format_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path / "spool", "mp3", 8000)
    spool.close()
    with pytest.raises(ValueError, match="unknown audio format 'mp3'"):
        finalize(spool.directory, tmp_path / "x.mp3", format="mp3")
    assert sorted(p.name for p in spool.directory.iterdir()) == [
        "left.pcm",
        "manifest.json",
        "right.pcm",
    ]


def test_a_buffered_spool_coalesces_writes_and_flushes_them(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path, "buffered", 8000, buffer_bytes=1024)
    for chunk in range(3):
        spool.write(Channel.AGENT, chunk * 160, pattern(0, chunk * 160, 160))
    assert (spool.directory / "left.pcm").stat().st_size == 0  # 960 bytes still buffered

    spool.write(Channel.AGENT, 10_000, pcm(1))  # not contiguous: the buffer goes first

    assert (spool.directory / "left.pcm").read_bytes()[:960] == pattern(0, 0, 480)
    left, _, _ = read_stereo(spool.finalize(tmp_path / "b.wav").path)
    assert left[:480] == list(array("h", pattern(0, 0, 480)))
    assert left[10_000] == 1


# -- a torn write ---------------------------------------------------------------------------


def test_a_torn_last_write_is_cut_to_whole_samples(tmp_path: Path) -> None:
    spool = CallSpool.create(tmp_path / "spool", "torn", 8000)
    spool.write(Channel.AGENT, 0, pcm(1, 2, 3))
    spool.write(Channel.FAR_PARTY, 0, pcm(4, 5))
    spool.close()
    with open(spool.directory / "left.pcm", "ab") as left_file:
        left_file.write(b"\x07")  # half of a fourth sample, as a kill mid-write may leave

    left, right, _ = read_stereo(finalize(spool.directory, tmp_path / "torn.wav").path)

    assert (left, right) == ([1, 2, 3], [4, 5, 0])


# -- disk full -------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KB filesystem, so 'disk full' is the kernel's ENOSPC and not a mock."""
    with mounted_tmpfs(tmp_path / "tmpfs", "256k") as mount_point:
        yield mount_point


def fill_up(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(4096))
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_drops_the_write_keeps_what_was_there_and_recovers(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    spool = CallSpool.create(small_tmpfs / "spool", "full", 8000)
    before = pattern(0, 0, 4000)  # 8000 bytes: the last page has room for a short write
    spool.write(Channel.AGENT, 0, before)
    filler = fill_up(small_tmpfs)

    with pytest.raises(SpoolFullError) as raised:
        spool.write(Channel.AGENT, 4000, pattern(0, 4000, 4000))

    assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
    assert raised.value.dropped_samples == 4000
    assert (spool.dropped_samples, spool.failed_writes) == (4000, 1)
    assert (spool.directory / "left.pcm").read_bytes() == before  # short write undone

    filler.unlink()
    spool.write(Channel.AGENT, 8000, pattern(0, 8000, 1000))
    spool.write(Channel.FAR_PARTY, 0, pcm(9))
    left, right, _ = read_stereo(spool.finalize(tmp_path / "full.wav").path)

    expected = pattern(0, 0, 4000) + bytes(8000) + pattern(0, 8000, 1000)
    assert array("h", left).tobytes() == expected
    assert right[:2] == [9, 0]


def test_finalize_on_a_full_disk_keeps_the_spool_for_another_try(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    spool = CallSpool.create(tmp_path / "spool", "full-archive", 8000)
    spool.write(Channel.AGENT, 0, pattern(0, 0, 80000))  # 320 KB stereo: more than fits
    spool.close()

    with pytest.raises(SpoolFullError):
        finalize(spool.directory, small_tmpfs / "archive.wav")

    assert list(small_tmpfs.iterdir()) == []  # no torn file left in the archive
    assert (spool.directory / "left.pcm").stat().st_size == 160000
    audio = finalize(spool.directory, tmp_path / "archive.wav")
    assert wav_params(audio.path) == (8000, 80000)


def test_a_short_write_then_enospc_is_undone_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same failure as on the tmpfs, forced at an exact byte so it runs anywhere."""
    spool = CallSpool.create(tmp_path, "simulated", 8000)
    spool.write(Channel.AGENT, 0, pcm(1, 2))
    real_pwrite, calls = os.pwrite, []

    def pwrite_until_full(fd: int, data: memoryview, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 1:
            return real_pwrite(fd, bytes(data[:3]), offset)  # a short, torn write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "pwrite", pwrite_until_full)
    with pytest.raises(SpoolFullError):
        spool.write(Channel.AGENT, 2, pcm(3, 4, 5))
    monkeypatch.undo()

    assert (spool.directory / "left.pcm").read_bytes() == pcm(1, 2)
    spool.write(Channel.AGENT, 5, pcm(6))
    assert read_stereo(spool.finalize(tmp_path / "s.wav").path)[0] == [1, 2, 0, 0, 0, 6]


def test_other_write_errors_are_not_mistaken_for_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = CallSpool.create(tmp_path, "eio", 8000)

    def broken_disk(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module.os, "pwrite", broken_disk)
    with pytest.raises(OSError) as raised:
        spool.write(Channel.AGENT, 0, pcm(1))
    assert not isinstance(raised.value, SpoolFullError)
    monkeypatch.undo()
    spool.close()


def test_opus_on_a_full_disk_raises_spool_full_and_keeps_the_spool(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    pytest.importorskip("soundfile")
    spool = CallSpool.create(tmp_path / "spool", "opus-full", 16000)
    spool.write(Channel.AGENT, 0, pattern(0, 0, 16000 * 60))  # noise: Opus cannot shrink it
    spool.close()
    fill_up(small_tmpfs)

    with pytest.raises(SpoolFullError):
        finalize(spool.directory, small_tmpfs / "call.ogg", format="opus")

    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]
    assert (spool.directory / "manifest.json").exists()


# -- memory ----------------------------------------------------------------------------------


def write_an_hour(spool: CallSpool) -> None:
    """Ten minutes in 20 ms packets (where a per-packet leak would show: 60,000 writes), the
    rest in one-second blocks so that the test stays quick under tracemalloc."""
    packet, block = pattern(0, 0, 160), pattern(1, 0, 8000)
    for index in range(10 * 60 * 50):
        spool.write(Channel.AGENT, index * 160, packet)
        spool.write(Channel.FAR_PARTY, index * 160, packet)
    for second in range(10 * 60, 60 * 60):
        spool.write(Channel.AGENT, second * 8000, block)
        spool.write(Channel.FAR_PARTY, second * 8000, block)


def test_an_hour_of_audio_is_written_and_finalized_in_bounded_memory(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        spool = CallSpool.create(tmp_path / "spool", "hour", 8000)
        write_an_hour(spool)
        spool.close()
        _, writing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        audio = finalize(spool.directory, tmp_path / "hour.wav")
        _, finalize_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Measured about 40 KB and 230 KB; the limits leave room, a leak of 60,000 packets not.
    assert writing_peak < 128 * 1024, writing_peak
    assert finalize_peak < 512 * 1024, finalize_peak
    assert audio.duration_seconds == 3600
    assert audio.size == 44 + 3600 * 8000 * 4
    assert audio.size == audio.path.stat().st_size


@pytest.mark.parametrize("in_memory", [True, False])
def test_writes_the_kernel_cuts_short_still_give_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """A write(2) may take fewer bytes than it was given: what is left is written next, so
    the file is the one whole writes give, byte for byte."""

    def finished(name: str) -> bytes:
        if in_memory:
            spool = MemorySpool(tmp_path / f"{name}-pcm", name, 8000, {})
        else:
            spool = CallSpool.create(tmp_path / f"{name}-spool", name, 8000)
        spool.write(Channel.AGENT, 0, pattern(0, 0, 70000))
        spool.write(Channel.FAR_PARTY, 100, pattern(1, 0, 50000))
        audio = spool.finalize(tmp_path / f"{name}.wav")
        data = audio.path.read_bytes()
        assert audio.sha256 == hashlib.sha256(data).hexdigest() and audio.size == len(data)
        return data

    whole = finished("whole")
    real_writev, sizes = os.writev, []

    def writev_at_most_a_few_bytes(fd: int, buffers: list) -> int:
        taken = bytes(buffers[0])[:1021]  # never the whole of a part, never past the first
        sizes.append(len(taken))
        return real_writev(fd, [taken])

    monkeypatch.setattr(spool_module.os, "writev", writev_at_most_a_few_bytes)
    assert finished("cut") == whole
    assert len(sizes) > 200 and max(sizes) == 1021
