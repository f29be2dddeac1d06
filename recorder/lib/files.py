"""Files written so a crash never leaves half of one, and the locks between processes.

Crash safety comes in two strengths, and each caller says which it needs:

- atomic: a reader (or a restarted process) sees the old file or the new one, never half
  of one. That survives a killed process (the kernel has what write() accepted).
- durable: the new content is on the disk itself before it takes the old one's name, so it
  survives a power cut too. The *name* (the rename, or a file just created) is durable only
  once its directory is fsynced: fsync_directory(path.parent).

Locks are flock() locks on a file or a folder: held for as long as the open file
description lives, and released by the kernel when the process that holds them dies, so a
killed holder never leaves a stale lock behind.

Pure: the standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` by `data`, atomically: through a temporary file beside it, then
    os.replace(). `durable` also fsyncs the new file before the rename (not its directory:
    see fsync_directory). Nothing of a failed write stays behind."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as opened:
            opened.write(data)
            if durable:
                opened.flush()
                os.fsync(opened.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def fsync_directory(path: Path) -> None:
    """Make the names in folder `path` durable: files created, renamed or removed there."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """The JSON document in `path` (UTF-8). OSError if it cannot be read, ValueError if it
    is no JSON; the caller checks its shape."""
    return json.loads(path.read_bytes())


def try_lock(path: Path) -> int | None:
    """An exclusive lock on file `path` (created if need be), held until the returned file
    descriptor is closed; None, at once, when another holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_locked(path: Path) -> bool:
    """True while someone holds the lock on file `path`; a missing file is not locked. (A
    holder that died released it.) The test lock is let go at once."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def locked(path: Path) -> Iterator[bool]:
    """Hold the exclusive lock on file or folder `path`, waiting for it as long as another
    holds it; yields whether `path` is (still) there once the lock is ours."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path.exists()
    finally:
        os.close(fd)
