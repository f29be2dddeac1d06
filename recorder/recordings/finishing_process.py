"""The body of a finishing process (recordings/finisher.py), apart from the rest: a process
started afresh imports the module of its target before Django is set up, so this one
imports nothing of the project's until it has set Django up with its command's settings."""

from __future__ import annotations

import os
import queue
import signal

# How often a worker waiting for work looks whether its command is still there.
IDLE_SECONDS = 1.0


def work(jobs, results, configured: dict, command_pid: int) -> None:
    """A worker process: Django set up with the command's settings, then the recordings
    handed over, until told to stop or, with its command gone, until none is queued."""
    # The command takes the signals (Ctrl-C reaches the whole group) and then waits for
    # what its workers hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import django
    from django.conf import settings

    settings.configure(**configured)
    django.setup()
    from recorder.recordings.finalise import finish_one

    while True:
        try:
            pending_id = jobs.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            if os.getppid() != command_pid:
                return
            continue
        if pending_id is None:
            return
        results.put((pending_id, finish_one(pending_id)))
