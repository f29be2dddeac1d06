"""Changing how stored recordings are sealed: rewrapping their data keys under another
master key (rotate), and sealing plain ones in place (encrypt). Both are resumable: each
file is done on its own and its row written after it, and a file already done is
recognised by its header, so a run stopped anywhere is finished by running it again.

Rotation rewrites a file's header alone, never its audio. In a folder of this machine it
is done in place, in two writes of one key slot each, each made durable before the next
(media/sealed.py): the new wrap into the free slot, then the old slot cleared. At every
moment one slot opens the file. An object in a bucket cannot be partly rewritten: it is
copied through a local file with the new header and put again under its name (one PUT,
which the store applies whole or not at all), so rotating a bucket moves every byte once.

Sealing a plain file writes the sealed file beside it under a temporary name, fsyncs it,
and moves it over the plain one (os.replace), then fsyncs the folder; in a bucket it puts
the sealed object over the plain one. Only then is the row written. A crash between the
two leaves a row without a key id naming a sealed file, which plays (encryption.py) and
which the next run recognises and records. The plain file's SHA-256 must match its row's
before it is sealed: a file altered while plain is reported, never sealed as if genuine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage

from recorder.lib.files import fsync_directory
from recorder.media.sealed import (
    HEADER_BYTES,
    SLOT_BYTES,
    SLOTS_AT,
    SealedFileError,
    SealedHeader,
    Sealing,
    is_sealed,
    open_slot,
    parse_header,
    wrap_slot,
)
from recorder.models import Recording
from recorder.recordings.archive import open_range, open_stream
from recorder.recordings.keys import key_provider

COPY_BLOCK_BYTES = 1 << 20


class NotGenuine(Exception):
    """A plain file whose SHA-256 is not its row's: it is not sealed."""


@dataclass(frozen=True)
class Outcome:
    recording: Recording
    done: bool  # False: it already was as asked, only its row was brought up to date
    problem: str = ""


# -- rotation ----------------------------------------------------------------------------


def recordings_to_rotate(to_key_id: str) -> Iterator[Recording]:
    """Sealed recordings whose data key is not yet wrapped under `to_key_id`, in id order."""
    rows = Recording.objects.exclude(encryption_key_id="").exclude(encryption_key_id=to_key_id)
    return rows.order_by("pk").iterator(chunk_size=500)


def rotate(recording: Recording, to_key_id: str) -> bool:
    """The recording's data key wrapped under `to_key_id` alone, its row saying so: whether
    its file's header had to change."""
    storage, name = recording.file.storage, recording.file.name
    header = _header(storage, name)
    changed = header.key_ids != [to_key_id]
    if changed and isinstance(storage, FileSystemStorage):
        _rotate_in_place(Path(storage.path(name)), header, to_key_id)
    elif changed:
        _rotate_by_copy(storage, name, header, to_key_id)
    Recording.objects.filter(pk=recording.pk).update(encryption_key_id=to_key_id)
    return changed


def _header(storage: Storage, name: str) -> SealedHeader:
    with closing(open_range(storage, name, 0, HEADER_BYTES - 1)) as head:
        return parse_header(head.read(HEADER_BYTES))


def _rotated_slots(header: SealedHeader, to_key_id: str) -> tuple[int, int, SealedHeader]:
    """Which slot to write first and which to clear then, and the header whose first
    slot holds the wrap under `to_key_id`. The slot that opens the file now is only
    cleared once the other holds the new wrap, unless it is itself under `to_key_id`
    (a run stopped between its two writes): then only the other slot is cleared."""
    keys = key_provider()
    opener, data_key = open_slot(header, keys)
    if header.slots[opener].key_id == to_key_id:
        return opener, 1 - opener, header
    slots = list(header.slots)
    slots[1 - opener] = wrap_slot(keys, to_key_id, header, data_key)
    return 1 - opener, opener, header.with_slots(*slots)


def _rotate_in_place(path: Path, header: SealedHeader, to_key_id: str) -> None:
    kept, cleared, rotated = _rotated_slots(header, to_key_id)
    packed = rotated.pack()
    with path.open("r+b") as stored:
        # First the new wrap, durable, while the old slot still opens the file...
        _write_slot(stored, kept, packed)
        # ...then the old slot cleared: the new one is all that is left.
        _write_slot(stored, cleared, bytes(HEADER_BYTES))


def _write_slot(stored, slot: int, packed_header: bytes) -> None:
    at = SLOTS_AT + slot * SLOT_BYTES
    os.pwrite(stored.fileno(), packed_header[at : at + SLOT_BYTES], at)
    os.fsync(stored.fileno())


def _rotate_by_copy(storage: Storage, name: str, header: SealedHeader, to_key_id: str) -> None:
    _, cleared, rotated = _rotated_slots(header, to_key_id)
    slots = list(rotated.slots)
    slots[cleared] = None
    with tempfile.TemporaryFile() as local:
        local.write(rotated.with_slots(*slots).pack())
        with closing(open_range(storage, name, HEADER_BYTES, header.stored_length - 1)) as body:
            shutil.copyfileobj(body, local, COPY_BLOCK_BYTES)
        local.seek(0)
        storage.save(name, File(local, name=name))


# -- sealing plain recordings ---------------------------------------------------------------


def recordings_to_seal() -> Iterator[Recording]:
    """Recordings with a file and no key id, in id order."""
    rows = Recording.objects.filter(encryption_key_id="").exclude(file="")
    return rows.order_by("pk").iterator(chunk_size=500)


def seal_recording(recording: Recording, sealing: Sealing) -> bool:
    """The recording's plain file replaced by its sealed form, then its row: whether the
    file had to be sealed (False: a stopped run had, and only the row was left)."""
    storage, name = recording.file.storage, recording.file.name
    with closing(open_range(storage, name, 0, HEADER_BYTES - 1)) as head:
        first = head.read(HEADER_BYTES)
    if is_sealed(first):
        key_id = parse_header(first).key_ids[0]
        Recording.objects.filter(pk=recording.pk).update(encryption_key_id=key_id)
        return False
    if isinstance(storage, FileSystemStorage):
        _seal_in_place(Path(storage.path(name)), sealing, recording.sha256)
    else:
        _seal_by_copy(storage, name, sealing, recording.sha256)
    Recording.objects.filter(pk=recording.pk).update(encryption_key_id=sealing.key_id)
    return True


def _seal_in_place(path: Path, sealing: Sealing, expected: str) -> str:
    temporary = path.with_name(f".{path.name}.sealing")
    try:
        with temporary.open("wb") as out:
            sha256, _ = sealing.seal_file(path, out)
            _refuse_unless(expected, sha256, path.name)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)
    return sha256


def _seal_by_copy(storage: Storage, name: str, sealing: Sealing, expected: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        plain, sealed = Path(folder) / "plain", Path(folder) / "sealed"
        with closing(open_stream(storage, name)) as source, plain.open("wb") as copy:
            shutil.copyfileobj(source, copy, COPY_BLOCK_BYTES)
        with sealed.open("wb") as out:
            sha256, _ = sealing.seal_file(plain, out)
        _refuse_unless(expected, sha256, name)
        with sealed.open("rb") as content:
            storage.save(name, File(content, name=name))
    return sha256


def _refuse_unless(expected: str, sha256: str, name: str) -> None:
    if expected and expected != sha256:
        raise NotGenuine(
            f"{name}: its SHA-256 is not the one stored when it was recorded, so it is not "
            "sealed (run verify_recordings)"
        )


__all__ = [
    "NotGenuine",
    "SealedFileError",
    "recordings_to_rotate",
    "recordings_to_seal",
    "rotate",
    "seal_recording",
]
