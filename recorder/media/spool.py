"""A finished call's decoded audio put together, then written as one stereo file.

When a call ends, recorder/recordings/finish.py decodes its RTP log (media/rtplog.py, the
call's only durable record) and places each direction's PCM on the call's timeline here:
the agent's side on the left channel, the far party's on the right. A MemorySpool holds
the two channels in one stereo array, which is the WAV file's data as it will be written;
a call too long for memory, or one written as Ogg/Opus, goes on in a CallSpool on disk:

    <root>/<call-id-safe>-<12 hex>/
        manifest.json     call id, sample rate, channel meaning, created time, metadata
        left.pcm          the agent's side, PCM16 little-endian mono, sample k at byte 2k
        right.pcm         the far party's side, same layout

finalize() interleaves the channels into the finished file (WAV PCM16 or Ogg/Opus,
streaming in blocks, hashed as written), fsyncs it, moves it into place atomically and
fsyncs its folder; then the CallSpool is removed. Nothing of a spool itself is fsynced, and
nothing recovers one: should the process die, the call is decoded again from its RTP log
(recorder/recordings/recovery.py). A full disk raises SpoolFullError and keeps what was
there. This module imports no Django. See docs/spool.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self

import numpy as np

from recorder.lib.files import fsync_directory, read_json, write_atomically
from recorder.media.codecs import repeat_samples
from recorder.media.sealed import Sealing

MANIFEST = "manifest.json"
CHANNEL_FILES = ("left.pcm", "right.pcm")
SPOOL_FORMAT = "qms-spool"
SPOOL_VERSION = 1

SAMPLE_BYTES = 2  # PCM16 mono
FRAME_BYTES = 4  # PCM16 stereo
WAV_HEADER_BYTES = 44
# RIFF sizes are 32-bit: a stereo PCM16 data chunk holds at most this many frames. Writes
# beyond it are refused up front so that finalize() can never fail on length (that is
# about 18.6 hours at 16 kHz; the engine splits endless calls long before).
MAX_FRAMES = (0xFFFFFFFF - WAV_HEADER_BYTES) // FRAME_BYTES
# 16384 frames per block: 32 KB read per channel, 64 KB written, whatever the call length.
FINALIZE_BLOCK_FRAMES = 16384
HASH_BLOCK_BYTES = 1 << 16
# A finished call's audio is put together in memory when both channels fit in this much
# PCM: about 35 minutes at 8 kHz, 17 at 16 kHz. A longer call goes on in a disk spool.
MEMORY_SPOOL_BYTES = 64 * 1024 * 1024

# A full disk and an exhausted quota look the same to the caller: no room for audio.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SUPPORTED_FORMATS = ("wav", "opus")
# The input rates libsndfile's Opus encoder takes (RFC 6716 section 2: 8 to 48 kHz bands).
OPUS_RATES = frozenset({8000, 12000, 16000, 24000, 48000})


class Channel(IntEnum):
    """Which side of the call a stream is; the value is its position in the stereo file."""

    AGENT = 0  # left
    FAR_PARTY = 1  # right


class SpoolFullError(OSError):
    """No space left for a call's audio. The audio of the failed write is dropped (counted on
    the spool), what was on disk before is untouched, and later writes try again."""

    def __init__(self, message: str, dropped_samples: int = 0) -> None:
        super().__init__(errno.ENOSPC, message)
        self.dropped_samples = dropped_samples


@dataclass(frozen=True, slots=True)
class FinishedAudio:
    path: Path
    sha256: str
    size: int
    duration_seconds: float
    sample_rate: int


class BlockObserver(Protocol):
    """Sees a finished file's audio as finalize() writes it: the number of stereo frames
    and the rate first, then each block of interleaved PCM16 frames in order."""

    def begin(self, frames: int, sample_rate: int) -> None: ...

    def block(self, stereo: bytes) -> None: ...


class _NoObserver:
    def begin(self, frames: int, sample_rate: int) -> None:
        pass

    def block(self, stereo: bytes) -> None:
        pass


_NO_OBSERVER = _NoObserver()


class CallSpool:
    """One call's audio being written. Create with CallSpool.create(); not thread-safe."""

    def __init__(self, directory: Path, manifest: dict[str, Any], buffer_bytes: int) -> None:
        self.directory = directory
        self.call_id: str = manifest["call_id"]
        self.sample_rate: int = manifest["sample_rate"]
        self.dropped_samples = 0
        self.failed_writes = 0
        self._manifest = manifest
        self._buffer_bytes = buffer_bytes
        self._fds = [_open_channel(directory / name) for name in CHANNEL_FILES]
        # Bytes on disk per channel, tracked here so a failed write can be undone without a
        # stat() per packet.
        self._sizes = [0, 0]
        self._pending: list[tuple[int, bytearray] | None] = [None, None]

    @classmethod
    def create(
        cls,
        root: Path | str,
        call_id: str,
        sample_rate: int,
        metadata: Mapping[str, Any] | None = None,
        buffer_bytes: int = 0,
    ) -> Self:
        """Make a new spool directory under `root` and write its manifest.

        `sample_rate` is the rate of the finished file: choose the highest rate the call may
        use (16000 when G.722 was offered), since a channel may be upsampled into it but
        never downsampled. `buffer_bytes` > 0 coalesces contiguous writes per channel up to
        that size; audio in that buffer is lost if the process is killed (see docs/spool.md).
        Nothing of the spool is fsynced: it can always be made again from the call's RTP
        log, which it is decoded from.
        """
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        if not 0 <= buffer_bytes <= 65536:
            raise ValueError(f"buffer_bytes must be between 0 and 65536, not {buffer_bytes}")
        manifest = _new_manifest(call_id, sample_rate, dict(metadata or {}))
        # Metadata JSON cannot hold fails here, before any directory is made.
        text = json.dumps(manifest, indent=1, sort_keys=True)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        directory = root / _spool_name(call_id)
        directory.mkdir()
        # The manifest is written before any audio: finalize() reads the spool's rate there.
        write_atomically(directory / MANIFEST, text.encode(), durable=False)
        return cls(directory, manifest, buffer_bytes)

    def write(
        self,
        channel: Channel | int,
        sample_offset: int,
        pcm: bytes | bytearray | memoryview,
        sample_rate: int | None = None,
    ) -> None:
        """Place PCM16 LE mono samples at `sample_offset` on the call's timeline.

        Offset and samples are at `sample_rate` (the spool's rate when None). A lower rate
        that divides the spool's rate is upsampled by sample repetition; gaps stay silence;
        a late or overlapping write overwrites. Raises SpoolFullError when the disk is full.
        """
        sample_offset, pcm = _at_spool_rate(channel, sample_offset, pcm, sample_rate,
                                            self.sample_rate)  # fmt: skip
        if pcm:
            self._place(int(channel), sample_offset * SAMPLE_BYTES, bytes(pcm))

    def flush(self) -> None:
        """Hand buffered audio to the kernel. Raises SpoolFullError when the disk is full."""
        for side in Channel:
            self._flush_pending(side)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._manifest["metadata"])

    def close(self) -> None:
        """Flush and close the channel files; the spool stays on disk for finalize()."""
        try:
            self.flush()
        finally:
            for fd in self._fds:
                if fd >= 0:
                    os.close(fd)
            self._fds = [-1, -1]

    def finalize(
        self,
        destination_path: Path | str,
        format: str = "wav",
        observer: BlockObserver | None = None,
        durable: bool = True,
        sealing: Sealing | None = None,
    ) -> FinishedAudio:
        """Close the spool and turn it into the finished file (see finalize())."""
        self.close()
        return finalize(self.directory, destination_path, format, observer, durable, sealing)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fds != [-1, -1]:
            self.close()

    def _place(self, side: int, position: int, data: bytes) -> None:
        if self._buffer_bytes == 0:
            self._write_or_drop(side, position, data)
            return
        pending = self._pending[side]
        if pending is not None:
            start, buffered = pending
            if (
                start + len(buffered) == position
                and len(buffered) + len(data) <= self._buffer_bytes
            ):
                buffered += data
                return
            self._flush_pending(side)
        if len(data) >= self._buffer_bytes:
            self._write_or_drop(side, position, data)
        else:
            self._pending[side] = (position, bytearray(data))

    def _flush_pending(self, side: int) -> None:
        pending = self._pending[side]
        if pending is not None:
            # Cleared first: on a full disk the buffered audio is dropped, not kept growing.
            self._pending[side] = None
            self._write_or_drop(side, pending[0], pending[1])

    def _write_or_drop(self, side: int, position: int, data: bytes | bytearray) -> None:
        try:
            _pwrite_all(self._fds[side], data, position)
        except OSError as error:
            if error.errno not in NO_SPACE_ERRNOS:
                raise
            self._undo_growth(side)
            dropped = len(data) // SAMPLE_BYTES
            self.dropped_samples += dropped
            self.failed_writes += 1
            message = (
                f"no space for call {self.call_id!r}: {dropped} samples of the "
                f"{Channel(side).name.lower()} channel dropped ({self.dropped_samples} in all)"
            )
            raise SpoolFullError(message, dropped) from error
        self._sizes[side] = max(self._sizes[side], position + len(data))

    def _undo_growth(self, side: int) -> None:
        """A short write may have extended the file before space ran out; cut it back so
        the file ends where the last whole write ended (shrinking needs no space)."""
        os.ftruncate(self._fds[side], self._sizes[side])


class MemorySpool:
    """A finished call's audio put together in memory, then written in one go.

    The recorder decodes a call's whole RTP log when the call ends; most calls' audio fits
    in memory, and building it there spares the disk spool's files (a folder, a manifest,
    two channel files written, read back and removed) for each call. The samples go
    straight to their place in one stereo array, which is the WAV file's data as it will
    be written. Same write() as CallSpool. Past `limit` bytes of PCM, and for any format
    but WAV, it moves what it holds into a CallSpool under `root` and goes on there:
    memory stays bounded whatever the call's length. `expected_frames` sizes the array
    at the start (it grows as needed).
    """

    def __init__(
        self,
        root: Path,
        call_id: str,
        sample_rate: int,
        metadata: Mapping[str, Any],
        limit: int = MEMORY_SPOOL_BYTES,
        expected_frames: int = 0,
    ) -> None:
        self.root, self.call_id, self.sample_rate = root, call_id, sample_rate
        self._metadata = dict(metadata)
        self.limit = limit
        capacity = min(max(expected_frames, 0), limit // FRAME_BYTES)
        self.stereo = np.zeros((capacity, 2), dtype=np.int16)
        # Samples written so far on each channel (the end of its last audio).
        self.written = [0, 0]
        self.disk: CallSpool | None = None

    @property
    def held_bytes(self) -> int:
        """The memory its samples take (none once they went to a disk spool)."""
        return self.stereo.nbytes

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def write(
        self,
        channel: Channel | int,
        sample_offset: int,
        pcm: bytes | bytearray | memoryview,
        sample_rate: int | None = None,
    ) -> None:
        """As CallSpool.write: PCM16 LE mono placed at `sample_offset` on the timeline."""
        if self.disk is not None:
            self.disk.write(channel, sample_offset, pcm, sample_rate)
            return
        sample_offset, pcm = _at_spool_rate(channel, sample_offset, pcm, sample_rate,
                                            self.sample_rate)  # fmt: skip
        if not pcm:
            return  # nothing placed, no silence added: as on disk
        end = sample_offset + len(pcm) // SAMPLE_BYTES
        written, other = self.written[channel], self.written[1 - channel]
        if (max(end, written) + other) * SAMPLE_BYTES > self.limit:
            self._spill().write(channel, sample_offset, pcm)
            return
        if end > len(self.stereo):
            self._grow(end)
        self.stereo[sample_offset:end, channel] = np.frombuffer(pcm, dtype="<i2")
        self.written[channel] = max(written, end)

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()

    def finalize(
        self,
        destination_path: Path | str,
        format: str = "wav",
        observer: BlockObserver | None = None,
        durable: bool = True,
        sealing: Sealing | None = None,
    ) -> FinishedAudio:
        """The finished file at `destination_path`, as finalize() writes it."""
        _check_format(format)
        if self.disk is None and format == "wav":
            destination, observer = Path(destination_path), observer or _NO_OBSERVER
            return self._write_wav(destination, observer, durable, sealing)
        return self._spill().finalize(destination_path, format, observer, durable, sealing)

    def _grow(self, frames: int) -> None:
        """Room for `frames` frames at least: twice the room, so growing costs little."""
        grown = np.zeros((max(frames, 2 * len(self.stereo)), 2), dtype=np.int16)
        grown[: len(self.stereo)] = self.stereo
        self.stereo = grown

    def _channel(self, side: int) -> bytes:
        return self.stereo[: self.written[side], side].astype("<i2").tobytes()

    def _write_wav(
        self, destination: Path, observer: BlockObserver, durable: bool, sealing: Sealing | None
    ) -> FinishedAudio:
        frames = max(self.written)
        stereo = self.stereo[:frames].astype("<i2", copy=False)
        # Already in memory: written, hashed and drawn as one block.
        blocks = iter([memoryview(stereo).cast("B")] if frames else [])
        temporary = _temporary_name(destination, durable)
        try:
            return _write_wav_blocks(
                blocks, frames, temporary, destination, self.sample_rate, observer, durable,
                sealing,
            )  # fmt: skip
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError):
                _raise_if_no_space(error, f"finished file of call {self.call_id}")
            raise
        finally:
            self.stereo, self.written = np.zeros((0, 2), dtype=np.int16), [0, 0]

    def _spill(self) -> CallSpool:
        """Go on in a disk spool, with what is held so far written into it."""
        if self.disk is None:
            self.disk = CallSpool.create(self.root, self.call_id, self.sample_rate, self._metadata)
            for side in (0, 1):
                if self.written[side]:
                    self.disk.write(side, 0, self._channel(side))
            self.stereo, self.written = np.zeros((0, 2), dtype=np.int16), [0, 0]
        return self.disk


def finalize(
    spool_dir: Path | str,
    destination_path: Path | str,
    format: str = "wav",
    observer: BlockObserver | None = None,
    durable: bool = True,
    sealing: Sealing | None = None,
) -> FinishedAudio:
    """Turn a spool into one stereo file at `destination_path` and remove the spool.

    The file is written under a temporary name beside the destination, hashed while written,
    fsynced, moved into place with os.replace() and its directory fsynced; only then is the
    spool removed. Not `durable`: it is written in place and nothing is fsynced, and the
    caller makes a batch of finished files durable at once (sync_finished()) before any row
    names them. A torn last write (an odd byte) is
    cut to whole samples; the shorter channel is padded with silence. `format` is "wav"
    (PCM16) or "opus" (Ogg/Opus through soundfile; hashed once written). Raises
    SpoolFullError (spool kept) on a full disk. `observer`, if given, sees the stereo PCM
    as it is written (the waveform is drawn from it without reading the finished file
    again). With `sealing`, the file is written sealed (encrypted, media/sealed.py); its
    size and SHA-256 are still those of the plain audio.
    """
    _check_format(format)
    spool_dir, destination = Path(spool_dir), Path(destination_path)
    rate = _read_manifest(spool_dir)["sample_rate"]
    if format == "opus" and rate not in OPUS_RATES:
        raise ValueError(f"Opus cannot encode {rate} Hz audio; use format='wav'")
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(destination, durable)
    try:
        write = _write_wav if format == "wav" else _write_opus
        observer = observer or _NO_OBSERVER
        audio = write(spool_dir, temporary, destination, rate, observer, durable, sealing)
    except BaseException as error:
        # Whatever stopped us, a half-written file must not stay beside the archive.
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            _raise_if_no_space(error, f"finished file of spool {spool_dir.name}")
        raise
    _remove_spool(spool_dir)
    return audio


# -- writing the spool ----------------------------------------------------------------------


def _spool_name(call_id: str) -> str:
    """A directory name that is readable, safe on any filesystem and unique even when a
    Call-ID repeats (a SIP Call-ID may hold '@', '/' and anything else)."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:48].lstrip("._-") or "call"
    return f"{readable}-{uuid.uuid4().hex[:12]}"


def _new_manifest(call_id: str, sample_rate: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": SPOOL_FORMAT,
        "version": SPOOL_VERSION,
        "call_id": call_id,
        "sample_rate": sample_rate,
        "sample_format": "s16le",
        "channels": {
            "left": {"file": CHANNEL_FILES[0], "party": "agent"},
            "right": {"file": CHANNEL_FILES[1], "party": "far_party"},
        },
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "metadata": metadata,
    }


def _open_channel(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _check_pcm(sample_offset: int, pcm: bytes | bytearray | memoryview) -> None:
    if sample_offset < 0:
        raise ValueError(f"sample offset must not be negative, not {sample_offset}")
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"PCM16 audio has an even number of bytes, not {len(pcm)}")


def _at_spool_rate(
    channel: Channel | int,
    sample_offset: int,
    pcm: bytes | bytearray | memoryview,
    sample_rate: int | None,
    spool_rate: int,
) -> tuple[int, bytes | bytearray | memoryview]:
    """A write checked, and its offset and samples at the spool's rate (a lower rate that
    divides it is upsampled). Raises ValueError for anything a spool cannot place."""
    # Checked by hand rather than through Channel(): this runs for every chunk.
    if channel not in (0, 1):
        raise ValueError(f"channel is 0 (agent) or 1 (far party), not {channel!r}")
    _check_pcm(sample_offset, pcm)
    if sample_rate is not None and sample_rate != spool_rate:
        factor = _upsampling_factor(sample_rate, spool_rate)
        pcm, sample_offset = repeat_samples(pcm, factor), sample_offset * factor
    if sample_offset + len(pcm) // SAMPLE_BYTES > MAX_FRAMES:
        raise ValueError(f"offset {sample_offset} is beyond the longest WAV file")
    return sample_offset, pcm


def _upsampling_factor(sample_rate: int, spool_rate: int) -> int:
    if sample_rate <= 0 or sample_rate > spool_rate or spool_rate % sample_rate:
        raise ValueError(
            f"cannot put {sample_rate} Hz audio into a {spool_rate} Hz spool: "
            "only a lower rate that divides the spool's rate is upsampled"
        )
    return spool_rate // sample_rate


def _pwrite_all(fd: int, data: bytes | bytearray, position: int) -> None:
    written = os.pwrite(fd, data, position)
    if written == len(data):
        return
    # A short write happens when the disk fills mid-way; the retry then reports ENOSPC.
    view, position = memoryview(data)[written:], position + written
    while view:
        written = os.pwrite(fd, view, position)
        view, position = view[written:], position + written


def _raise_if_no_space(error: OSError, what: str) -> None:
    if error.errno in NO_SPACE_ERRNOS:
        raise SpoolFullError(f"no space for the {what}") from error


# -- finishing ------------------------------------------------------------------------------


def _check_format(format: str) -> None:
    if format not in SUPPORTED_FORMATS:
        raise ValueError(f"unknown audio format {format!r}; supported: {SUPPORTED_FORMATS}")


def _read_manifest(spool_dir: Path) -> dict[str, Any]:
    manifest = read_json(spool_dir / MANIFEST)
    if not isinstance(manifest, dict):
        raise ValueError(f"{spool_dir / MANIFEST} is not a QMS spool manifest")
    if manifest.get("format") != SPOOL_FORMAT or not isinstance(manifest.get("sample_rate"), int):
        raise ValueError(f"{spool_dir / MANIFEST} is not a QMS spool manifest")
    return manifest


def _temporary_name(destination: Path, durable: bool = True) -> Path:
    """Where the file is written before it is in place. A fixed name, not a random one: a
    finalize() killed half-way leaves a file that the next attempt overwrites, instead of
    an orphan. Not `durable`, the destination itself: such files belong to a batch whose
    rows commit only after sync_finished(), so no row names the file while it is written
    (and a rename a file cost as much again as creating it)."""
    if not durable:
        return destination
    return destination.with_name(f".{destination.name}.tmp")


def _write_wav(
    spool_dir: Path,
    temporary: Path,
    destination: Path,
    rate: int,
    observer: BlockObserver,
    durable: bool = True,
    sealing: Sealing | None = None,
) -> FinishedAudio:
    frames = _frames_in(spool_dir)
    blocks = _stereo_blocks(spool_dir, frames)
    return _write_wav_blocks(
        blocks, frames, temporary, destination, rate, observer, durable, sealing
    )


def _write_wav_blocks(
    blocks: Iterator[bytes | memoryview],
    frames: int,
    temporary: Path,
    destination: Path,
    rate: int,
    observer: BlockObserver,
    durable: bool = True,
    sealing: Sealing | None = None,
) -> FinishedAudio:
    """Stereo PCM16 blocks as a WAV file (sealed, with `sealing`): hashed while written,
    fsynced (if `durable`), moved into place."""
    digest = hashlib.sha256()
    observer.begin(frames, rate)
    size = WAV_HEADER_BYTES + frames * FRAME_BYTES
    header = _wav_header(frames, rate)
    digest.update(header)
    if sealing is None:
        _write_plain_wav(temporary, header, blocks, observer, digest, durable)
    else:
        with _created(temporary) as file:
            out = sealing.writer(file, size)
            out.write(header)
            for block in blocks:
                observer.block(block)
                _hashed_write(out, digest, block)
            out.finish()
            file.flush()
            if durable:
                os.fsync(file.fileno())
            _drop_cached(file.fileno())
    _move_into_place(temporary, destination, durable)
    return FinishedAudio(destination, digest.hexdigest(), size, frames / rate, rate)


def _write_plain_wav(
    path: Path,
    header: bytes,
    blocks: Iterator[bytes | memoryview],
    observer: BlockObserver,
    digest: Any,
    durable: bool,
) -> None:
    """The header and the blocks written straight to the file descriptor, the header with
    the first block in one system call. Through a buffered file the 44-byte header was a
    write of its own before the audio's, and opening it asked the kernel three things more:
    about 60 us a file of a short call's 128 KB on the benchmark machine."""
    fd = _created_fd(path)
    try:
        pending = [header]
        for block in blocks:
            observer.block(block)
            digest.update(block)
            _write_fully(fd, [*pending, block])
            pending = []
        if pending:
            _write_fully(fd, pending)
        if durable:
            os.fsync(fd)
        # Durable, the pages are dropped; not, their writeback starts now, while the next
        # call of the batch is decoded, and sync_finished() then mostly waits for it.
        _drop_cached(fd)
    finally:
        os.close(fd)


def _write_fully(fd: int, parts: list) -> None:
    """`parts` written one after the other, however few bytes each write takes."""
    views = [memoryview(part).cast("B") for part in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views:
            views[0] = views[0][written:]


def _write_opus(
    spool_dir: Path,
    temporary: Path,
    destination: Path,
    rate: int,
    observer: BlockObserver,
    durable: bool = True,
    sealing: Sealing | None = None,
) -> FinishedAudio:
    if sealing is None:
        return _write_plain_opus(spool_dir, temporary, destination, rate, observer, durable)
    # libsndfile seeks back as it writes, so the Ogg file is written plain beside the
    # destination, then sealed into place, and the plain one removed at once.
    plain = destination.with_name(f".{destination.name}.plain")
    try:
        _write_plain_opus(spool_dir, plain, plain, rate, observer, durable=False)
        with _created(temporary) as out:
            sha256, size = sealing.seal_file(plain, out)
            out.flush()
            if durable:
                os.fsync(out.fileno())
    finally:
        plain.unlink(missing_ok=True)
    _move_into_place(temporary, destination, durable)
    return FinishedAudio(destination, sha256, size, _frames_in(spool_dir) / rate, rate)


def _write_plain_opus(
    spool_dir: Path,
    temporary: Path,
    destination: Path,
    rate: int,
    observer: BlockObserver,
    durable: bool = True,
) -> FinishedAudio:
    # Imported here: libsndfile loads only in a process that asks for Opus.
    import soundfile

    frames = _frames_in(spool_dir)
    observer.begin(frames, rate)
    with open(temporary, "w+b") as out:
        guarded = _ErrorKeepingFile(out)
        try:
            with soundfile.SoundFile(
                guarded, "w", samplerate=rate, channels=2, format="OGG", subtype="OPUS"
            ) as encoder:
                for block in _stereo_blocks(spool_dir, frames):
                    observer.block(block)
                    encoder.buffer_write(block, dtype="int16")
        except soundfile.LibsndfileError:
            guarded.raise_kept_error()
            raise
        guarded.raise_kept_error()
        out.flush()
        if durable:
            os.fsync(out.fileno())
    # libsndfile may seek while it writes, so the hash is taken from the finished bytes.
    sha256, size = _hash_file(temporary)
    _move_into_place(temporary, destination, durable)
    return FinishedAudio(destination, sha256, size, frames / rate, rate)


class _ErrorKeepingFile:
    """A file for libsndfile's virtual I/O that keeps the OSError (ENOSPC) of a failed
    write: inside the C callback it would only become a vague 'System error'."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._error: OSError | None = None
        self.read, self.seek, self.tell = file.read, file.seek, file.tell

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self._error = self._error or error
            return 0

    def raise_kept_error(self) -> None:
        if self._error is not None:
            raise self._error


def _frames_in(spool_dir: Path) -> int:
    return max(_whole_samples(spool_dir / name) for name in CHANNEL_FILES)


def _stereo_blocks(spool_dir: Path, frames: int) -> Iterator[bytes]:
    left_path, right_path = (spool_dir / name for name in CHANNEL_FILES)
    with _open_or_empty(left_path) as left, _open_or_empty(right_path) as right:
        for start in range(0, frames, FINALIZE_BLOCK_FRAMES):
            yield _interleave(left, right, min(FINALIZE_BLOCK_FRAMES, frames - start))


def _created_fd(path: Path) -> int:
    """As _created, a file descriptor: `path` opened for writing, emptied, its folder made
    if it is missing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


def _created(path: Path) -> BinaryIO:
    """`path` opened for writing, its folder made if it is missing: the folder of a day's
    recordings is made by the first of them, not looked for by every one."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")


def _move_into_place(temporary: Path, destination: Path, durable: bool = True) -> None:
    if temporary != destination:
        os.replace(temporary, destination)
    if durable:
        fsync_directory(destination.parent)


def sync_finished(paths: list[Path]) -> None:
    """Make finished files written without `durable` durable together: each file's data,
    then the names in each of their folders, once a folder (a day's folder holds a whole
    batch), and let the kernel drop their pages. One fsync a file and one a folder, where
    each file on its own costs two; done before their rows commit, so that a row never
    points at a file a power cut could lose."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            _drop_cached(fd)
        finally:
            os.close(fd)
    for folder in sorted({path.parent for path in paths}):
        fsync_directory(folder)


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _whole_samples(path: Path) -> int:
    """Samples on disk; a byte of a torn last write is ignored."""
    try:
        return path.stat().st_size // SAMPLE_BYTES
    except FileNotFoundError:
        return 0


def _open_or_empty(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return open(os.devnull, "rb")


def _wav_header(frames: int, rate: int) -> bytes:
    """The 44-byte canonical RIFF/WAVE header for stereo PCM16 (WAVE_FORMAT_PCM = 1)."""
    data_bytes = frames * FRAME_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, 2, rate, rate * FRAME_BYTES, FRAME_BYTES, 16,
        b"data", data_bytes,
    )  # fmt: skip


def _interleave(left: BinaryIO, right: BinaryIO, frames: int) -> bytes:
    """The next `frames` stereo frames; a channel that ends early is padded with silence.
    Samples are only moved, never computed, so the host's byte order does not matter."""
    stereo = np.zeros((frames, 2), dtype=np.int16)
    for side, source in enumerate((left, right)):
        chunk = source.read(frames * SAMPLE_BYTES)
        mono = np.frombuffer(chunk, dtype=np.int16, count=len(chunk) // SAMPLE_BYTES)
        stereo[: len(mono), side] = mono
    return stereo.tobytes()


def _hashed_write(out: BinaryIO, digest: Any, data: bytes) -> None:
    out.write(data)
    digest.update(data)


def _drop_cached(fd: int) -> None:
    """Let the kernel drop a finished file's pages from its cache: the archive is written
    once and read rarely, and a recorder writing tens of megabytes a second otherwise fills
    memory with it. Recycled pages are also far cheaper to write into than fresh ones (on
    the benchmark machine a 5.8 MB file took 6 ms this way against 14 ms). Pages not yet
    written stay; Linux starts their writeback (POSIX_FADV_DONTNEED), without waiting."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _remove_spool(spool_dir: Path) -> None:
    shutil.rmtree(spool_dir)
    fsync_directory(spool_dir.parent)
