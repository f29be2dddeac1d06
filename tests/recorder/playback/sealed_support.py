"""Recordings whose files are sealed (encrypted at rest) for the playback tests."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from django.core.files.base import ContentFile

from recorder.media.sealed import HEADER_BYTES, TAG_BYTES, Sealing
from recorder.models import Recording
from recorder.recordings.keys import SettingsKeys

SEALED_CHUNK = 64 * 1024


def seal(plain: bytes, key_id: str = "test-2025") -> bytes:
    out = io.BytesIO()
    writer = Sealing(SettingsKeys(), key_id).writer(out, len(plain))
    writer.write(plain)
    writer.finish()
    return out.getvalue()


def sealed_recording(row: Recording, plain: bytes, key_id: str = "test-2025") -> Recording:
    """`row`'s file replaced by `plain` sealed under `key_id`, its row saying so."""
    name = row.file.name
    row.file.storage.delete(name)
    row.file.save(name, ContentFile(seal(plain, key_id)), save=False)
    row.size, row.sha256 = len(plain), hashlib.sha256(plain).hexdigest()
    row.encryption_key_id = key_id
    row.save()
    return row


def chunk_offset(index: int, within: int = 0) -> int:
    """Where byte `within` of chunk `index`'s ciphertext is stored."""
    return HEADER_BYTES + index * (SEALED_CHUNK + TAG_BYTES) + within


def flip_bit(path: Path, offset: int) -> None:
    with path.open("r+b") as stored:
        stored.seek(offset)
        byte = stored.read(1)[0]
        stored.seek(offset)
        stored.write(bytes([byte ^ 0x01]))
