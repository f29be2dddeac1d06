"""From an interface's outbox to the broker, in order, until the database has every event.

One thread per interface folder of the node's outbox, in the node's Celery worker (never
in the sniffer). It sends each run's events as tasks to the node's queue, oldest run first,
and follows the run's OutboxCursor in the database to see them applied. Events are sent a
window ahead of the cursor; when the cursor has not moved for QMS_OUTBOX_REDELIVER_SECONDS,
the window is sent again from the cursor on (a broker restarted without persistence has
forgotten them; duplicates are skipped by the tasks). Nothing is sent while the database
does not answer, and a broker that refuses a message is tried again with back-off: the
outbox holds the events meanwhile. A run is removed once its sniffer is gone and its last
event is applied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from kombu.exceptions import KombuError, OperationalError

from recorder.lib.files import try_lock
from recorder.nodes.models import OutboxCursor
from recorder.nodes.queues import queue_for
from recorder.sinks import ordered
from recorder.sinks.outbox import (
    BINDING,
    CALL,
    DELIVER_LOCK,
    ENCRYPTED,
    RECOVER,
    OutboxRecord,
    RunReader,
    run_meta,
    runs_of,
    writer_alive,
)

log = logging.getLogger("qms.capture")

# Events sent ahead of the last one applied.
WINDOW = 500
POLL_SECONDS = 0.2
BACKOFF_SECONDS = (0.5, 1, 2, 5, 10)
# Whatever the broker client raises when Redis is down or restarting.
BROKER_ERRORS = (KombuError, OperationalError, ConnectionError, OSError)


def event_tasks() -> dict[str, Callable]:
    return {
        BINDING: ordered.apply_binding,
        CALL: ordered.record_call,
        ENCRYPTED: ordered.note_encrypted_signalling,
        RECOVER: ordered.recover_spool,
    }


def applied_seq(run: str) -> int:
    found = OutboxCursor.objects.filter(run=run).values_list("applied_seq", flat=True).first()
    return found or 0


class RunDelivery:
    """The delivery of one run: what was sent, what is applied, when it last moved."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = run_dir
        meta = run_meta(run_dir)
        self.key, self.node = meta["run"], meta["node"]
        self.reader = RunReader(run_dir)
        self.applied = 0
        self.sent = 0
        self.known = False
        self.moved_at = time.monotonic()

    def follow(self, applied: int) -> None:
        if applied > self.applied:
            self.applied, self.moved_at = applied, time.monotonic()
            self.reader.prune(applied)
        self.sent = max(self.sent, self.applied)
        stalled = time.monotonic() - self.moved_at > settings.QMS_OUTBOX_REDELIVER_SECONDS
        if stalled and self.sent > self.applied:
            log.warning("%s: events from %d not applied yet; sending them again", self.key, applied)
            self.sent, self.moved_at = self.applied, time.monotonic()

    def due(self) -> list[OutboxRecord]:
        records = self.reader.read(self.sent + 1, WINDOW - (self.sent - self.applied))
        if records and self.sent == self.applied:
            # Nothing was awaited: the wait for these begins now.
            self.moved_at = time.monotonic()
        return records

    def finished(self) -> bool:
        # The writer's lock first: once it is free, no record can follow the last one read.
        return not writer_alive(self.directory) and self.reader.last_seq() <= self.applied

    def backlog(self) -> int:
        return max(self.reader.last_seq() - self.applied, 0)


class Deliverer:
    """Delivers the runs of one interface's outbox, oldest first, from a thread."""

    def __init__(self, interface_dir: Path, lock_fd: int, app) -> None:
        self.directory = interface_dir
        self.lock_fd = lock_fd
        self.app = app
        self.tasks = event_tasks()
        self.stopping = threading.Event()
        self.current: RunDelivery | None = None
        self.counters: dict[Path, RunReader] = {}
        self.backlog = 0
        self.failures = 0
        self.connection = None
        self.thread = threading.Thread(
            target=self._run, name=f"qms-deliver-{interface_dir.name}", daemon=True
        )

    @classmethod
    def claim(cls, interface_dir: Path, app) -> Deliverer | None:
        """A deliverer for the folder, unless another worker on the node delivers it."""
        fd = try_lock(interface_dir / DELIVER_LOCK)
        return None if fd is None else cls(interface_dir, fd, app)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self._drop_connection()
        os.close(self.lock_fd)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                pause = self._step()
                self.stopping.wait(pause)
        finally:
            connection.close()

    def _step(self) -> float:
        """One round; returns how long to wait before the next."""
        close_old_connections()
        runs = runs_of(self.directory)
        if not runs:
            self.current, self.backlog = None, 0
            return POLL_SECONDS * 5
        if self.current is None or self.current.directory != runs[0]:
            self.current = RunDelivery(runs[0])
        try:
            return self._deliver(self.current, runs[1:])
        except DatabaseError as error:
            connection.close()
            return self._failed("database", error)
        except BROKER_ERRORS as error:
            self._drop_connection()
            return self._failed("broker", error)

    def _deliver(self, run: RunDelivery, later: list[Path]) -> float:
        # The database is asked only when there is something to learn: where a run stands
        # at first, whether what was sent is applied, and whether it is up before sending.
        if not run.known or run.sent > run.applied or run.reader.last_seq() > run.sent:
            run.follow(applied_seq(run.key))
            run.known = True
        if run.finished():
            self._remove(run)
            return 0.0
        # Written and not yet applied, whether or not the broker takes them now.
        self.backlog = run.backlog() + sum(self._counter(path).last_seq() for path in later)
        for record in run.due():
            self._send(run, record)
            run.sent = record.seq
        if self.failures:
            log.info("%s: delivering again (%d events waiting)", self.directory.name, self.backlog)
            self.failures = 0
        return POLL_SECONDS

    def _counter(self, run_dir: Path) -> RunReader:
        """A reader that counts a later run's events once, and then only what is new."""
        if run_dir not in self.counters:
            self.counters[run_dir] = RunReader(run_dir)
        return self.counters[run_dir]

    def _send(self, run: RunDelivery, record: OutboxRecord) -> None:
        task = self.tasks[record.kind]
        task.apply_async(
            (run.key, record.seq, record.event, run.node),
            queue=queue_for(run.node),
            connection=self._connection(),
            retry=False,
        )

    def _connection(self):
        if self.connection is None:
            self.connection = self.app.connection_for_write()
        return self.connection

    def _drop_connection(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                self.connection.close()
            self.connection = None

    def _remove(self, run: RunDelivery) -> None:
        log.info("%s: every event applied (%d); run removed", run.key, run.applied)
        shutil.rmtree(run.directory, ignore_errors=True)
        self.counters.pop(run.directory, None)
        self.current = None

    def _failed(self, service: str, error: Exception) -> float:
        self.failures += 1
        if self.failures == 1 or self.failures % 60 == 0:
            log.warning(
                "%s: %s unavailable (%s); events wait in the outbox",
                self.directory.name,
                service,
                error,
            )
        return BACKOFF_SECONDS[min(self.failures, len(BACKOFF_SECONDS)) - 1]
