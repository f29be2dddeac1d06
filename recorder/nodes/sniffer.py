"""One interface's sniffer on a capture node: a process of its own, started and watched by
the node's Celery worker (recorder/nodes/node.py).

It captures, follows calls, spools their audio and writes every event to the interface's
outbox (recorder/sinks/outbox.py). It needs neither the broker nor the database once it runs:
the directory's phone addresses and do-not-record numbers are read at start, from the
database when it answers and else from the copy the last start kept. It stops cleanly on
SIGTERM or SIGINT, and when the worker that started it is gone: calls in progress are
ended ("capture-ended") and become partial recordings.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection

from extensions.directory_view import do_not_record_ips, do_not_record_numbers, known_phone_ips
from recorder.capture.hepsocket import HepCapture
from recorder.capture.tcpdump import TcpdumpCapture
from recorder.engine.engine import Engine
from recorder.lib.files import write_atomically
from recorder.nodes.live import CaptureLoop, LiveSource
from recorder.recordings.recovery import leftover_spools
from recorder.sinks.outbox import STATS_NAME, OutboxSink, OutboxWriter

log = logging.getLogger("qms.capture")

STATS_EVERY = 1.0
# The interface's tcpdump, ended at the next start should this sniffer die without a stop.
TCPDUMP_PIDS = "tcpdump.pid"
DIRECTORY_CACHE = "directory.json"
# A database that does not answer within this many seconds at start is taken as down.
DATABASE_CONNECT_SECONDS = 5


# How often a running sniffer reads the directory's phones again.
DIRECTORY_REFRESH_SECONDS = 60


@dataclass(frozen=True)
class SnifferPaths:
    """Where one interface's sniffer keeps its files on the node."""

    outbox: Path  # <QMS_OUTBOX_DIR>/<interface>
    spool: Path  # <QMS_SPOOL_DIR>/<interface>

    @classmethod
    def of(cls, interface: str) -> SnifferPaths:
        return cls(
            Path(settings.QMS_OUTBOX_DIR) / interface, Path(settings.QMS_SPOOL_DIR) / interface
        )


@dataclass(frozen=True)
class DirectoryView:
    phone_ips: set[str]
    do_not_record: set[str]
    do_not_record_ips: set[str] = field(default_factory=set)


def directory_view(cache: Path) -> DirectoryView:
    """What the engine needs from the directory: from the database, kept in `cache`; from
    `cache` when the database does not answer, so a restart during an outage still
    captures."""
    if connection.vendor == "postgresql":
        connection.settings_dict["OPTIONS"].setdefault("connect_timeout", DATABASE_CONNECT_SECONDS)
    try:
        view = DirectoryView(known_phone_ips(), do_not_record_numbers(), do_not_record_ips())
    except DatabaseError as error:
        connection.close()
        log.warning("database unavailable at start (%s); using the directory kept before", error)
        return cached_directory(cache)
    finally:
        connection.close()
    found = {
        "phone_ips": sorted(view.phone_ips),
        "do_not_record": sorted(view.do_not_record),
        "do_not_record_ips": sorted(view.do_not_record_ips),
    }
    write_atomically(cache, json.dumps(found).encode())
    return view


def cached_directory(cache: Path) -> DirectoryView:
    try:
        found = json.loads(cache.read_text())
    except (OSError, ValueError):
        return DirectoryView(set(), set())
    return DirectoryView(
        set(found["phone_ips"]),
        set(found["do_not_record"]),
        set(found.get("do_not_record_ips", ())),
    )


class Sniffer:
    """One interface's capture, or with `hep` one HEP listener's (`interface` is then
    its address, such as 0.0.0.0:9060)."""

    def __init__(
        self, node: str, interface: str, bpf: str, parent_pid: int = 0, hep: bool = False
    ) -> None:
        self.node, self.interface, self.bpf, self.hep = node, interface, bpf, hep
        self.paths = SnifferPaths.of(interface)
        self.loop = CaptureLoop(STATS_EVERY, self._running_stats, parent_pid=parent_pid)
        self.started = time.time()

    def run(self) -> None:
        """Capture until told to stop; CaptureFileError if the interface cannot be opened."""
        self.loop.handle_signals()
        capture = self._source()
        self.paths.spool.mkdir(parents=True, exist_ok=True)
        sink = OutboxSink(OutboxWriter(self.paths.outbox, self.node, self.interface))
        for spool in leftover_spools(self.paths.spool):
            sink.recover(spool)
            log.warning("%s: call cut short in %s goes to the outbox", self.interface, spool)
        engine = self._engine(sink)
        try:
            capture.start()
        except BaseException:
            sink.close()
            raise
        threading.Thread(
            target=self._follow_directory, args=(engine,), name="qms-directory", daemon=True
        ).start()
        log.info("capturing on %s%s", self.interface, f" (filter {self.bpf!r})" if self.bpf else "")
        try:
            self.loop.run(capture, engine)
        finally:
            sink.close()
            self._write_stats(capture, engine, 0.0, running=False)
        log.info("%s: stopped after %d packets", self.interface, engine.stats.packets)

    def _source(self) -> LiveSource:
        if self.hep:
            auth_key = settings.QMS_HEP_AUTH_KEY.encode()
            return HepCapture(self.interface, auth_key, settings.QMS_CAPTURE_BUFFER_MIB << 20)
        return TcpdumpCapture(
            [self.interface],
            self.bpf,
            settings.QMS_CAPTURE_BUFFER_MIB,
            pid_file=self.paths.outbox / TCPDUMP_PIDS,
            signalling_buffer_mib=settings.QMS_SIGNALLING_BUFFER_MIB,
        )

    def _engine(self, sink: OutboxSink) -> Engine:
        view = directory_view(self.paths.outbox / DIRECTORY_CACHE)
        return Engine(
            sink,
            view.phone_ips,
            spool_root=self.paths.spool,
            do_not_record=view.do_not_record,
            do_not_record_ips=view.do_not_record_ips,
            record_unsignalled=settings.QMS_RECORD_UNSIGNALLED,
            max_call_seconds=settings.QMS_MAX_CALL_SECONDS,
        )

    def _follow_directory(self, engine: Engine) -> None:
        """Now and then, off the capture thread, the directory's phones and do-not-record
        list as they are now: a ShoreTel phone the TAPI poller bound after this sniffer
        started is recorded without a restart."""
        while not self.loop.stopping.wait(DIRECTORY_REFRESH_SECONDS):
            view = directory_view(self.paths.outbox / DIRECTORY_CACHE)
            engine.adopt_directory(view.phone_ips, view.do_not_record, view.do_not_record_ips)

    def _running_stats(self, capture: LiveSource, engine: Engine, rate: float) -> None:
        self._write_stats(capture, engine, rate, running=True)

    def _write_stats(self, capture: LiveSource, engine: Engine, rate: float, running: bool) -> None:
        drops = sum(found.lost for found in capture.stats())
        self.write_stats(
            running=running,
            packets=engine.stats.packets,
            packets_per_second=round(rate, 1),
            kernel_drops=drops,
            live_calls=len(engine.calls.calls),
            caps=dict(engine.stats.caps),
        )

    def write_stats(self, **figures: object) -> None:
        """What the worker's heartbeat shows in the admin (an error too, when it failed)."""
        stats = {"pid": os.getpid(), "started_at": self.started, "written_at": time.time()}
        stats.update(figures)
        self.paths.outbox.mkdir(parents=True, exist_ok=True)
        try:
            write_atomically(
                self.paths.outbox / STATS_NAME, json.dumps(stats).encode(), durable=False
            )
        except OSError as error:
            log.error("%s: cannot write its statistics: %s", self.interface, error)
