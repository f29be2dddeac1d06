"""Finishing the recordings of `sniff` and `import_pcap` off the capture process.

Finishing a call (decoding its RTP log, writing the audio file and its row) costs far more
of a core than following it. In the capture process it would compete for the interpreter
with the capture loop, and a burst of call ends would stall the capture. So a capture
command ends a call as a node does (recordings/finalise.py): the sink writes a
PendingFinalisation row in the transaction that ends the call, and once that commits hands
the row's id to a finisher. The ProcessFinisher's worker processes then decode the spool by
the same finalise_pending() a node's task runs.

Nothing is lost on the way:

- a worker that dies (killed, out of memory) is replaced, and what it may have held is
  handed over again: finishing is idempotent (the spool is locked while it is decoded, and
  a finished call's pending row is gone);
- when the command ends it waits for every recording it handed over; whatever its workers
  could not finish it finishes itself;
- a command killed outright leaves the pending rows and their spools: the next capture
  command finishes them before it captures (finish_left_over).

A worker takes no signals: Ctrl-C in a terminal, or a service manager's SIGTERM to the
whole group, reaches the command, which stops capturing and then waits for its workers to
finish what they hold. A worker whose command is gone finishes what is queued and ends.

A database that only this process can open (SQLite in memory, as the tests' default) has
no room for a second process: there the InlineFinisher finishes each recording in the sink's
thread, right after its batch commits, by the same function.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
from collections import Counter
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.db import connection

from recorder.nodes.models import PendingFinalisation
from recorder.recordings import finishing_process
from recorder.recordings.finalise import finish_batch, finish_one

log = logging.getLogger(__name__)

# How long close() waits at a time for the workers' reports.
IDLE_SECONDS = finishing_process.IDLE_SECONDS


def finish_left_over(node: str, spool_root: Path) -> int:
    """Finish the recordings a killed capture command handed over and never saw finished
    (their pending rows, under this spool root): before the command captures again, and
    before recover_spools() would take their spools for cut calls."""
    left = PendingFinalisation.objects.filter(node=node, spool__startswith=str(spool_root))
    pending_ids = list(left.order_by("pk").values_list("pk", flat=True))
    for first in range(0, len(pending_ids), finishing_process.BATCH):
        finish_batch(pending_ids[first : first + finishing_process.BATCH])
    finished = len(pending_ids)
    if finished:
        log.warning("finished %d recordings an earlier run left pending", finished)
    return finished


class Finisher(Protocol):
    """What a sink hands finished calls to: their pending rows, once committed."""

    processes: int
    # How the recordings it finished came out: status, NOTHING_TO_STORE or LEFT_PENDING.
    outcomes: Counter

    def start(self) -> None: ...

    def submit(self, pending: PendingFinalisation) -> None: ...

    def close(self) -> None: ...


class InlineFinisher:
    """Finishes each recording where it is handed over: the sink's thread, after the commit."""

    processes = 0

    def __init__(self) -> None:
        self.outcomes: Counter = Counter()

    def start(self) -> None:
        pass

    def submit(self, pending: PendingFinalisation) -> None:
        self.outcomes[finish_one(pending.pk)] += 1

    def close(self) -> None:
        pass


class ProcessFinisher:
    """Finishes recordings in `processes` worker processes of its own, started by start()
    or, at the latest, when the first recording is handed over.

    A worker is started afresh (spawn): it sets Django up, about a second of CPU. With
    `fork`, the workers that start() starts are forked instead and set up nothing: only for
    a caller that calls start() while it has no other thread and no open database
    connection (a sink's own process, recorder/sinks/sink_process.py). A worker started
    later (the first call's end, a dead worker's place) is started afresh all the same."""

    def __init__(self, processes: int, fork: bool = False, inherited: tuple = ()) -> None:
        self.processes = processes
        self.fork = fork
        # What a forked worker closes at once, of what it inherits: its parent's ends of
        # pipes, whose other ends must see the parent's death as theirs.
        self.inherited = inherited
        self.context = multiprocessing.get_context("spawn")
        self.jobs = self.context.Queue()
        self.results = self.context.Queue()
        self.workers: list = []
        # Handed over and not yet reported finished, oldest first.
        self.outstanding: dict[int, None] = {}
        self.outcomes: Counter = Counter()

    def start(self) -> None:
        """Start every worker now, not when the first call ends: a worker's start-up
        (Django's set-up, about a second of CPU) then overlaps the capture, instead of
        delaying the first recordings; with calls that all end together (an import of
        short calls), it came after the last packet."""
        while len(self.workers) < self.processes:
            self.workers.append(self._start_worker(forked=self.fork))

    def submit(self, pending: PendingFinalisation) -> None:
        """Called from the sink's thread once the batch that ended the call has committed."""
        self._collect()
        if len(self.workers) < self.processes:
            self.workers.append(self._start_worker())
        elif not all(worker.is_alive() for worker in self.workers):
            self._replace_dead()
        self.outstanding[pending.pk] = None
        self.jobs.put(pending.pk)

    def close(self) -> None:
        """Wait for everything handed over; finish here what the workers could not."""
        for _ in self.workers:
            self.jobs.put(None)
        while self.outstanding and any(worker.is_alive() for worker in self.workers):
            self._collect(timeout=IDLE_SECONDS)
        for worker in self.workers:
            worker.join(timeout=IDLE_SECONDS)
        self._collect()
        if self.outstanding:
            log.error(
                "the finishing processes ended with %d recordings unfinished (exit codes %s): "
                "finishing them here",
                len(self.outstanding),
                ", ".join(str(worker.exitcode) for worker in self.workers),
            )
            self.outcomes.update(finish_batch(list(self.outstanding)).values())
            self.outstanding.clear()
        self.jobs.close()
        self.results.close()

    def _start_worker(self, forked: bool = False):
        context = multiprocessing.get_context("fork") if forked else self.context
        worker = context.Process(
            target=finishing_process.work,
            args=(
                self.jobs,
                self.results,
                None if forked else settings_for_worker(),
                os.getpid(),
                self.inherited if forked else (),
                self.processes,
            ),
            name="qms-finisher",
            daemon=True,
        )
        worker.start()
        return worker

    def _replace_dead(self) -> None:
        """A worker died: a new one takes its place, and every recording not yet reported
        is handed over again (the dead one may have held any of them)."""
        for index, worker in enumerate(self.workers):
            if not worker.is_alive():
                log.error("a finishing process ended (exit code %s): replaced", worker.exitcode)
                self.workers[index] = self._start_worker()
        for pending_id in self.outstanding:
            self.jobs.put(pending_id)

    def _collect(self, timeout: float = 0.0) -> None:
        """The workers' reports so far, (pending id, outcome), waiting up to `timeout` for
        the first. A recording handed over twice is counted once."""
        while True:
            try:
                pending_id, outcome = self.results.get(timeout=timeout or None, block=bool(timeout))
            except queue.Empty:
                return
            timeout = 0.0
            if pending_id in self.outstanding:
                del self.outstanding[pending_id]
                self.outcomes[outcome] += 1


def settings_for_worker() -> dict:
    """This process's settings as they stand (a test's overrides and test database too),
    for a worker that starts without them: every one that can be sent."""
    found = {}
    for name in dir(settings):
        if not name.isupper() or name == "SETTINGS_MODULE":
            continue
        value = getattr(settings, name)
        try:
            pickle.dumps(value)
        except (pickle.PicklingError, TypeError, AttributeError):
            continue
        found[name] = value
    return found


def finishes_inline() -> bool:
    """Whether a capture command finishes its recordings in its own database thread: with
    QMS_FINISH_PROCESSES at 0, or a database only this process can open."""
    in_memory = getattr(connection, "is_in_memory_db", lambda: False)()
    return settings.QMS_FINISH_PROCESSES == 0 or in_memory
