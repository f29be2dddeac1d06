"""The recordings' files in their storage (settings.STORAGES["recordings"]), by name.

Finishing a batch of calls writes each call's file, makes the batch durable, and only then
commits the rows that name the files (recordings/finish.py write_recordings, then
commit_recordings in a transaction of the rows alone). How depends on the storage:

- a folder of this machine (Django's FileSystemStorage, the default, or a shared file
  system mounted there): each file is written in place at its final name, then every file
  and folder is fsynced once (media/spool.py sync_finished). No copy and no rename: this
  is the path the finishing benchmark measures (bench/RESULTS.md);
- anything else (an S3-compatible bucket): each file is written to a local file in the
  call's spool folder and uploaded with storage.save(); an object store answers a PUT only
  once the object is stored, so the upload is the durability, and it happens before the
  rows commit. An upload that fails raises StorageUnavailable: no row is written, and the
  spool stays to be finished again.

Reading goes through the storage too, a range or a stream at a time (open_range,
open_stream): a bucket's storage answers with a GET of those bytes alone (qms/lib/s3.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import IO

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage

from qms.lib.database import StorageUnavailable
from recorder.media.rtplog import pcm_folder
from recorder.media.spool import sync_finished

log = logging.getLogger(__name__)

# What a storage raises when it fails: the file system's OSError, an object store's
# botocore errors (a request refused, a server out of reach).
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)
# An object store's own errors, which say nothing of the spool being stored.
OBJECT_STORE_ERRORS = (BotoCoreError, ClientError)


class LocalFiles:
    """A storage that is a folder of this machine: files are written where they belong."""

    def __init__(self, storage: FileSystemStorage) -> None:
        self.storage = storage
        self.written: list[Path] = []

    def staging(self, name: str, spool: Path) -> Path:
        """Where the file of `name` is written: its own place in the storage."""
        return Path(self.storage.path(name))

    def store(self, name: str, local: Path) -> str:
        """The file at `local` kept as `name` (copied there unless it is there): the name."""
        destination = Path(self.storage.path(name))
        if local != destination:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, destination)
        self.written.append(destination)
        return name

    def make_durable(self) -> None:
        sync_finished(self.written)

    def discard(self) -> None:
        """The files stored so far removed: their rows will not be committed. Quietly: a
        file that cannot be removed must not hide why the batch was rolled back (it is
        named by its call, and overwritten when the call is finished again)."""
        for path in self.written:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                log.exception("%s could not be removed after its batch failed", path)


class UploadedFiles:
    """Any other storage: files are written on local disk, in the spool's folder, and
    uploaded through the storage's save()."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.uploaded: list[str] = []
        self.staged: set[Path] = set()

    def staging(self, name: str, spool: Path) -> Path:
        """A local file beside the call's log; it goes with the spool, whatever happens."""
        folder = pcm_folder(spool)
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f"upload-{Path(name).name}"
        self.staged.add(staged)
        return staged

    def store(self, name: str, local: Path) -> str:
        """The file at `local` uploaded as `name`: the name the storage gave it. A staged
        file is removed once uploaded; the call's log (a raw recording) is left alone."""
        try:
            with local.open("rb") as content:
                stored = self.storage.save(name, File(content, name=name))
        except OBJECT_STORE_ERRORS as error:
            why = f"the recording {name} could not be stored: {error}"
            raise StorageUnavailable(why) from error
        self.uploaded.append(stored)
        if local in self.staged:
            local.unlink(missing_ok=True)
        return stored

    def make_durable(self) -> None:
        """Nothing to do: an object store answered each upload once it had stored it."""

    def discard(self) -> None:
        """The objects uploaded so far deleted, as far as the storage answers: one left
        behind is named by its call, and overwritten when the call is finished again."""
        for name in self.uploaded:
            delete_quietly(self.storage, name)
        for staged in self.staged:
            staged.unlink(missing_ok=True)


RecordingFiles = LocalFiles | UploadedFiles


def recording_files(storage: Storage) -> RecordingFiles:
    """How a batch's files go into `storage` (see the module's docstring)."""
    if isinstance(storage, FileSystemStorage):
        return LocalFiles(storage)
    return UploadedFiles(storage)


def delete_quietly(storage: Storage, name: str) -> bool:
    """Delete a stored file; a storage that fails is logged, not raised: whether it went."""
    try:
        storage.delete(name)
    except STORAGE_ERRORS as error:
        log.error("recording file %s could not be deleted (%s): delete it by hand", name, error)
        return False
    return True


def open_range(storage: Storage, name: str, first: int, last: int) -> IO[bytes]:
    """The stored file `name`, to be read from byte `first` up to byte `last` (inclusive).
    FileNotFoundError when it is not there."""
    ranged = getattr(storage, "open_range", None)
    if ranged is not None:
        return ranged(name, first, last)
    audio = storage.open(name, "rb")
    audio.seek(first)
    return audio


def open_stream(storage: Storage, name: str) -> IO[bytes]:
    """The stored file `name`, to be read once from its start. FileNotFoundError when it
    is not there."""
    streamed = getattr(storage, "open_stream", None)
    if streamed is not None:
        return streamed(name)
    return storage.open(name, "rb")
