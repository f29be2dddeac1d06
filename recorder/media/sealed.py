"""Recordings encrypted at rest: the sealed file format (issue 16, docs/security.md §6).

A sealed file is a fixed 512-byte header and then the plain file (a WAV, an Ogg/Opus, a
raw RTP log) cut into chunks of `chunk_size` plain bytes, each encrypted on its own with
AES-256-GCM (NIST SP 800-38D) under the file's own random data key. Any byte range of
the plain file is read by decrypting the chunks that cover it, never from the start:

    0      6  magic b"QMSSEA"
    6      1  version (1)
    7      1  reserved (0)
    8      4  chunk size, plain bytes a chunk (big-endian)
    12     8  plain length, bytes of the plain file (big-endian)
    20     4  nonce prefix: random, drawn for the file
    24   128  key slot 0  } the data key, wrapped by a master key (a key-encryption key)
    152  128  key slot 1  } identified by its key id; one slot or both are filled
    280  232  zero
    512       chunk 0: ciphertext, then its 16-byte tag; chunk 1; ... the last chunk

A key slot: 1 byte the key id's length (0 for an empty slot), 64 bytes the key id
(zero-padded), 12 bytes the wrap's nonce, 48 bytes the wrapped data key (32) and its tag.
The wrap is AES-256-GCM under the master key, with the key id and the header's first 24
bytes as associated data: a slot cannot be moved to another file or relabelled with
another key id, and a change to the header's chunk size or plain length fails the unwrap.

A chunk's nonce is the file's nonce prefix then the chunk's index (8 bytes, big-endian):
SP 800-38D §8.2.1's deterministic construction, a fixed field and an invocation field,
never repeated under one data key (each data key seals one file, once). Its associated
data is the header's first 24 bytes, the chunk's index and a final-chunk flag, so a chunk
moved, reordered, or presented as the last (a truncated file) fails its tag. A file has
at least one chunk (an empty plain file has one empty chunk), so even it is authenticated.

Two key slots let a file's data key be rewrapped in place, crash-safely: the new wrap goes
into the free slot and is made durable before the old slot is cleared, so at every moment
one slot holds a wrap that opens the file (recorder/recordings/encryption.py rotate).

This module is pure: it knows no Django, and it takes its master keys from a KeyWrapper,
which may be a key file or a KMS (recorder/recordings/keys.py).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"QMSSEA"
VERSION = 1
HEADER_BYTES = 512
CHUNK_BYTES = 64 * 1024
TAG_BYTES = 16
DATA_KEY_BYTES = 32
KEY_ID_MAX = 64
SLOTS = 2
SLOT_BYTES = 128
# magic, version, reserved, chunk size, plain length, nonce prefix: 24 bytes.
FIXED = struct.Struct(">6sBBIQ4s")
# key id length, key id, wrap nonce, wrapped key and tag: 125 bytes, in a 128-byte slot.
SLOT = struct.Struct(f">B{KEY_ID_MAX}s12s{DATA_KEY_BYTES + TAG_BYTES}s")
SLOTS_AT = FIXED.size
WRAP_CONTEXT = b"QMS recording data key v1"


class SealedFileError(Exception):
    """A sealed file that cannot be read as it was written: altered, damaged, truncated,
    or not a sealed file at all. Its message says which, in a sentence."""


class TamperedChunk(SealedFileError):
    """A chunk whose tag does not hold: its bytes are not what was written."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"chunk {index} of the recording failed its authentication tag: the file has "
            "been altered or damaged since it was recorded"
        )
        self.index = index


class UnknownKey(SealedFileError):
    """No key slot names a master key this server has."""


class KeyWrapper(Protocol):
    """Master keys by id: the settings' key file, or a KMS that never hands them out."""

    def knows(self, key_id: str) -> bool: ...

    def wrap(self, key_id: str, data_key: bytes, context: bytes) -> bytes:
        """The data key encrypted under master key `key_id`: 12-byte nonce + 48 bytes."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        """The data key; raises InvalidTag when it was not wrapped under that key."""
        ...


@dataclass(frozen=True, slots=True)
class KeySlot:
    key_id: str
    wrapped: bytes  # the wrap's nonce (12 bytes), then the wrapped key and its tag

    def pack(self) -> bytes:
        key_id = self.key_id.encode("ascii")
        return SLOT.pack(len(key_id), key_id, self.wrapped[:12], self.wrapped[12:]).ljust(
            SLOT_BYTES, b"\0"
        )


@dataclass(frozen=True, slots=True)
class SealedHeader:
    chunk_size: int
    plain_length: int
    nonce_prefix: bytes
    slots: tuple[KeySlot | None, ...]

    @property
    def fixed(self) -> bytes:
        """The header's first 24 bytes: what every tag and every wrap is bound to."""
        return FIXED.pack(MAGIC, VERSION, 0, self.chunk_size, self.plain_length, self.nonce_prefix)

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.plain_length // self.chunk_size))

    @property
    def stored_length(self) -> int:
        return HEADER_BYTES + self.plain_length + self.chunk_count * TAG_BYTES

    @property
    def key_ids(self) -> list[str]:
        return [slot.key_id for slot in self.slots if slot is not None]

    def pack(self) -> bytes:
        packed = [slot.pack() if slot else bytes(SLOT_BYTES) for slot in self.slots]
        return (self.fixed + b"".join(packed)).ljust(HEADER_BYTES, b"\0")

    def with_slots(self, *slots: KeySlot | None) -> SealedHeader:
        return replace(self, slots=tuple(slots))

    def plain_chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.plain_length - index * self.chunk_size)

    def stored_offset(self, index: int) -> int:
        return HEADER_BYTES + index * (self.chunk_size + TAG_BYTES)


def is_sealed(first_bytes: bytes) -> bool:
    return first_bytes[: len(MAGIC)] == MAGIC


def parse_header(header: bytes) -> SealedHeader:
    """The header of a sealed file from its first HEADER_BYTES bytes."""
    if len(header) < HEADER_BYTES or not is_sealed(header):
        raise SealedFileError("the file is not a sealed recording (no QMS header), or is cut")
    _, version, _, chunk_size, plain_length, prefix = FIXED.unpack_from(header)
    if version != VERSION:
        raise SealedFileError(f"the sealed recording is of format version {version}, not 1")
    if chunk_size == 0:
        raise SealedFileError("the sealed recording's header says chunks of 0 bytes")
    slots = tuple(_slot(header, SLOTS_AT + n * SLOT_BYTES) for n in range(SLOTS))
    return SealedHeader(chunk_size, plain_length, prefix, slots)


def _slot(header: bytes, at: int) -> KeySlot | None:
    length, key_id, nonce, wrapped = SLOT.unpack_from(header, at)
    if length == 0:
        return None
    if length > KEY_ID_MAX:
        raise SealedFileError("a key slot of the sealed recording is damaged")
    return KeySlot(key_id[:length].decode("ascii", "replace"), nonce + wrapped)


def new_header(keys: KeyWrapper, key_id: str, plain_length: int) -> tuple[SealedHeader, bytes]:
    """The header of a file about to be sealed under `key_id`, and its new data key."""
    data_key = AESGCM.generate_key(bit_length=256)
    header = SealedHeader(CHUNK_BYTES, plain_length, os.urandom(4), (None,) * SLOTS)
    slot = wrap_slot(keys, key_id, header, data_key)
    return header.with_slots(slot, None), data_key


def wrap_slot(keys: KeyWrapper, key_id: str, header: SealedHeader, data_key: bytes) -> KeySlot:
    return KeySlot(key_id, keys.wrap(key_id, data_key, _wrap_context(key_id, header)))


def _wrap_context(key_id: str, header: SealedHeader) -> bytes:
    return WRAP_CONTEXT + bytes([len(key_id)]) + key_id.encode("ascii") + header.fixed


def data_key_of(header: SealedHeader, keys: KeyWrapper) -> bytes:
    """The file's data key, from the first slot whose master key this server has."""
    return open_slot(header, keys)[1]


def open_slot(header: SealedHeader, keys: KeyWrapper) -> tuple[int, bytes]:
    """The first slot whose wrap opens with a master key of `keys`, and the data key."""
    known = [
        (index, slot)
        for index, slot in enumerate(header.slots)
        if slot is not None and keys.knows(slot.key_id)
    ]
    if not known:
        named = ", ".join(header.key_ids) or "none"
        raise UnknownKey(
            f"the recording is sealed under key id {named}, which is not among the keys "
            "configured (QMS_RECORDING_KEYS)"
        )
    for index, slot in known:
        try:
            context = _wrap_context(slot.key_id, header)
            return index, keys.unwrap(slot.key_id, slot.wrapped, context)
        except InvalidTag:
            continue
    raise SealedFileError(
        f"the recording's data key does not open with key id {known[0][1].key_id}: the key "
        "configured under that id is not the one it was sealed with, or the header was altered"
    )


class ChunkCipher:
    """Seals and opens the chunks of one file with its data key."""

    def __init__(self, header: SealedHeader, data_key: bytes) -> None:
        self.header = header
        self.aead = AESGCM(data_key)
        self.fixed = header.fixed

    def _nonce_and_context(self, index: int) -> tuple[bytes, bytes]:
        final = b"\1" if index == self.header.chunk_count - 1 else b"\0"
        counter = index.to_bytes(8, "big")
        return self.header.nonce_prefix + counter, self.fixed + counter + final

    def seal(self, index: int, plain: bytes | memoryview) -> bytes:
        nonce, context = self._nonce_and_context(index)
        return self.aead.encrypt(nonce, plain, context)

    def open(self, index: int, stored: bytes) -> bytes:
        """The chunk's plain bytes, only once its tag holds: never unauthenticated bytes."""
        if len(stored) != self.header.plain_chunk_length(index) + TAG_BYTES:
            raise SealedFileError(
                f"the recording is cut short: chunk {index} of {self.header.chunk_count} "
                "is incomplete or missing"
            )
        nonce, context = self._nonce_and_context(index)
        try:
            return self.aead.decrypt(nonce, stored, context)
        except InvalidTag:
            raise TamperedChunk(index) from None


class SealingWriter:
    """A file-like writer: the plain bytes written to it go to `out` sealed, chunk by
    chunk, as soon as each chunk is whole. Its plain length is known from the start (the
    header says it), so the last chunk is sealed when its last byte arrives."""

    def __init__(self, out: IO[bytes], keys: KeyWrapper, key_id: str, plain_length: int) -> None:
        self.out = out
        self.header, data_key = new_header(keys, key_id, plain_length)
        self.cipher = ChunkCipher(self.header, data_key)
        self.pending = bytearray()
        self.index = 0
        self.written = 0
        out.write(self.header.pack())
        if plain_length == 0:
            self._seal(b"")

    def write(self, plain: bytes | memoryview) -> int:
        view = memoryview(plain).cast("B")
        size = self.header.chunk_size
        taken = 0
        if self.pending:
            taken = min(len(view), size - len(self.pending))
            self.pending += view[:taken]
            if len(self.pending) == size or self.written + len(self.pending) == self._length:
                self._seal(self.pending)
                self.pending = bytearray()
        # Whole chunks straight from the caller's buffer, without a copy into `pending`.
        while len(view) - taken >= size:
            self._seal(view[taken : taken + size])
            taken += size
        rest = view[taken:]
        if len(rest) and self.written + len(rest) == self._length:
            self._seal(rest)
        elif len(rest):
            self.pending += rest
        return len(view)

    @property
    def _length(self) -> int:
        return self.header.plain_length

    def _seal(self, plain: bytes | memoryview) -> None:
        if self.written + len(plain) > self._length:
            raise ValueError("more bytes written than the sealed file's plain length")
        self.out.write(self.cipher.seal(self.index, plain))
        self.index += 1
        self.written += len(plain)

    def finish(self) -> None:
        """Check that every byte the header promised was written."""
        if self.pending or self.index != self.header.chunk_count:
            raise ValueError(
                f"{self.written + len(self.pending)} plain bytes written of {self._length}"
            )

    def flush(self) -> None:
        self.out.flush()

    def fileno(self) -> int:
        return self.out.fileno()


def seal_stream(
    plain: IO[bytes], out: IO[bytes], keys: KeyWrapper, key_id: str, plain_length: int
) -> SealedHeader:
    """A plain file of `plain_length` bytes read from `plain`, written sealed to `out`."""
    writer = SealingWriter(out, keys, key_id, plain_length)
    while block := plain.read(writer.header.chunk_size * 4):
        writer.write(block)
    writer.finish()
    return writer.header


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """The chunks that cover plain bytes `first` to `last`, and their stored bytes."""

    first_chunk: int
    last_chunk: int
    stored_first: int
    stored_last: int  # inclusive


def chunk_span(header: SealedHeader, first: int, last: int) -> ChunkSpan:
    """Which chunks hold plain bytes `first` to `last` (inclusive), stored where."""
    size = header.chunk_size
    first_chunk, last_chunk = first // size, last // size
    stored_last = header.stored_offset(last_chunk) + header.plain_chunk_length(last_chunk)
    return ChunkSpan(
        first_chunk, last_chunk, header.stored_offset(first_chunk), stored_last + TAG_BYTES - 1
    )


def open_chunks(
    cipher: ChunkCipher, stored: IO[bytes], first_chunk: int, last_chunk: int
) -> Iterator[tuple[int, bytes]]:
    """The plain bytes of chunks `first_chunk` to `last_chunk`, from `stored` read at the
    first one's stored offset, each checked before it is given."""
    header = cipher.header
    for index in range(first_chunk, last_chunk + 1):
        wanted = header.plain_chunk_length(index) + TAG_BYTES
        yield index, cipher.open(index, _read_exactly(stored, wanted))


def plain_range(cipher: ChunkCipher, stored: IO[bytes], first: int, last: int) -> Iterator[bytes]:
    """Plain bytes `first` to `last` (inclusive), from `stored` opened at the stored offset
    of the chunk holding `first` (chunk_span)."""
    size = cipher.header.chunk_size
    for index, plain in open_chunks(cipher, stored, first // size, last // size):
        start = index * size
        yield plain[max(first - start, 0) : last - start + 1]


def _read_exactly(stored: IO[bytes], wanted: int) -> bytes:
    parts, missing = [], wanted
    while missing > 0:
        part = stored.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Sealing:
    """How new files are sealed: under which master key, through which key wrapper."""

    keys: KeyWrapper
    key_id: str

    def writer(self, out: IO[bytes], plain_length: int) -> SealingWriter:
        return SealingWriter(out, self.keys, self.key_id, plain_length)

    def seal_file(self, plain_path: os.PathLike | str, sealed: IO[bytes]) -> tuple[str, int]:
        """The plain file at `plain_path` written sealed to `sealed`: the SHA-256 of its
        plain bytes (hashed as they are sealed) and their length."""
        digest = hashlib.sha256()
        with open(plain_path, "rb") as plain:
            length = os.fstat(plain.fileno()).st_size
            writer = self.writer(sealed, length)
            while block := plain.read(CHUNK_BYTES * 4):
                digest.update(block)
                writer.write(block)
        writer.finish()
        return digest.hexdigest(), length
