"""The per-binding and per-call work that crosses the broker, and the recorder's beat tasks.

A capture node's delivery thread sends each outbox event (recorder/sinks/outbox.py) as one task
to the node's queue, capture.<node>: apply a binding, record a call snapshot, note an
encrypted phone, recover a cut spool. Each carries its run key and sequence number (the
observation's id) and is applied through the run's OutboxCursor: exactly once and in
capture order, however the broker redelivers, and whatever the number of workers and
threads taking them: an event that arrives before the one it follows is held in the
database and applied right after it. A call's end enqueues its finalisation after the
transaction commits; the finalisation enqueues the waveform peaks the same way. Every task
is acks_late and retried with back-off while the database is unreachable.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from celery import shared_task
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from extensions import services
from integrations.observations import Side
from recorder.engine.calls import CallSnapshot
from recorder.engine.codec import (
    BindingJson,
    EncryptedJson,
    SnapshotJson,
    binding_from_json,
    encrypted_from_json,
    snapshot_from_json,
)
from recorder.lib.files import locked
from recorder.models import Call, Recording
from recorder.nodes.alerts import park
from recorder.nodes.models import HeldEvent, OutboxCursor, ParkedEvent, PendingFinalisation
from recorder.nodes.queues import queue_for
from recorder.nodes.sweep import end_stale_calls
from recorder.recordings import recovery
from recorder.recordings.retention import purge_expired
from recorder.recordings.waveform import peaks_for_recording
from recorder.sinks.database import CallLog, do_not_record_numbers, must_not_record
from recorder.sinks.outbox import BINDING, CALL, ENCRYPTED, RECOVER

log = logging.getLogger(__name__)

# The database is down or the connection broke: worth trying again later.
TRANSIENT = (OperationalError, InterfaceError)


EVENT_TASK = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    # The delivery thread sends an event again when it has not been applied for a while,
    # so an event task need not retry for ever.
    "max_retries": 20,
}
CALL_TASK = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "max_retries": 50,
}


# --- events, in order -----------------------------------------------------------------------


def apply_in_order(run: str, seq: int, kind: str, event: dict, node: str) -> str:
    """Apply event `seq` of `run` in its turn, and move the run's cursor with it.

    The cursor row is locked for the transaction, so effects and cursor commit together:
    a duplicate (already applied) is skipped; an early event is held until the one before
    it comes, which then applies it too, with any others held behind it. An event whose
    effect fails for a reason other than an unreachable database is logged and passed
    over, so one bad event never stops the ones after it.
    """
    with transaction.atomic():
        cursor, _ = OutboxCursor.objects.select_for_update().get_or_create(run=run)
        if seq <= cursor.applied_seq:
            return "duplicate"
        if seq > cursor.applied_seq + 1:
            HeldEvent.objects.get_or_create(
                run=run, seq=seq, defaults={"kind": kind, "event": event, "node": node}
            )
            return "held"
        outcome = _apply_effect(run, seq, kind, event, node)
        cursor.applied_seq = seq
        _apply_held(cursor)
        cursor.save(update_fields=["applied_seq", "updated_at"])
    return outcome


def _apply_held(cursor: OutboxCursor) -> None:
    """The held events that now follow the cursor without a gap, in order."""
    held = HeldEvent.objects.filter(run=cursor.run, seq__gt=cursor.applied_seq)
    for waiting in held.order_by("seq"):
        if waiting.seq != cursor.applied_seq + 1:
            break
        _apply_effect(cursor.run, waiting.seq, waiting.kind, waiting.event, waiting.node)
        cursor.applied_seq = waiting.seq
    HeldEvent.objects.filter(run=cursor.run, seq__lte=cursor.applied_seq).delete()


def _apply_effect(run: str, seq: int, kind: str, event: dict, node: str) -> str:
    # The loop's edge: an unreachable database is retried, anything else is counted out.
    try:
        with transaction.atomic():
            EFFECTS[kind](event, node)
    except TRANSIENT:
        raise
    except DatabaseError as error:
        log.error("event %d of %s could not be stored: %s", seq, run, error)
        park(*parked_kind(kind, event), error, event, node)
        return "failed"
    except Exception as error:
        log.exception("event %d of %s could not be applied", seq, run)
        park(*parked_kind(kind, event), error, event, node)
        return "failed"
    return "applied"


def parked_kind(kind: str, event: dict) -> tuple[str, str]:
    """The ParkedEvent kind and subject of an outbox event of `kind`."""
    known = PARKED_KIND.get(kind)
    return known(event) if known else (ParkedEvent.Kind.OTHER, kind)


# The ParkedEvent kind and subject of each kind of outbox event.
PARKED_KIND: dict[str, Callable[[dict], tuple[str, str]]] = {
    BINDING: lambda event: (
        ParkedEvent.Kind.BINDING,
        f"{event.get('extension', '')} at {event.get('ip', '')}",
    ),
    CALL: lambda event: (ParkedEvent.Kind.CALL, str(event.get("call_id", ""))),
    ENCRYPTED: lambda event: (ParkedEvent.Kind.SIGNALLING, str(event.get("ip", ""))),
    RECOVER: lambda event: (ParkedEvent.Kind.SPOOL, str(event.get("spool", ""))),
}


def _bind(event: BindingJson, node: str) -> None:
    """An ext/IP sighting, through the directory's service function (rules R5, R7)."""
    seen = binding_from_json(event)
    if not services.refusal_of(seen):
        services.apply_binding(seen)


def _record(event: SnapshotJson, node: str) -> None:
    """A call as it stands after one event, as its Call row; its end schedules the
    recording's finalisation on the node that spooled it."""
    NodeCallLog(node).record(snapshot_from_json(event))


def _note_encrypted(event: EncryptedJson, node: str) -> None:
    services.note_encrypted_signalling(encrypted_from_json(event))


@shared_task(name="recorder.tasks.apply_binding", **EVENT_TASK)
def apply_binding(run: str, seq: int, event: dict, node: str) -> str:
    return apply_in_order(run, seq, BINDING, event, node)


@shared_task(name="recorder.tasks.record_call", **EVENT_TASK)
def record_call(run: str, seq: int, event: dict, node: str) -> str:
    return apply_in_order(run, seq, CALL, event, node)


@shared_task(name="recorder.tasks.note_encrypted_signalling", **EVENT_TASK)
def note_encrypted_signalling(run: str, seq: int, event: dict, node: str) -> str:
    return apply_in_order(run, seq, ENCRYPTED, event, node)


@shared_task(name="recorder.tasks.recover_spool", **EVENT_TASK)
def recover_spool(run: str, seq: int, event: dict, node: str) -> str:
    """A spool a stopped sniffer left: its call is ended and finished as partial."""
    return apply_in_order(run, seq, RECOVER, event, node)


class NodeCallLog(CallLog):
    """Call rows as the sinks write them; the recording is finished by a task of its own."""

    def _finish_recording(self, call: Call, snapshot: CallSnapshot) -> None:
        reason = (
            PendingFinalisation.Reason.CAPTURE_STOPPED
            if snapshot.end_reason == "capture-ended"
            else PendingFinalisation.Reason.ENDED
        )
        side = str(snapshot.local_side) if snapshot.local_side else ""
        schedule_finalisation(call, self.node, Path(snapshot.spool), side, reason)


def _recover(event: dict, node: str) -> None:
    """A spool a stopped sniffer left, by the rules of recordings/recovery.py: its call is
    ended as cut short and its recording finalised on this node."""
    recovery.recover_spool(
        Path(event["spool"]),
        PendingFinalisation.Reason.CAPTURE_CRASHED,
        finish=partial(_finalise_cut_call, node=node),
        node=node,
    )


def _finalise_cut_call(
    call: Call, spool: Path, reason: PendingFinalisation.Reason, node: str
) -> None:
    """Off the ordered event path: the decode is the finalisation's, on the node's queue."""
    if call.state == Call.State.ENDED:
        # The call ended before the sniffer stopped; its spool only waits for the
        # finalisation its end scheduled, which keeps its own reason.
        if not PendingFinalisation.objects.filter(call=call).exists():
            reason = PendingFinalisation.Reason.ENDED
            schedule_finalisation(call, node, spool, "", reason)
        return
    call.state, call.end_reason = Call.State.ENDED, "capture-crashed"
    call.ended_at = last_written(spool)
    call.save(update_fields=["state", "end_reason", "ended_at"])
    schedule_finalisation(call, node, spool, "", reason)


EFFECTS: dict[str, Callable[[dict, str], None]] = {
    BINDING: _bind,
    CALL: _record,
    ENCRYPTED: _note_encrypted,
    RECOVER: _recover,
}


def last_written(spool: Path) -> datetime:
    """When the sniffer last wrote the spool: the call's last sign of life, give or take
    the log's one-second flush."""
    latest = max(path.stat().st_mtime for path in [spool, *spool.iterdir()])
    return datetime.fromtimestamp(latest, UTC)


# --- finishing recordings ----------------------------------------------------------------


def schedule_finalisation(
    call: Call, node: str, spool: Path, local_side: str, reason: str
) -> PendingFinalisation:
    """Remember the call's spool in this transaction; enqueue its finalisation on commit."""
    pending, _ = PendingFinalisation.objects.update_or_create(
        call=call,
        defaults={
            "node": node,
            "spool": str(spool),
            "local_side": local_side,
            "reason": reason,
            "enqueued_at": timezone.now(),
        },
    )
    transaction.on_commit(lambda: enqueue_finalisation(pending))
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
    """Decode a finished call's spool into its Recording, once: the spool is locked while
    it is decoded, and gone (with the pending row) once the recording is stored."""
    pending = PendingFinalisation.objects.select_related("call").filter(pk=pending_id).first()
    if pending is None:
        return None
    spool = Path(pending.spool)
    # The spool folder's lock: one finalisation at a time decodes it, however often it is sent.
    with locked(spool) as present:
        if not present:
            pending.delete()
            return None
        try:
            with transaction.atomic():
                recording = _finish(pending, spool)
        except TRANSIENT:
            raise
        except Exception as error:  # the task's edge: a spool no retry would finish
            _finalisation_failed(pending, spool, error)
            return None
    pending.delete()
    if recording is None:
        return None
    if recording.peaks is None and recording.audio_format != "rtp":
        queue = queue_for(pending.node)
        transaction.on_commit(lambda: compute_peaks.apply_async((recording.pk,), queue=queue))
    return recording.pk


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


# --- celery beat -----------------------------------------------------------------------------


@shared_task(name="recorder.tasks.sweep_stale_calls", acks_late=True, ignore_result=True)
def sweep_stale_calls() -> int:
    """End the calls no capture follows any more (recorder/nodes/sweep.py)."""
    return end_stale_calls(timezone.now())


@shared_task(name="recorder.tasks.purge_expired_recordings", acks_late=True, ignore_result=True)
def purge_expired_recordings() -> int:
    """Delete the recordings past their retention (recorder/recordings/retention.py)."""
    return len(purge_expired(timezone.now()).purged)
