"""Reading a recording's stored file as the plain audio it holds, sealed or not.

A file is sealed (recorder/media/sealed.py) when its first bytes say so. The row's
encryption_key_id says which files must be: a row that names a key and a file that is not
sealed is a file replaced behind QMS's back, refused. A row without one may still name a
sealed file: `manage.py encrypt_recordings` seals the file in place before it writes the
row, and a crash between the two leaves exactly that, which plays.

Whoever reads audio (playback, the integrity check, the waveform, exports) goes through
StoredAudio: the plain length, a range of plain bytes, a file-like reader. The stored
file is read a range at a time through archive.open_range, so a bucket answers with the
bytes of the chunks asked for alone.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import IO

from django.core.files.storage import Storage

from recorder.media.sealed import (
    HEADER_BYTES,
    ChunkCipher,
    SealedFileError,
    chunk_span,
    data_key_of,
    is_sealed,
    open_chunks,
    parse_header,
    plain_range,
)
from recorder.models import Recording
from recorder.recordings.archive import open_range, open_stream
from recorder.recordings.keys import key_provider

READ_BLOCK_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredAudio:
    """A recording's stored file: where it is, how long its plain audio is, and, when it
    is sealed, the cipher that opens its chunks."""

    storage: Storage
    name: str
    plain_size: int
    cipher: ChunkCipher | None = None

    @property
    def sealed(self) -> bool:
        return self.cipher is not None

    @property
    def key_id(self) -> str:
        return self.cipher.header.key_ids[0] if self.cipher else ""

    def plain_bytes(self, first: int, last: int) -> Iterator[bytes]:
        """Plain bytes `first` to `last` (inclusive), in blocks; a sealed file's chunks
        are each checked before a byte of them is given (TamperedChunk otherwise)."""
        if self.cipher is None:
            yield from self._plain_file_bytes(first, last)
            return
        span = chunk_span(self.cipher.header, first, last)
        stored = open_range(self.storage, self.name, span.stored_first, span.stored_last)
        with closing(stored):
            yield from plain_range(self.cipher, stored, first, last)

    def _plain_file_bytes(self, first: int, last: int) -> Iterator[bytes]:
        with closing(open_range(self.storage, self.name, first, last)) as audio:
            remaining = last - first + 1
            while remaining > 0 and (block := audio.read(min(READ_BLOCK_BYTES, remaining))):
                remaining -= len(block)
                yield block

    def every_plain_byte(self) -> Iterator[bytes]:
        """The whole plain file from its start, read once (every chunk's tag checked,
        the empty chunk of an empty file too)."""
        if self.cipher is None:
            with closing(open_stream(self.storage, self.name)) as audio:
                while block := audio.read(READ_BLOCK_BYTES):
                    yield block
            return
        header = self.cipher.header
        last = header.stored_length - 1
        with closing(open_range(self.storage, self.name, HEADER_BYTES, last)) as stored:
            for _, plain in open_chunks(self.cipher, stored, 0, header.chunk_count - 1):
                yield plain

    def reader(self) -> IO[bytes]:
        """The plain file as a seekable file to read (a waveform's decoder seeks)."""
        if self.cipher is None:
            return self.storage.open(self.name, "rb")
        return io.BufferedReader(SealedReader(self), buffer_size=READ_BLOCK_BYTES)


def stored_audio(recording: Recording) -> StoredAudio:
    """The recording's stored file as StoredAudio. FileNotFoundError when it is missing;
    SealedFileError when it is sealed and cannot be opened (key unknown, header altered,
    file cut), or plain where the row says it is sealed."""
    storage, name = recording.file.storage, recording.file.name
    with closing(open_range(storage, name, 0, HEADER_BYTES - 1)) as head:
        first = head.read(HEADER_BYTES)
    if not is_sealed(first):
        if recording.encryption_key_id:
            raise SealedFileError(
                f"the recording was sealed under key id {recording.encryption_key_id} and its "
                "file is not sealed: it has been replaced since"
            )
        return StoredAudio(storage, name, storage.size(name))
    return _sealed_audio(storage, name, first)


def _sealed_audio(storage: Storage, name: str, first: bytes) -> StoredAudio:
    header = parse_header(first)
    stored = storage.size(name)
    if stored != header.stored_length:
        cut = "cut short" if stored < header.stored_length else "longer than it was written"
        raise SealedFileError(
            f"the recording's sealed file is {cut} ({stored:,} bytes stored, "
            f"{header.stored_length:,} written)"
        )
    cipher = ChunkCipher(header, data_key_of(header, key_provider()))
    return StoredAudio(storage, name, header.plain_length, cipher)


class SealedReader(io.RawIOBase):
    """A sealed file's plain bytes as a seekable raw file. Reads that go on from where
    the last one stopped continue one open stream (one GET from a bucket); a seek
    elsewhere opens the stored file again at the chunk it lands in."""

    def __init__(self, audio: StoredAudio) -> None:
        super().__init__()
        self.audio = audio
        self.header = audio.cipher.header
        self.position = 0
        self.chunk: tuple[int, bytes] | None = None
        self.chunks: Iterator[tuple[int, bytes]] | None = None
        self.next_chunk = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.audio.plain_size}
        self.position = max(0, base[whence] + offset)
        return self.position

    def readinto(self, buffer: memoryview) -> int:
        if self.position >= self.audio.plain_size:
            return 0
        index, plain = self._chunk(self.position // self.header.chunk_size)
        start = self.position - index * self.header.chunk_size
        taken = plain[start : start + len(buffer)]
        buffer[: len(taken)] = taken
        self.position += len(taken)
        return len(taken)

    def _chunk(self, index: int) -> tuple[int, bytes]:
        if self.chunk is not None and self.chunk[0] == index:
            return self.chunk
        if self.chunks is None or index != self.next_chunk:
            self._reopen(index)
        self.chunk = next(self.chunks)
        self.next_chunk = index + 1
        return self.chunk

    def _reopen(self, index: int) -> None:
        self._close_stream()
        stored = open_range(
            self.audio.storage, self.audio.name,
            self.header.stored_offset(index), self.header.stored_length - 1,
        )  # fmt: skip
        self.stream = stored
        last = self.header.chunk_count - 1
        self.chunks = open_chunks(self.audio.cipher, stored, index, last)

    def _close_stream(self) -> None:
        if self.chunks is not None:
            self.stream.close()
            self.chunks = None

    def close(self) -> None:
        self._close_stream()
        super().close()
