"""The sealed file format (recorder/media/sealed.py) on its own: round trips at every size
boundary, any range read without the start, and every way a file can be altered refused."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.media.sealed import (
    CHUNK_BYTES,
    HEADER_BYTES,
    SLOTS_AT,
    TAG_BYTES,
    ChunkCipher,
    SealedFileError,
    Sealing,
    TamperedChunk,
    UnknownKey,
    chunk_span,
    data_key_of,
    open_chunks,
    parse_header,
    plain_range,
)
from recorder.recordings.keys import SettingsKeys

KEYS = SettingsKeys({"old": bytes(range(32)), "new": bytes(range(32, 64))})
SIZES = [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 17]


def sealed_bytes(plain: bytes, keys: SettingsKeys = KEYS, key_id: str = "old") -> bytes:
    out = io.BytesIO()
    writer = Sealing(keys, key_id).writer(out, len(plain))
    # In uneven pieces, as a WAV's header and then its blocks come.
    for start in range(0, len(plain), 40_000):
        writer.write(plain[start : start + 40_000])
    writer.finish()
    return out.getvalue()


def opened(stored: bytes, keys: SettingsKeys = KEYS) -> ChunkCipher:
    header = parse_header(stored[:HEADER_BYTES])
    return ChunkCipher(header, data_key_of(header, keys))


def read_range(stored: bytes, first: int, last: int, keys: SettingsKeys = KEYS) -> bytes:
    cipher = opened(stored, keys)
    span = chunk_span(cipher.header, first, last)
    piece = io.BytesIO(stored[span.stored_first : span.stored_last + 1])
    return b"".join(plain_range(cipher, piece, first, last))


def read_all(stored: bytes, keys: SettingsKeys = KEYS) -> bytes:
    cipher = opened(stored, keys)
    last = cipher.header.chunk_count - 1
    chunks = open_chunks(cipher, io.BytesIO(stored[HEADER_BYTES:]), 0, last)
    return b"".join(plain for _, plain in chunks)


@pytest.mark.parametrize("size", SIZES)
def test_a_file_of_any_size_comes_back_as_it_was_sealed(size: int) -> None:
    plain = os.urandom(size)
    stored = sealed_bytes(plain)
    header = parse_header(stored)
    assert len(stored) == header.stored_length
    assert header.plain_length == size
    assert read_all(stored) == plain
    # Nothing of the plain bytes shows through (a long enough file to tell).
    if size >= 64:
        assert plain[:64] not in stored


@pytest.mark.parametrize("size", SIZES)
def test_writing_it_in_one_block_seals_the_same_plain_bytes(size: int) -> None:
    plain = os.urandom(size)
    out = io.BytesIO()
    writer = Sealing(KEYS, "old").writer(out, size)
    writer.write(plain)
    writer.finish()
    assert read_all(out.getvalue()) == plain


def test_a_writer_given_fewer_bytes_than_promised_says_so() -> None:
    writer = Sealing(KEYS, "old").writer(io.BytesIO(), 10)
    writer.write(b"12345")
    with pytest.raises(ValueError, match="5 plain bytes written of 10"):
        writer.finish()


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (0, 0),
        (CHUNK_BYTES - 1, CHUNK_BYTES),  # the last byte of one chunk and the first of the next
        (CHUNK_BYTES, CHUNK_BYTES),
        (CHUNK_BYTES - 3, 2 * CHUNK_BYTES + 3),  # across two edges
        (3 * CHUNK_BYTES, 3 * CHUNK_BYTES + 16),  # the short last chunk, to its end
    ],
)
def test_a_range_across_chunk_edges_reads_only_its_chunks(first: int, last: int) -> None:
    plain = os.urandom(3 * CHUNK_BYTES + 17)
    stored = sealed_bytes(plain)
    assert read_range(stored, first, last) == plain[first : last + 1]
    span = chunk_span(parse_header(stored), first, last)
    assert span.last_chunk - span.first_chunk == last // CHUNK_BYTES - first // CHUNK_BYTES


PLAIN = os.urandom(5 * CHUNK_BYTES + 1234)
STORED = sealed_bytes(PLAIN)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_random_range_is_exactly_its_plain_bytes(data: st.DataObject) -> None:
    first = data.draw(st.integers(0, len(PLAIN) - 1))
    last = data.draw(st.integers(first, len(PLAIN) - 1))
    assert read_range(STORED, first, last) == PLAIN[first : last + 1]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(STORED) - 1), st.integers(0, 7))
def test_any_flipped_bit_is_refused_or_changes_no_byte_of_audio(offset: int, bit: int) -> None:
    altered = bytearray(STORED)
    altered[offset] ^= 1 << bit
    try:
        plain = read_all(bytes(altered))
    except SealedFileError:
        return
    # Only the header's padding is not authenticated, and it holds no audio.
    assert plain == PLAIN
    assert offset < HEADER_BYTES


def test_a_flipped_bit_in_the_wrapped_data_key_fails_the_unwrap() -> None:
    altered = bytearray(STORED)
    altered[SLOTS_AT + 1 + 64 + 12 + 5] ^= 0x80
    with pytest.raises(SealedFileError, match="does not open"):
        opened(bytes(altered))


def test_a_flipped_bit_in_a_chunk_names_that_chunk() -> None:
    altered = bytearray(STORED)
    altered[HEADER_BYTES + 2 * (CHUNK_BYTES + TAG_BYTES) + 100] ^= 0x01
    with pytest.raises(TamperedChunk) as refused:
        read_all(bytes(altered))
    assert refused.value.index == 2
    # The chunks before it still read, one range at a time.
    assert read_range(bytes(altered), 0, CHUNK_BYTES - 1) == PLAIN[:CHUNK_BYTES]


def test_a_file_cut_at_a_chunk_edge_is_refused_as_cut() -> None:
    cut = STORED[: HEADER_BYTES + 3 * (CHUNK_BYTES + TAG_BYTES)]
    with pytest.raises(SealedFileError, match="cut short"):
        read_all(cut)


def test_swapped_chunks_fail_their_tags() -> None:
    whole = CHUNK_BYTES + TAG_BYTES
    chunks = [STORED[HEADER_BYTES + n * whole : HEADER_BYTES + (n + 1) * whole] for n in range(5)]
    swapped = STORED[:HEADER_BYTES] + chunks[1] + chunks[0] + b"".join(chunks[2:])
    swapped += STORED[HEADER_BYTES + 5 * whole :]
    with pytest.raises(TamperedChunk) as refused:
        read_all(swapped)
    assert refused.value.index == 0


def test_a_changed_plain_length_in_the_header_fails_the_unwrap() -> None:
    altered = bytearray(STORED)
    altered[19] ^= 0x01  # the plain length's last byte
    with pytest.raises(SealedFileError, match="does not open"):
        opened(bytes(altered))


def test_the_wrong_key_under_the_right_id_does_not_open_it() -> None:
    impostor = SettingsKeys({"old": bytes(32)})
    with pytest.raises(SealedFileError, match="not the one it was sealed with"):
        opened(STORED, impostor)


def test_a_key_id_that_is_not_configured_is_named() -> None:
    with pytest.raises(UnknownKey, match="key id old, which is not among the keys"):
        opened(STORED, SettingsKeys({"new": bytes(range(32, 64))}))


def test_a_plain_file_is_not_taken_for_a_sealed_one() -> None:
    with pytest.raises(SealedFileError, match="not a sealed recording"):
        parse_header(b"RIFF" + bytes(600))


def test_each_file_has_its_own_data_key_and_nonces() -> None:
    again = sealed_bytes(PLAIN)
    assert again[HEADER_BYTES:] != STORED[HEADER_BYTES:]
    assert read_all(again) == PLAIN
