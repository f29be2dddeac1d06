"""The capture process's durable outbox: its events on local disk until the database has them.

A sniffer hosted by a capture node's worker hands its bindings and call snapshots to an
OutboxSink instead of the database. Each event is appended to a file on local disk (one
write per event, so a killed process loses none; fsynced in batches, so a power cut loses
at most the last SYNC_SECONDS), and the worker's delivery thread (recorder/sinks/delivery.py)
sends them to the broker in order whenever the broker and the database are up. Neither an
outage of Redis nor one of PostgreSQL stops the capture: the outbox grows meanwhile.

Layout on disk, one folder per interface, one run per sniffer process:

    <QMS_OUTBOX_DIR>/<interface>/
        deliver.lock              held by the thread that delivers this interface's runs
        stats.json                the running sniffer's figures, for the worker's heartbeat
        <run>/                    "<start time in ns>-<random>": one sniffer's life
            run.json              {"run": "<node>:<interface>:<run>", "node": ..., ...}
            writer.lock           held by the sniffer while it writes
            000000000001.events   segments, named by their first sequence number

A record, little-endian:

    +-------------+-------------+------------------------------------------+
    | length      | CRC-32      | JSON, UTF-8: {"seq", "kind", "event"}     |
    | uint32      | uint32      | `length` bytes                           |
    +-------------+-------------+------------------------------------------+

A record cut short by a crash fails its length or CRC and ends the run there. Sequence
numbers start at 1 in every run and have no gaps; the run's key and a record's sequence
number identify an event everywhere (recorder/tasks.py applies each exactly once, in order).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from integrations.observations import BindingSeen, EncryptedSignallingSeen
from recorder.engine.calls import CallSnapshot
from recorder.engine.codec import binding_json, encrypted_json, snapshot_json
from recorder.lib.files import fsync_directory, is_locked, try_lock, write_atomically

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct("<II")
SEGMENT_SUFFIX = ".events"
# A segment is closed and a new one begun past this size; delivered segments are removed.
SEGMENT_BYTES = 8 * 1024 * 1024
# The longest record a reader accepts: anything longer is a damaged length field.
MAX_RECORD_BYTES = 1024 * 1024
SYNC_SECONDS = 0.2
RUN_META = "run.json"
WRITER_LOCK = "writer.lock"
DELIVER_LOCK = "deliver.lock"
STATS_NAME = "stats.json"

BINDING, CALL, ENCRYPTED, RECOVER = "binding", "call", "encrypted", "recover"


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    seq: int
    kind: str
    event: dict


# --- records -----------------------------------------------------------------------------


def encode_record(seq: int, kind: str, event: dict) -> bytes:
    """An event's JSON (recorder/engine/codec.py) behind its length and CRC."""
    body = json.dumps({"seq": seq, "kind": kind, "event": event}, separators=(",", ":")).encode()
    return RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body


# --- writing -----------------------------------------------------------------------------


def new_run_name() -> str:
    """Sortable by start, unique without coordination."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


class OutboxWriter:
    """Appends one sniffer's events to a new run of its interface's outbox."""

    def __init__(self, interface_dir: Path, node: str, interface: str) -> None:
        self.directory = interface_dir / new_run_name()
        self.directory.mkdir(parents=True)
        self.key = f"{node}:{interface}:{self.directory.name}"
        meta = {"run": self.key, "node": node, "interface": interface, "pid": os.getpid()}
        write_atomically(self.directory / RUN_META, json.dumps(meta).encode())
        lock_fd = try_lock(self.directory / WRITER_LOCK)
        if lock_fd is None:  # the run's folder is new: no one else can hold its lock
            raise BlockingIOError(f"the writer lock of {self.directory} is held")
        self.lock_fd = lock_fd
        self.lock = threading.Lock()
        self.seq = 0
        self.fd = -1
        self.segment_size = 0
        self.unsynced = False
        self._open_segment(1)
        fsync_directory(self.directory)
        fsync_directory(interface_dir)

    def _open_segment(self, first_seq: int) -> None:
        path = self.directory / f"{first_seq:012d}{SEGMENT_SUFFIX}"
        self.fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self.segment_size = 0

    def append(self, kind: str, event: dict) -> int:
        with self.lock:
            self.seq += 1
            if self.segment_size >= SEGMENT_BYTES:
                os.fsync(self.fd)
                os.close(self.fd)
                self._open_segment(self.seq)
                fsync_directory(self.directory)
            record = encode_record(self.seq, kind, event)
            # One write per record: once it returns the kernel has the whole record, so a
            # killed process loses nothing it appended.
            os.write(self.fd, record)
            self.segment_size += len(record)
            self.unsynced = True
            return self.seq

    def sync(self) -> None:
        """Flush what was appended to the disk itself, without holding appends up."""
        with self.lock:
            if not self.unsynced:
                return
            self.unsynced = False
            fd = os.dup(self.fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sync()
        with self.lock:
            os.close(self.fd)
            self.fd = -1
        os.close(self.lock_fd)


class OutboxSink:
    """The engine's sink on a capture node: every event goes to the outbox, nothing waits
    for the database or the broker. A thread of its own fsyncs the outbox in batches."""

    def __init__(self, writer: OutboxWriter) -> None:
        self.writer = writer
        self.written = 0
        self.stopping = threading.Event()
        self.syncer = threading.Thread(target=self._sync_loop, name="qms-outbox-sync", daemon=True)
        self.syncer.start()

    def binding(self, seen: BindingSeen) -> None:
        self._append(BINDING, binding_json(seen))

    def call(self, snapshot: CallSnapshot) -> None:
        self._append(CALL, snapshot_json(snapshot))

    def encrypted(self, seen: EncryptedSignallingSeen) -> None:
        self._append(ENCRYPTED, encrypted_json(seen))

    def recover(self, spool: Path) -> None:
        """A spool a stopped sniffer left: to be finished as a partial recording. The task
        reads the spool's manifest itself (recorder/recordings/recovery.py), on this node."""
        self._append(RECOVER, {"spool": str(spool)})

    def _append(self, kind: str, event: dict) -> None:
        self.writer.append(kind, event)
        self.written += 1

    def _sync_loop(self) -> None:
        while not self.stopping.wait(SYNC_SECONDS):
            try:
                self.writer.sync()
            except OSError as error:
                log.error("cannot fsync the outbox %s: %s", self.writer.directory, error)

    def close(self) -> None:
        self.stopping.set()
        self.syncer.join()
        self.writer.close()


# --- reading -----------------------------------------------------------------------------


def runs_of(interface_dir: Path) -> list[Path]:
    """The runs of an interface's outbox, oldest first."""
    if not interface_dir.is_dir():
        return []
    return sorted(path for path in interface_dir.iterdir() if (path / RUN_META).exists())


def run_meta(run_dir: Path) -> dict:
    return json.loads((run_dir / RUN_META).read_text())


def writer_alive(run_dir: Path) -> bool:
    """True while a sniffer holds the run's writer lock (a dead one's lock is released)."""
    return is_locked(run_dir / WRITER_LOCK)


class RunReader:
    """Reads one run's records by sequence number, while its writer may still append.

    A record not yet whole at the end of the last segment is "not yet": it is read again
    later. The reader remembers where its next record starts, so reading on costs one pass;
    going back (a redelivery) scans that record's segment from its start. Records are
    numbered 1, 2, 3... without gaps, so counting whole records gives the last number.
    """

    def __init__(self, run_dir: Path) -> None:
        self.directory = run_dir
        self.next_seq = 1
        self.position: tuple[Path, int] | None = None
        self.counted = 0
        self.count_position: tuple[Path, int] | None = None

    def segments(self) -> list[Path]:
        found = []
        for path in self.directory.glob(f"*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append((int(path.name.removesuffix(SEGMENT_SUFFIX)), path))
        return [path for _, path in sorted(found)]

    def read(self, first_seq: int, limit: int) -> list[OutboxRecord]:
        """Up to `limit` whole records from `first_seq` on, in order."""
        if first_seq != self.next_seq or self.position is None:
            self._seek(first_seq)
        records: list[OutboxRecord] = []
        while self.position is not None and len(records) < limit:
            segment, offset = self.position
            batch, offset = read_segment(segment, offset, limit - len(records))
            records.extend(batch)
            self.position = (segment, offset)
            if len(records) < limit and not self._move_on(segment, offset):
                break
        if records:
            self.next_seq = records[-1].seq + 1
        return records

    def _move_on(self, segment: Path, offset: int) -> bool:
        """To the next segment, if there is one: the writer begins a segment only once the
        one before is whole, so its end is the end of that segment's records."""
        following = self._segment_after(segment)
        if following is None:
            return False
        if offset < segment.stat().st_size:
            log.error("outbox segment %s is damaged after byte %d", segment, offset)
        self.position = (following, 0)
        return True

    def _segment_after(self, segment: Path) -> Path | None:
        later = [path for path in self.segments() if path.name > segment.name]
        return later[0] if later else None

    def _seek(self, seq: int) -> None:
        """Place the reader at record `seq`: its segment is the last one starting at or
        before it; the records before it there are skipped."""
        self.next_seq, self.position = seq, None
        candidates = [path for path in self.segments() if segment_first(path) <= seq]
        if not candidates:
            return
        segment, offset = candidates[-1], 0
        while True:
            batch, end = read_segment(segment, offset, 1)
            if not batch or batch[0].seq >= seq:
                break
            offset = end
        self.position = (segment, offset)

    def last_seq(self) -> int:
        """The number of the run's last whole record (0 for none), counted on from where
        the last count stopped."""
        if self.count_position is None:
            segments = self.segments()
            if not segments:
                return 0
            # Segments already delivered may be gone: numbering goes on from the first left.
            self.counted = segment_first(segments[0]) - 1
            self.count_position = (segments[0], 0)
        while True:
            segment, offset = self.count_position
            counted, offset = count_records(segment, offset)
            self.counted += counted
            self.count_position = (segment, offset)
            following = self._segment_after(segment)
            if following is None:
                return self.counted
            self.count_position = (following, 0)

    def prune(self, applied_seq: int) -> None:
        """Remove the segments whose every record is applied; the last one always stays."""
        segments = self.segments()
        in_use = {position[0] for position in (self.position, self.count_position) if position}
        for path, following in itertools.pairwise(segments):
            if segment_first(following) - 1 <= applied_seq and path not in in_use:
                path.unlink(missing_ok=True)


def segment_first(path: Path) -> int:
    return int(path.name.removesuffix(SEGMENT_SUFFIX))


def count_records(segment: Path, offset: int) -> tuple[int, int]:
    """How many whole records a segment holds from `offset`, by their lengths alone."""
    counted = 0
    try:
        size = segment.stat().st_size
        with open(segment, "rb") as opened:
            while offset + RECORD_HEADER.size <= size:
                opened.seek(offset)
                length, _ = RECORD_HEADER.unpack(opened.read(RECORD_HEADER.size))
                if length > MAX_RECORD_BYTES or offset + RECORD_HEADER.size + length > size:
                    break
                counted += 1
                offset += RECORD_HEADER.size + length
    except FileNotFoundError:
        pass
    return counted, offset


def read_segment(segment: Path, offset: int, limit: int) -> tuple[list[OutboxRecord], int]:
    """Whole records of one segment from `offset`, up to `limit`; and where the next starts."""
    records: list[OutboxRecord] = []
    try:
        with open(segment, "rb") as opened:
            opened.seek(offset)
            while len(records) < limit:
                header = opened.read(RECORD_HEADER.size)
                if len(header) < RECORD_HEADER.size:
                    break
                length, crc = RECORD_HEADER.unpack(header)
                body = opened.read(length) if length <= MAX_RECORD_BYTES else b""
                if len(body) < length or zlib.crc32(body) != crc or not body:
                    break
                found = json.loads(body)
                records.append(OutboxRecord(found["seq"], found["kind"], found["event"]))
                offset += RECORD_HEADER.size + length
    except FileNotFoundError:
        pass
    return records, offset
