"""recorder/lib/files.py: atomic writes, JSON files and flock() locks, on a real disk.

Crash safety that needs a power cut to see (an fsync) is checked by what the code calls,
not by cutting the power: the other properties run for real, with a second process for the
locks.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recorder.lib import files
from recorder.lib.files import is_locked, locked, read_json, try_lock, write_atomically

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_bytes(b'{"old": true}')

    write_atomically(target, b'{"new": true}')

    assert read_json(target) == {"new": True}
    assert [path.name for path in tmp_path.iterdir()] == ["run.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_durable_write_waits_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))

    write_atomically(tmp_path / "stats.json", b"{}", durable=durable)

    # One fsync, of the new file, for a durable write: the folder is the caller's to sync.
    assert len(synced) == (1 if durable else 0)


def test_a_write_that_fails_keeps_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "directory.json"
    target.write_bytes(b"[1]")

    def no_space(source: object, destination: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", no_space)
    with pytest.raises(OSError):
        write_atomically(target, b"[2]")

    assert target.read_bytes() == b"[1]"
    assert [path.name for path in tmp_path.iterdir()] == ["directory.json"]


def test_a_file_that_is_no_json_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "call.json").write_bytes(b"{not json")
    with pytest.raises(ValueError):
        read_json(tmp_path / "call.json")


HOLDER = """
import sys, fcntl, os
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_lock_another_process_holds_is_refused_and_freed_when_it_dies(tmp_path: Path) -> None:
    lock = tmp_path / "deliver.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert is_locked(lock)
        assert try_lock(lock) is None
    finally:
        holder.kill()
        holder.wait(timeout=10)

    assert not is_locked(lock)
    fd = try_lock(lock)
    assert fd is not None
    os.close(fd)


def test_a_missing_file_is_not_locked(tmp_path: Path) -> None:
    assert not is_locked(tmp_path / "writer.lock")


def test_a_folder_lock_says_whether_the_folder_is_still_there_once_it_is_held(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "1700000000-call"
    spool.mkdir()
    taken, seen = threading.Event(), []

    def second_finalisation() -> None:
        taken.wait()
        with locked(spool) as present:
            seen.append(present)

    other = threading.Thread(target=second_finalisation)
    other.start()
    with locked(spool) as present:
        assert present
        taken.set()
        spool.rename(tmp_path / "finished")  # the first holder finishes and removes it
    other.join()

    assert seen == [False]


def test_a_missing_folder_yields_no_lock(tmp_path: Path) -> None:
    with locked(tmp_path / "gone") as present:
        assert not present


def test_the_module_imports_no_django() -> None:
    code = (
        "import sys; import recorder.lib.files; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
