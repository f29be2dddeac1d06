"""A capture command's DatabaseSink in a process of its own, off the capture's interpreter.

Applying bindings and calls to the database (the directory's rules, attribution, rows,
the pending finalisations) costs a capture command more than a millisecond of CPU a call.
In a thread of the capture process it competes with the capture loop for the interpreter:
importing 1,000 short calls, the packets took 3.0 s with the database thread beside them
against 1.1 s without it. A SinkProcess keeps only a small sender thread in the capture
process, which pickles the events in batches down a pipe; the process at the other end
runs the same DatabaseSink, and owns the command's finishing processes (recordings/
finisher.py), to which its sink hands each ended call once committed.

The events keep their order (one pipe, one reader). The capture loop never waits on the
database: the queue in front of the sender is bounded as DatabaseSink's own is, and when it
is full the loop waits rather than lose a binding or a call. Should the process die (killed,
out of memory), the sender starts another and sends it what it had not yet handed over;
what the dead one had received and not committed is lost, as a killed command's queue is:
each later snapshot of a call holds the whole call, and the spool of a call whose end was
lost is recovered as a cut call by the next capture command (recordings/recovery.py).
A process that dies within seconds of its start, time after time (its set-up fails, memory
runs out at once), is not restarted in a tight loop: each such death doubles the pause
before the next start, up to a minute, and while it pauses the events wait in the queue
(when it fills, the capture waits, and the interfaces' drop counts say so). When the
command is closing and the process still cannot stay up, the sender gives up: it says how
many events it could not store, and the next command recovers their calls' spools.

When the command closes the sink, the process applies everything, waits for its finishing
processes, and sends back its counts for the command's summary.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections import Counter

from integrations.observations import BindingSeen
from recorder.engine.calls import CallSnapshot
from recorder.engine.sink import STOP, QueuedSink

log = logging.getLogger(__name__)

# Events pickled and sent together: one pipe write (and one wake-up of the process) for
# many events when the capture produces them fast, one for each when it does not.
SEND_BATCH = 500


def work(
    receiving,
    reporting,
    configured: dict | None,
    node: str,
    finish_processes: int,
    start_finishers: bool,
    commands_ends: tuple = (),
) -> None:
    """The process: Django set up with the command's settings (or, forked, as the command
    had it), a DatabaseSink fed from the pipe until told to stop, then its counts sent
    back. Its finishing processes are forked from it before its sink's thread starts."""
    # The command takes the signals (Ctrl-C reaches the whole group), stops its capture
    # and then closes this sink.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for end in commands_ends:
        end.close()
    if configured is not None:
        import django
        from django.conf import settings

        settings.configure(**configured)
        django.setup()
    from recorder.recordings.finisher import ProcessFinisher
    from recorder.recordings.finishing_process import settle_heap
    from recorder.sinks.database import DatabaseSink

    settle_heap()
    # Its finishing processes must not hold this process's pipes open: a dead process
    # must read as a broken pipe to the command, a dead command as the pipe's end here.
    finisher = ProcessFinisher(finish_processes, fork=True, inherited=(receiving, reporting))
    if start_finishers:
        finisher.start()  # forked now, while this process has no thread but its own
    sink = DatabaseSink(node=node, finisher=finisher)
    handlers = {BindingSeen: sink.binding, CallSnapshot: sink.call}
    stopping = False
    try:
        while not stopping:
            batch = receiving.recv()
            stopping = bool(batch) and batch[-1] is STOP
            for event in batch[:-1] if stopping else batch:
                handlers.get(type(event), sink.encrypted)(event)
    except EOFError:  # the command is gone: store what it sent
        pass
    sink.close()
    finisher.close()
    with contextlib.suppress(BrokenPipeError, OSError):
        reporting.send(
            {
                "outcomes": sink.outcomes,
                "failures": sink.failures,
                "bindings_applied": sink.bindings_applied,
                "cpu_seconds": sink.cpu_seconds,
                "finished": finisher.outcomes,
            }
        )


class FinishedCounts:
    """What the process's finisher reports at the end, in the shape of a Finisher."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.outcomes: Counter = Counter()


class SinkProcess(QueuedSink):
    """A Sink whose DatabaseSink runs in a process of its own (see the module's text)."""

    # What the process runs (a test's may die at once).
    work = staticmethod(work)
    # A process that ends sooner than this after its start died "at once"; the second such
    # death in a row waits FIRST_PAUSE before the next start, each further one twice as
    # long, up to LONGEST_PAUSE.
    QUICK_DEATH = 30.0
    FIRST_PAUSE = 0.5
    LONGEST_PAUSE = 60.0
    # Deaths at once in a row after which a closing sink stops trying.
    GIVE_UP_WHEN_CLOSING = 3

    def __init__(
        self,
        node: str,
        finish_processes: int,
        start_finishers: bool = True,
        capacity: int = 100_000,
        fork: bool = True,
    ) -> None:
        super().__init__(capacity)
        self.node = node
        self.start_finishers = start_finishers
        self.context = multiprocessing.get_context("spawn")
        self.finisher = FinishedCounts(finish_processes)
        self.outcomes: Counter = Counter()
        self.failures: Counter = Counter()
        self.bindings_applied = 0
        # The CPU time the process's database thread used, once it has stopped.
        self.cpu_seconds = 0.0
        self.restarts = 0
        self.quick_deaths = 0
        self.closing = threading.Event()
        # Forked (set up already) unless the caller may not hand down its state: then the
        # process starts afresh and sets Django up itself, as a replacement does.
        self.forked = fork
        self._start_process(forked=fork)
        self.sender = threading.Thread(target=self._send, name="qms-sink-sender", daemon=True)
        self.sender.start()

    def close(self) -> None:
        """Everything queued applied and its recordings finished; then the counts."""
        self.closing.set()
        self.events.put(STOP)
        self.sender.join()

    def _start_process(self, forked: bool = False) -> None:
        """The first process is forked from the command, which has no other thread yet and
        no open connection (sink_for_commands), and so sets nothing up; one that replaces
        a dead process is started afresh and sets Django up itself, with the command's
        settings as they stand."""
        from recorder.recordings.finisher import settings_for_worker

        receiving, self.pipe = self.context.Pipe(duplex=False)
        self.reports, reporting = self.context.Pipe(duplex=False)
        # A command that ends without closing its sink (an error before its capture began)
        # must not wait forever on a process waiting for events: at the interpreter's exit,
        # before multiprocessing joins its children, the pipe's end tells the process to
        # store what it has and stop.
        atexit.register(self.pipe.close)
        context = multiprocessing.get_context("fork") if forked else self.context
        self.started = time.monotonic()
        self.process = context.Process(
            target=self.work,
            args=(
                receiving,
                reporting,
                None if forked else settings_for_worker(),
                self.node,
                self.finisher.processes,
                self.start_finishers,
                # The command's own ends, which a forked process holds copies of and closes
                # (the command's death must read as the end of the pipe).
                (self.pipe, self.reports) if forked else (),
            ),
            name="qms-sink",
            daemon=False,
        )
        self.process.start()
        # The parent's copies: the process holds its own ends, so that a dead process
        # shows as a broken pipe here.
        receiving.close()
        reporting.close()

    def _send(self) -> None:
        stopping = False
        while not stopping:
            batch = self.next_batch(SEND_BATCH)
            stopping = batch[-1] is STOP
            if not self._deliver(batch):
                self._give_up(batch)
                return
        self._collect_report()

    def _deliver(self, batch: list) -> bool:
        """Down the pipe; to a new process should the one there have died. False when the
        sink is closing and no process stays up to take it."""
        while True:
            try:
                self.pipe.send(batch)
                return True
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                self._replace_dead()
                if self.closing.is_set() and self.quick_deaths >= self.GIVE_UP_WHEN_CLOSING:
                    return False

    def _collect_report(self) -> None:
        while True:
            try:
                report = self.reports.recv()
                break
            except (EOFError, OSError):  # it died while finishing up: what is left is lost
                self.process.join()
                log.error(
                    "the database process ended (exit code %s) before its report; the "
                    "next capture command recovers the calls it held",
                    self.process.exitcode,
                )
                return
        self.process.join()
        self.outcomes.update(report["outcomes"])
        self.failures.update(report["failures"])
        self.bindings_applied += report["bindings_applied"]
        self.cpu_seconds += report["cpu_seconds"]
        self.finisher.outcomes.update(report["finished"])

    def _replace_dead(self) -> None:
        self.process.join()
        lived = time.monotonic() - self.started
        self.quick_deaths = self.quick_deaths + 1 if lived < self.QUICK_DEATH else 0
        self.failures["database process ended"] += 1
        self.pipe.close()
        self.reports.close()
        pause = 0.0
        if self.quick_deaths > 1:
            pause = min(self.LONGEST_PAUSE, self.FIRST_PAUSE * 2 ** (self.quick_deaths - 2))
        log.error(
            "the database process ended (exit code %s) %.1f s after its start: starting "
            "another%s; the events it had received and not stored are lost",
            self.process.exitcode,
            lived,
            f" in {pause:g} s ({self.quick_deaths} such ends in a row)" if pause else "",
        )
        if pause and self.closing.wait(pause) and self.quick_deaths >= self.GIVE_UP_WHEN_CLOSING:
            return  # closing: the caller gives up rather than start yet another
        self.restarts += 1
        self._start_process()

    def _give_up(self, batch: list) -> None:
        """Closing with no process that stays up: what is left is counted and dropped."""
        left = [event for event in batch if event is not STOP]
        while batch[-1] is not STOP:
            batch = self.next_batch(SEND_BATCH)
            left += [event for event in batch if event is not STOP]
        if left:
            self.failures["events not stored"] += len(left)
        log.error(
            "the database process ended %d times in a row within %g s of its start: "
            "stopping without it, %d events not stored (the next capture command recovers "
            "the spools of their calls)",
            self.quick_deaths,
            self.QUICK_DEATH,
            len(left),
        )
