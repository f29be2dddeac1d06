"""The body of a finishing process (recordings/finisher.py), apart from the rest: a process
started afresh imports the module of its target before Django is set up, so this one
imports nothing of the project's until it has set Django up with its command's settings."""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import time

# How often a worker waiting for work looks whether its command is still there.
IDLE_SECONDS = 1.0
# The most recordings finished in one batch (one transaction).
BATCH = 100
# How much lower than its command's a worker's scheduling priority is (nice): where the
# capture and a worker share a core, the capture gets about nine tenths of it, so a burst
# of call ends never starves the capture; a core the capture leaves idle is the worker's.
NICENESS = 10
# Allocations between the collector's youngest-generation passes, in place of Python's 700:
# a batch's rows, headers and arrays are short-lived and hold no cycles worth chasing.
YOUNG_COLLECTION_EVERY = 20_000


def settle_heap() -> None:
    """After Django's set-up: what it made (a few hundred thousand objects that live as long
    as the process) is left out of every later collection (gc.freeze), and the youngest
    generation is collected less often. A batch of 1,000 short calls spent 0.15 ms a call
    in the collector before, 0.04 ms after (bench/RESULTS.md, session 13)."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


def share_of(jobs, processes: int) -> int:
    """How many recordings a worker that has just taken one takes in all: an even share of
    what is queued among the command's `processes` workers, at most BATCH. When 55 calls
    end together, each of two workers takes 28, instead of the first taking them all
    while the second waits for the next calls to end; the last of a burst is shared out
    the same way, so that no worker finishes a long batch alone while the other idles."""
    try:
        queued = jobs.qsize()
    except NotImplementedError:  # a platform whose queues cannot count (macOS)
        return BATCH
    return max(1, min(BATCH, -(-(queued + 1) // max(processes, 1))))


def work(
    jobs,
    results,
    configured: dict | None,
    command_pid: int,
    inherited: tuple = (),
    processes: int = 1,
) -> None:
    """A worker process: Django set up with the command's settings, then the recordings
    handed over, until told to stop or, with its command gone, until none is queued.
    `configured` is None in a worker forked from a process whose Django is set up already
    (and which had no other thread and no open connection to hand down); `inherited` are
    the ends of its parent's pipes that such a worker closes; `processes` is how many
    workers share the queue."""
    # The command takes the signals (Ctrl-C reaches the whole group) and then waits for
    # what its workers hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for connection_end in inherited:  # a forked worker's copies of its parent's pipes
        connection_end.close()
    os.nice(NICENESS)
    if configured is not None:
        import django
        from django.conf import settings

        settings.configure(**configured)
        django.setup()
    settle_heap()
    from recorder.recordings.finalise import finish_batch

    finished, started = 0, time.process_time()
    stopping = False
    while not stopping:
        try:
            batch = [jobs.get(timeout=IDLE_SECONDS)]
        except queue.Empty:
            if os.getppid() != command_pid:
                break
            continue
        # What else is queued already joins the batch, up to this worker's share: one
        # transaction and one round of writes for many calls ended together, and no
        # waiting for more.
        wanted = share_of(jobs, processes)
        while len(batch) < wanted and batch[-1] is not None:
            try:
                batch.append(jobs.get_nowait())
            except queue.Empty:
                break
        stopping = batch[-1] is None
        pending_ids = [pending_id for pending_id in batch if pending_id is not None]
        if pending_ids:
            for pending_id, outcome in finish_batch(pending_ids).items():
                results.put((pending_id, outcome))
            finished += len(pending_ids)
    if finished:
        spent = time.process_time() - started
        logging.getLogger("qms.finisher").info(
            "finished %d recordings in %.1f s of CPU (%.1f ms each)",
            finished, spent, spent / finished * 1000,
        )  # fmt: skip
