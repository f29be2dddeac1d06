"""Finishing a capture node's recordings off the ordered event path, as tasks.

A call's end (or a recovered spool) schedules its finalisation: a PendingFinalisation row in
the same transaction, and a task on the node's queue once it commits (or, for `sniff` and
`import_pcap`, a finishing process of the command's: recordings/finisher.py, which runs
finish_one, the same finalisation with its waveform drawn on the spot). The task decodes the
spool into the recording, once (the spool is locked while it is decoded), then enqueues the
waveform peaks. Every task is acks_late and retried with back-off while the database is
unreachable. The task names are the ones they had in recorder/tasks.py.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from celery import shared_task
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from extensions.directory_view import do_not_record_numbers
from integrations.observations import Side
from qms.lib.database import TRANSIENT
from recorder.lib.files import locked
from recorder.models import Call, Recording
from recorder.nodes.models import PendingFinalisation
from recorder.nodes.queues import queue_for
from recorder.recordings import recovery
from recorder.recordings.attribution import must_not_record
from recorder.recordings.waveform import peaks_for_recording

log = logging.getLogger(__name__)


CALL_TASK = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "max_retries": 50,
}


def schedule_finalisation(
    call: Call,
    node: str,
    spool: Path,
    local_side: str,
    reason: str,
    enqueue: Callable[[PendingFinalisation], None] | None = None,
) -> PendingFinalisation:
    """Remember the call's spool in this transaction; hand its finalisation on commit to
    `enqueue`: a capture command's finisher, or (None) the node's queue."""
    pending = PendingFinalisation(
        call=call,
        node=node,
        spool=str(spool),
        local_side=local_side,
        reason=reason,
        enqueued_at=timezone.now(),
    )
    # One statement (INSERT ... ON CONFLICT DO UPDATE), not a savepoint and three: a call
    # ended again (an event delivered twice) keeps its one row. Its id is set either way.
    PendingFinalisation.objects.bulk_create(
        [pending],
        update_conflicts=True,
        unique_fields=["call"],
        update_fields=["node", "spool", "local_side", "reason", "enqueued_at"],
    )
    # Robust: a finisher that fails must not undo the batch that has just committed; the
    # pending row stays, and is finished again (recordings/finisher.py, nodes/node.py).
    transaction.on_commit(lambda: (enqueue or enqueue_finalisation)(pending), robust=True)
    return pending


def enqueue_finalisation(pending: PendingFinalisation) -> None:
    """After the commit; should the broker refuse it, the node's worker enqueues it again
    (recorder/nodes/node.py), as the pending row says."""
    try:
        finalise_recording.apply_async((pending.pk,), queue=queue_for(pending.node))
    except (KombuError, ConnectionError, OSError) as error:
        log.warning("finalisation of call %s not enqueued yet: %s", pending.call_id, error)


@shared_task(name="recorder.tasks.finalise_recording", **CALL_TASK)
def finalise_recording(pending_id: int) -> int | None:
    """The node's finalisation task: the recording, then its waveform as a task of its own
    when finishing could not draw it."""
    recording, node = finalise_pending(pending_id)
    if recording is None:
        return None
    if recording.peaks is None and recording.audio_format != "rtp":
        queue = queue_for(node)
        transaction.on_commit(lambda: compute_peaks.apply_async((recording.pk,), queue=queue))
    return recording.pk


def finalise_pending(pending_id: int) -> tuple[Recording | None, str]:
    """Decode a finished call's spool into its Recording, once: the spool is locked while
    it is decoded, and gone (with the pending row) once the recording is stored. The
    recording (None when there is none to make) and the node that spooled it. Raises
    TRANSIENT while the database is out of reach; the pending row stays for a new attempt.

    Whoever calls it, a node's task or a capture command's finishing process
    (recordings/finisher.py), the recording comes out the same."""
    pending = PendingFinalisation.objects.select_related("call").filter(pk=pending_id).first()
    if pending is None:
        return None, ""
    spool = Path(pending.spool)
    # The spool folder's lock: one finalisation at a time decodes it, however often it is sent.
    with locked(spool) as present:
        if not present:
            pending.delete()
            return None, pending.node
        try:
            with transaction.atomic():
                recording = _finish(pending, spool)
        except TRANSIENT:
            raise
        except Exception as error:  # the finalisation's edge: a spool no retry would finish
            _finalisation_failed(pending, spool, error)
            return None, pending.node
    pending.delete()
    return recording, pending.node


# A database out of reach is tried again this often, waiting longer each time, before the
# recording is left to its pending row (finished at the next start).
ATTEMPTS = 6
FIRST_WAIT_SECONDS = 0.5
NOTHING_TO_STORE = "nothing to store"
LEFT_PENDING = "left pending"


def finish_one(pending_id: int) -> str:
    """Finish one pending recording here and now: the recording's status, NOTHING_TO_STORE
    (no RTP, a do-not-record number, a spool set aside), or LEFT_PENDING when the database
    stayed out of reach (its row waits for the next start)."""
    wait = FIRST_WAIT_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            recording, _ = finalise_pending(pending_id)
            if recording is None:
                return NOTHING_TO_STORE
            if recording.peaks is None and recording.audio_format != "rtp":
                # Too long to draw while it was written: drawn now, still off the capture.
                recording.peaks = peaks_for_recording(recording)
                if recording.peaks is not None:
                    recording.save(update_fields=["peaks"])
            return str(recording.status)
        except TRANSIENT as error:
            log.warning("finishing recording %d, attempt %d: %s", pending_id, attempt, error)
            connection.close()  # a fresh connection for the next attempt
            time.sleep(wait)
            wait *= 2
    return LEFT_PENDING


def _finalisation_failed(pending: PendingFinalisation, spool: Path, error: Exception) -> None:
    """A spool that cannot be finished (damaged, or a value the database refuses) would
    fail every retry: it is set aside by the rule of recordings/recovery.py, instead of a
    recording that says "recording" for ever."""
    log.exception("the recording of call %s could not be finished", pending.call.call_id)
    recovery.set_aside_failed(spool, pending.call, error, pending.call.call_id, pending.node)
    pending.delete()


def _finish(pending: PendingFinalisation, spool: Path) -> Recording | None:
    call = pending.call
    if must_not_record(call, do_not_record_numbers()):
        # The number was learned to be do-not-record only as the call went on.
        shutil.rmtree(spool, ignore_errors=True)
        return None
    local_side = Side(pending.local_side) if pending.local_side else None
    why_partial = pending.get_reason_display() if pending.partial else ""
    return recovery.finish_spool(call, spool, local_side, why_partial)


@shared_task(name="recorder.tasks.compute_peaks", **CALL_TASK)
def compute_peaks(recording_id: int) -> None:
    """The player's waveform, for a recording finalised without one (recordings/waveform.py)."""
    recording = Recording.objects.filter(pk=recording_id, peaks__isnull=True).first()
    if recording is None:
        return
    peaks = peaks_for_recording(recording)
    if peaks is not None:
        Recording.objects.filter(pk=recording_id).update(peaks=peaks)
