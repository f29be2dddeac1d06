"""The capture node's events applied in capture order: the tasks the delivery thread sends.

A capture node's delivery thread (recorder/sinks/delivery.py) sends each outbox event
(recorder/sinks/outbox.py) as one task to the node's queue, capture.<node>: apply a binding,
record a call snapshot, note an encrypted phone, recover a cut spool. Each carries its run
key and sequence number (the observation's id) and is applied through the run's
OutboxCursor: exactly once and in capture order, however the broker redelivers, and
whatever the number of workers and threads taking them: an event that arrives before the
one it follows is held in the database and applied right after it. A call's end schedules
its finalisation (recorder/recordings/finalise.py) after the transaction commits. The task
names are the ones they had in recorder/tasks.py, where messages already queued find them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from celery import shared_task
from django.db import DatabaseError, transaction

from extensions import services
from qms.lib.database import TRANSIENT
from recorder.engine.codec import (
    BindingJson,
    EncryptedJson,
    SnapshotJson,
    binding_from_json,
    encrypted_from_json,
    snapshot_from_json,
)
from recorder.models import Call
from recorder.nodes.alerts import park
from recorder.nodes.models import HeldEvent, OutboxCursor, ParkedEvent, PendingFinalisation
from recorder.recordings import recovery
from recorder.recordings.finalise import schedule_finalisation
from recorder.sinks.database import CallLog
from recorder.sinks.outbox import BINDING, CALL, ENCRYPTED, RECOVER

log = logging.getLogger(__name__)


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
    CallLog(node).record(snapshot_from_json(event))


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
    files = [spool, *spool.iterdir()] if spool.is_dir() else [spool]
    latest = max(path.stat().st_mtime for path in files)
    return datetime.fromtimestamp(latest, UTC)
