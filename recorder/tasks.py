"""The recorder's Celery tasks: beat's periodic work here, and the modules that hold the rest.

Celery finds tasks by importing each app's tasks module; the event tasks (recorder/sinks/
ordered.py) and the finalisation tasks (recorder/recordings/finalise.py) are registered by
importing them here. Every task keeps the name it was first queued under
(recorder.tasks.<name>), so messages in Redis and beat's schedule resolve wherever its code
lives (tests/qms/test_celery.py lists them).
"""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from recorder.nodes.sweep import end_stale_calls
from recorder.playback.live import end_lapsed_listens as end_lapsed
from recorder.recordings import (
    finalise,  # noqa: F401 (registers the finalisation tasks)
)
from recorder.recordings.retention import purge_expired
from recorder.sinks import ordered  # noqa: F401 (registers the event tasks)

# --- celery beat -----------------------------------------------------------------------------


@shared_task(name="recorder.tasks.sweep_stale_calls", acks_late=True, ignore_result=True)
def sweep_stale_calls() -> int:
    """End the calls no capture follows any more (recorder/nodes/sweep.py)."""
    return end_stale_calls(timezone.now())


@shared_task(name="recorder.tasks.purge_expired_recordings", acks_late=True, ignore_result=True)
def purge_expired_recordings() -> int:
    """Delete the recordings past their retention (recorder/recordings/retention.py)."""
    return len(purge_expired(timezone.now()).purged)


@shared_task(name="recorder.tasks.end_lapsed_listens", acks_late=True, ignore_result=True)
def end_lapsed_listens() -> int:
    """End the live listens whose page went away (recorder/playback/live.py)."""
    return end_lapsed(timezone.now())
