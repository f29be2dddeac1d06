"""MemorySpool, a call's audio put together in memory, against CallSpool, the disk spool it
stands in for: the same writes must give the same finished file, byte for byte, whether
the audio stayed in memory or spilled to disk part-way (past its limit, or for Opus)."""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder.lib.files import read_json
from recorder.media.spool import (
    CallSpool,
    Channel,
    FinishedAudio,
    MemorySpool,
)
from recorder.recordings.waveform import PeaksBuilder


@dataclass(frozen=True)
class Write:
    """One call of write(): samples of `channel` placed at `offset`, at `rate` (None: the
    spool's own)."""

    channel: int
    offset: int
    pcm: bytes
    rate: int | None = None


@dataclass
class Finished:
    audio: FinishedAudio
    data: bytes
    peaks: dict


def pcm(*samples: int) -> bytes:
    return array("h", samples).tobytes()


def random_writes(seed: int, spool_rate: int) -> list[Write]:
    """Writes as a decoder makes them and worse: in order with gaps, late and overlapping
    rewrites, far jumps ahead then back, each channel ending elsewhere; into a 16 kHz spool
    some at 8 kHz, to be upsampled. Every write holds at least one sample."""
    generator = random.Random(seed)
    writes, ends = [], [0, 0]
    for _ in range(generator.randint(1, 40)):
        channel = generator.randrange(2)
        rate = generator.choice([None, spool_rate, 8000]) if spool_rate == 16000 else None
        factor = spool_rate // rate if rate else 1
        end = ends[channel] // factor
        offset = generator.choice([
            end,  # straight on
            end + generator.randint(1, 400),  # after a gap
            max(0, end - generator.randint(1, 300)),  # late, over what is there
            generator.randint(0, max(end, 1)),  # anywhere before
            end + generator.randint(2000, 9000),  # far ahead
        ])  # fmt: skip
        count = generator.randint(1, 500)
        writes.append(Write(channel, offset, generator.randbytes(2 * count), rate))
        ends[channel] = max(ends[channel], (offset + count) * factor)
    return writes


def written(spool: MemorySpool | CallSpool, writes: list[Write]) -> None:
    for write in writes:
        spool.write(write.channel, write.offset, write.pcm, sample_rate=write.rate)


def finished(spool: MemorySpool | CallSpool, destination: Path, format: str = "wav") -> Finished:
    peaks = PeaksBuilder()
    audio = spool.finalize(destination, format, peaks)
    return Finished(audio, destination.read_bytes(), peaks.peaks)


def from_memory(
    root: Path, writes: list[Write], rate: int, destination: Path, limit: int | None = None
) -> Finished:
    options = {} if limit is None else {"limit": limit}
    spool = MemorySpool(root, "call-1@pbx", rate, {"timeline_start": 1.5}, **options)
    written(spool, writes)
    return finished(spool, destination)


def from_disk(root: Path, writes: list[Write], rate: int, destination: Path) -> Finished:
    spool = CallSpool.create(root, "call-1@pbx", rate, {"timeline_start": 1.5})
    written(spool, writes)
    return finished(spool, destination)


def assert_same_file(memory: Finished, disk: Finished) -> None:
    assert memory.data == disk.data
    assert (memory.audio.sha256, memory.audio.size) == (disk.audio.sha256, disk.audio.size)
    assert memory.audio.duration_seconds == disk.audio.duration_seconds
    assert memory.audio.sample_rate == disk.audio.sample_rate
    assert memory.audio.sha256 == hashlib.sha256(memory.data).hexdigest()
    assert memory.audio.size == len(memory.data)
    assert memory.peaks == disk.peaks


def spool_folders(root: Path) -> list[Path]:
    return [entry for entry in root.iterdir() if entry.is_dir()] if root.exists() else []


# -- the same file as the disk spool ----------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("seed", range(20))
def test_random_writes_in_memory_give_the_disk_spools_wav_byte_for_byte(
    tmp_path: Path, seed: int, rate: int
) -> None:
    writes = random_writes(seed, rate)
    memory = from_memory(tmp_path / "memory", writes, rate, tmp_path / "memory.wav")
    disk = from_disk(tmp_path / "disk", writes, rate, tmp_path / "disk.wav")
    assert_same_file(memory, disk)
    assert memory.audio.size > 44 and memory.peaks["frames"] > 0
    # All in memory: no spool folder was made for it.
    assert not (tmp_path / "memory").exists()


def test_an_8khz_write_into_a_16khz_spool_is_repeated_sample_by_sample(tmp_path: Path) -> None:
    spool = MemorySpool(tmp_path / "spool", "g722-g711", 16000, {})
    spool.write(Channel.AGENT, 0, pcm(10, 20, 30, 40), sample_rate=16000)
    spool.write(Channel.FAR_PARTY, 1, pcm(-5, 7), sample_rate=8000)
    audio = spool.finalize(tmp_path / "mixed.wav")
    frames = array("h", audio.path.read_bytes()[44:])
    assert list(frames[0::2]) == [10, 20, 30, 40, 0, 0]
    assert list(frames[1::2]) == [0, 0, -5, -5, 7, 7]
    assert (audio.sample_rate, audio.duration_seconds) == (16000, 6 / 16000)


def test_a_spool_never_written_gives_the_disk_spools_empty_wav(tmp_path: Path) -> None:
    memory = from_memory(tmp_path / "memory", [], 8000, tmp_path / "memory.wav")
    disk = from_disk(tmp_path / "disk", [], 8000, tmp_path / "disk.wav")
    assert_same_file(memory, disk)
    assert memory.audio.size == 44 and memory.audio.duration_seconds == 0


def test_a_wav_longer_than_one_finalize_block_is_the_same(tmp_path: Path) -> None:
    # 40,000 frames: the memory spool's blocks and the disk spool's both cross 16,384.
    generator = random.Random(99)
    writes = [Write(0, 0, generator.randbytes(80000)), Write(1, 123, generator.randbytes(78000))]
    memory = from_memory(tmp_path / "memory", writes, 16000, tmp_path / "memory.wav")
    disk = from_disk(tmp_path / "disk", writes, 16000, tmp_path / "disk.wav")
    assert_same_file(memory, disk)
    assert memory.audio.duration_seconds == 40000 / 16000


# -- past the limit: on in a disk spool ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("limit", [2000, 20000])
def test_a_spool_past_its_limit_spills_to_disk_and_finishes_the_same(
    tmp_path: Path, seed: int, limit: int
) -> None:
    writes = random_writes(seed, 16000)
    root = tmp_path / "memory"
    spool = MemorySpool(root, "call-1@pbx", 16000, {"timeline_start": 1.5}, limit=limit)
    spilled_after = None
    for index, write in enumerate(writes):
        spool.write(write.channel, write.offset, write.pcm, sample_rate=write.rate)
        if spilled_after is None and spool.disk is not None:
            spilled_after = index
    memory = finished(spool, tmp_path / "memory.wav")
    disk = from_disk(tmp_path / "disk", writes, 16000, tmp_path / "disk.wav")
    assert_same_file(memory, disk)
    # The spill folder goes with finalize, as a disk spool's own does.
    assert spool_folders(root) == []
    # It spills at the write that takes both channels together past the limit.
    assert spilled_after == first_past(writes, 16000, limit)


def first_past(writes: list[Write], spool_rate: int, limit: int) -> int | None:
    """The index of the first write after which the two channels hold more than `limit`
    bytes of PCM between them, or None."""
    ends = [0, 0]
    for index, write in enumerate(writes):
        factor = spool_rate // write.rate if write.rate else 1
        end = (write.offset * factor + len(write.pcm) // 2 * factor) * 2
        ends[write.channel] = max(ends[write.channel], end)
        if sum(ends) > limit:
            return index
    return None


def test_it_spills_only_once_past_its_limit_and_goes_on_from_what_it_held(
    tmp_path: Path,
) -> None:
    root = tmp_path / "memory"
    spool = MemorySpool(root, "long call", 8000, {"timeline_start": 1.5}, limit=400)
    spool.write(Channel.AGENT, 0, pcm(*range(1, 101)))  # 200 bytes
    spool.write(Channel.FAR_PARTY, 0, pcm(*range(-1, -101, -1)))  # 400 bytes in all
    assert spool.disk is None and spool_folders(root) == []
    spool.write(Channel.AGENT, 100, pcm(101))  # one sample past the limit
    assert spool.disk is not None
    [folder] = spool_folders(root)
    assert read_json(folder / "manifest.json")["metadata"] == {"timeline_start": 1.5}
    spool.write(Channel.FAR_PARTY, 50, pcm(7, 7), sample_rate=None)
    audio = spool.finalize(tmp_path / "call.wav")
    frames = array("h", audio.path.read_bytes()[44:])
    assert list(frames[0::2]) == [*range(1, 102)]
    assert list(frames[1::2]) == [*range(-1, -51, -1), 7, 7, *range(-53, -101, -1), 0]
    assert spool_folders(root) == []


# -- Opus: by way of the disk spool --------------------------------------------------------------


def tone(frequency: float, rate: int, count: int, amplitude: int = 12000) -> bytes:
    return array(
        "h", (round(amplitude * math.sin(2 * math.pi * frequency * k / rate)) for k in range(count))
    ).tobytes()


@pytest.mark.parametrize("rate", [8000, 16000])
def test_opus_goes_through_a_disk_spool_and_decodes_as_the_disk_spools_does(
    tmp_path: Path, rate: int
) -> None:
    soundfile = pytest.importorskip("soundfile")
    writes = [
        Write(0, 0, tone(440, rate, 2 * rate)),
        Write(1, 800, tone(1000, rate, rate)),
        Write(1, rate // 2, tone(700, 8000, 4000), 8000),
    ]
    root = tmp_path / "memory"
    spool = MemorySpool(root, "opus-call", rate, {})
    written(spool, writes)
    assert spool.disk is None  # held in memory until the format is known
    memory = finished(spool, tmp_path / "memory.ogg", "opus")
    disk_spool = CallSpool.create(tmp_path / "disk", "opus-call", rate)
    written(disk_spool, writes)
    disk = finished(disk_spool, tmp_path / "disk.ogg", "opus")
    assert spool_folders(root) == []
    info = soundfile.info(str(memory.audio.path))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("OGG", "OPUS", 2, rate)
    assert info.frames == 2 * rate
    assert (memory.audio.duration_seconds, memory.audio.sample_rate) == (2.0, rate)
    assert memory.audio.sha256 == hashlib.sha256(memory.data).hexdigest()
    assert memory.audio.size == len(memory.data)
    assert memory.peaks == disk.peaks
    # The Ogg stream's serial number is random, so the files differ; the audio does not.
    decoded, _ = soundfile.read(str(memory.audio.path), dtype="int16")
    expected, _ = soundfile.read(str(disk.audio.path), dtype="int16")
    assert decoded.tolist() == expected.tolist()


# -- what it refuses, as CallSpool does ----------------------------------------------------------

BAD_WRITES = [
    pytest.param(Write(2, 0, pcm(1)), "channel is 0", id="channel-2"),
    pytest.param(Write(-1, 0, pcm(1)), "channel is 0", id="channel-minus-1"),
    pytest.param(Write(0, 0, b"\x01\x02\x03"), "even number", id="odd-length-pcm"),
    pytest.param(Write(1, -1, pcm(1)), "negative", id="negative-offset"),
    pytest.param(Write(0, 0, pcm(1), 12000), "cannot put", id="rate-that-does-not-divide"),
    pytest.param(Write(0, 0, pcm(1), 32000), "cannot put", id="higher-rate"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_WRITES)
@pytest.mark.parametrize("spilled", [False, True])
def test_bad_writes_are_refused_with_the_disk_spools_error_and_change_nothing(
    tmp_path: Path, bad: Write, message: str, spilled: bool
) -> None:
    good = [Write(0, 0, pcm(1, 2, 3)), Write(1, 2, pcm(4, 5))]
    memory_spool = MemorySpool(tmp_path / "memory", "bad", 16000, {}, limit=6 if spilled else 400)
    disk_spool = CallSpool.create(tmp_path / "disk", "bad", 16000)
    written(memory_spool, good)
    written(disk_spool, good)
    assert (memory_spool.disk is not None) == spilled
    with pytest.raises(ValueError, match=message) as from_memory_error:
        written(memory_spool, [bad])
    with pytest.raises(ValueError, match=message) as from_disk_error:
        written(disk_spool, [bad])
    assert str(from_memory_error.value) == str(from_disk_error.value)
    memory = finished(memory_spool, tmp_path / "memory.wav")
    disk = finished(disk_spool, tmp_path / "disk.wav")
    assert_same_file(memory, disk)
    assert memory.audio.duration_seconds == 4 / 16000


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spool = MemorySpool(tmp_path / "memory", "flac", 8000, {})
    spool.write(Channel.AGENT, 0, pcm(1, 2))
    with pytest.raises(ValueError, match="unknown audio format"):
        spool.finalize(tmp_path / "call.flac", "flac")
    assert not (tmp_path / "call.flac").exists() and spool_folders(tmp_path / "memory") == []


# -- where it differs from the disk spool --------------------------------------------------------


def test_an_empty_write_past_the_end_adds_no_silence_as_on_disk(tmp_path: Path) -> None:
    # CallSpool.write places nothing for no samples; the memory spool must not stretch
    # the channel with silence up to the empty write's offset either.
    writes = [Write(0, 0, pcm(1, 2)), Write(1, 100, b"")]
    memory = from_memory(tmp_path / "memory", writes, 8000, tmp_path / "memory.wav")
    disk = from_disk(tmp_path / "disk", writes, 8000, tmp_path / "disk.wav")
    assert disk.audio.duration_seconds == 2 / 8000
    assert_same_file(memory, disk)


# -- where the file is written -----------------------------------------------------------------


@pytest.mark.parametrize("limit", [None, 400])
def test_a_batchs_file_is_written_in_place_and_a_durable_one_by_a_temporary_name(
    tmp_path: Path, limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not durable (a finishing batch, whose rows commit after sync_finished): no rename,
    the same bytes. Durable: a temporary name, then os.replace into place."""
    import os

    renames: list[tuple[str, str]] = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), replace(a, b)))
    writes = random_writes(3, 8000)
    batch, durable = tmp_path / "batch.wav", tmp_path / "durable.wav"
    for destination, is_durable in ((batch, False), (durable, True)):
        spool = MemorySpool(
            tmp_path / destination.stem, "c", 8000, {}, **({"limit": limit} if limit else {})
        )
        written(spool, writes)
        spool.finalize(destination, durable=is_durable)
    assert batch.read_bytes() == durable.read_bytes()
    # (A spilled spool renames its own manifest into place too.)
    assert [Path(b).name for _, b in renames if str(b).endswith(".wav")] == ["durable.wav"]
    assert sorted(entry.name for entry in tmp_path.iterdir() if entry.is_file()) == [
        "batch.wav",
        "durable.wav",
    ]


def test_a_batchs_file_that_fails_half_way_is_removed(tmp_path: Path) -> None:
    class Refusing(PeaksBuilder):
        def block(self, stereo: bytes) -> None:
            raise OSError("the disk went away")

    spool = MemorySpool(tmp_path / "spool", "c", 8000, {})
    written(spool, random_writes(4, 8000))
    with pytest.raises(OSError, match="went away"):
        spool.finalize(tmp_path / "call.wav", "wav", Refusing(), durable=False)
    assert not (tmp_path / "call.wav").exists()
