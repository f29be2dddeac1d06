"""Where the capture loop's events meet the database.

The capture loop hands bindings and call snapshots to a DatabaseSink, whose own thread
applies them: bindings through the directory's service function, calls as Call rows. The
loop never waits on the database; the queue between them is bounded, and when it is full
the loop waits rather than lose a binding or a call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import (
    DatabaseError,
    close_old_connections,
    connection,
    transaction,
)

from extensions.directory_view import do_not_record_ips, do_not_record_numbers
from extensions.services import (
    apply_binding,
    note_encrypted_signalling,
    refusal_of,
)
from integrations.observations import (
    BindingSeen,
    CallEvent,
    EncryptedSignallingSeen,
)
from qms.lib.database import TRANSIENT
from qms.lib.prepared import prepared
from recorder.engine.calls import CallSnapshot, moment
from recorder.engine.codec import media_json
from recorder.engine.sink import STOP, QueuedSink
from recorder.models import Call
from recorder.nodes.alerts import park
from recorder.nodes.models import ParkedEvent, PendingFinalisation
from recorder.recordings.attribution import attribute_call
from recorder.recordings.finalise import Finishing, schedule_finalisations
from recorder.recordings.finisher import Finisher, InlineFinisher

log = logging.getLogger(__name__)

# Events applied per transaction: one commit (one fsync) per batch, not per event.
BATCH = 500


def add_recording_arguments(parser) -> None:
    """The options every capture command shares."""
    parser.add_argument(
        "--no-recording",
        action="store_true",
        help="Follow calls and learn bindings, but record no audio.",
    )


def recording_options(options: dict) -> dict:
    """The engine's recording settings for a capture command. (What a killed earlier run
    left in the spool root the command recovers first: recordings/recovery.py.)"""
    if options.get("no_recording"):
        return {}
    spool_root = Path(settings.QMS_SPOOL_DIR)
    spool_root.mkdir(parents=True, exist_ok=True)
    return {
        "spool_root": spool_root,
        "do_not_record": do_not_record_numbers(),
        "do_not_record_ips": do_not_record_ips(),
        "record_unsignalled": settings.QMS_RECORD_UNSIGNALLED,
        "max_call_seconds": settings.QMS_MAX_CALL_SECONDS,
    }


# PostgreSQL's bigint, the column of a count that comes from the capture process.
BIGINT_MAX = 2**63 - 1
HEP_ID_MAX = 2**32 - 1
# The columns a snapshot writes, besides who the call belongs to (ATTRIBUTION).
SNAPSHOT_COLUMNS = (
    "state",
    "direction",
    "conversation_id",
    "answered_at",
    "ended_at",
    "end_reason",
    "capture_dropped",
    "hep_capture_id",
    "caller",
    "caller_name",
    "callee",
    "callee_name",
    "caller_ip",
    "callee_ip",
    "media",
)
ATTRIBUTION = ("extension", "phone", "agent")
CALL_KEY = ("protocol", "call_id", "started_at")
# (field name, attribute): a foreign key is compared by its id, not by reading its row.
TRACKED = tuple(
    (name, Call._meta.get_field(name).attname) for name in SNAPSHOT_COLUMNS + ATTRIBUTION
)


class CallLog:
    """Writes call snapshots as Call rows, one row per call, idempotently.

    A call new to this log is written in one statement, an INSERT that updates the row
    instead should it exist (a file imported twice, an event delivered again); each later
    snapshot updates only the columns it changes, and nothing when it changes none.
    """

    def __init__(self, node: str = "", finisher: Finisher | None = None) -> None:
        self.node = node
        # Who finishes a call's recording once its end is committed: a capture command's
        # finisher (recordings/finisher.py), or None for the node's queue.
        self.finisher = finisher
        self.live: dict[tuple[str, float], Call] = {}
        self.written = 0
        self.starting: set[tuple[str, float]] = set()

    def begin_batch(self, starting: set[tuple[str, float]]) -> None:
        """A new batch: `starting` are the calls whose start it holds (under a later
        snapshot, perhaps), new calls that are written without being looked for."""
        self.starting = starting

    def forget(self, snapshot: CallSnapshot | None = None) -> None:
        """Drop the cached row of a call whose write was rolled back: it is read again
        from the database the next time. None: the whole batch was rolled back. (Its
        recordings were never handed over: that happens only once a batch commits.)"""
        if snapshot is not None:
            self.live.pop((snapshot.call_id, snapshot.started_at), None)
            return
        self.live.clear()

    def record(self, snapshot: CallSnapshot) -> Call:
        call, changed = self._updated(snapshot)
        if call.pk is None:
            _insert_or_update([call])
        else:
            _save_changes(call, changed)
        self._written(call, snapshot)
        self._finish_recordings([(call, snapshot)])
        return call

    def record_all(self, snapshots: list[CallSnapshot]) -> None:
        """A batch's snapshots, one per call: the calls new to this log and those that
        changed in one INSERT ... ON CONFLICT DO UPDATE, their pending recordings in one
        more statement. Should it fail, the caller applies them again one by one."""
        updated = [(*self._updated(snapshot), snapshot) for snapshot in snapshots]
        # A stored call is written again whole, by its key: ON CONFLICT updates its row.
        _insert_or_update([call for call, changed, _ in updated if call.pk is None or changed])
        for call, _, snapshot in updated:
            self._written(call, snapshot)
        self._finish_recordings([(call, snapshot) for call, _, snapshot in updated])

    def _updated(self, snapshot: CallSnapshot) -> tuple[Call, list[str]]:
        """The call's row with the snapshot copied in and its person looked up, and the
        columns that changed (for a call not yet stored, pk None, all of them)."""
        call = self._stored(snapshot)
        new = call is None
        if new:
            call = Call(**_key_of(snapshot), node=self.node)
        before = None if new else _columns(call)
        _copy_snapshot(snapshot, call)
        ended = snapshot.event == CallEvent.END
        # Who the call belongs to is looked up when it starts, and again at its end only if
        # it was not found then (the binding may have arrived in between): not at every step.
        if new or not call.extension or (ended and call.agent_id is None):
            attribute_call(call, snapshot.local_number, snapshot.local_ip)
        if new:
            return call, list(SNAPSHOT_COLUMNS + ATTRIBUTION)
        return call, [name for name, value in _columns(call).items() if value != before[name]]

    def _written(self, call: Call, snapshot: CallSnapshot) -> None:
        self.written += 1
        key = (snapshot.call_id, snapshot.started_at)
        if snapshot.event == CallEvent.END:
            self.live.pop(key, None)
        else:
            self.live[key] = call

    def _finish_recordings(self, written: list[tuple[Call, CallSnapshot]]) -> None:
        """Each ended call's recording is finished off this thread, as its pending row
        says, once the batch commits: a crash before then leaves the spool to recovery,
        one after it the pending row (recordings/finalise.py)."""
        ended = []
        for call, snapshot in written:
            if snapshot.event != CallEvent.END or not snapshot.spool:
                continue
            reason = (
                PendingFinalisation.Reason.CAPTURE_STOPPED
                if snapshot.end_reason == "capture-ended"
                else PendingFinalisation.Reason.ENDED
            )
            side = str(snapshot.local_side) if snapshot.local_side else ""
            ended.append(Finishing(call, Path(snapshot.spool), side, reason))
        if ended:
            enqueue = self.finisher.submit if self.finisher is not None else None
            schedule_finalisations(ended, self.node, enqueue)

    def _stored(self, snapshot: CallSnapshot) -> Call | None:
        """The call's row as this log has it, else as stored; None for a call starting
        now, which is written without being looked for."""
        key = (snapshot.call_id, snapshot.started_at)
        found = self.live.get(key)
        if found is not None or snapshot.event == CallEvent.START or key in self.starting:
            return found
        stored = _stored_call(**_key_of(snapshot))
        return stored[0] if stored else None


@prepared
def _stored_call(protocol: str, call_id: str, started_at: datetime):
    return Call.objects.filter(protocol=protocol, call_id=call_id, started_at=started_at)[:1]


def _key_of(snapshot: CallSnapshot) -> dict:
    return {
        "protocol": snapshot.protocol,
        "call_id": snapshot.call_id[:255],
        "started_at": moment(snapshot.started_at),
    }


def _copy_snapshot(snapshot: CallSnapshot, call: Call) -> None:
    call.state = snapshot.state
    call.direction = snapshot.direction
    call.conversation_id = snapshot.conversation_id[:255]
    call.answered_at = moment(snapshot.answered_at)
    call.ended_at = moment(snapshot.ended_at)
    call.end_reason = snapshot.end_reason
    # A count from the capture process's outbox: held to what the column takes.
    call.capture_dropped = min(max(int(snapshot.capture_dropped), 0), BIGINT_MAX)
    call.hep_capture_id = _capture_id(snapshot.hep_capture_id)
    for name in ("caller", "caller_name", "callee", "callee_name"):
        setattr(call, name, getattr(snapshot, name)[:128])
    call.caller_ip = snapshot.caller_ip or None
    call.callee_ip = snapshot.callee_ip or None
    call.media = [media_json(offer) for offer in snapshot.media]


def _capture_id(found: object) -> int | None:
    """A HEP agent's capture id from the outbox: a 32-bit number (HEPv3's chunk 0x000c),
    else none."""
    if isinstance(found, int) and not isinstance(found, bool) and 0 <= found <= HEP_ID_MAX:
        return found
    return None


def _columns(call: Call) -> dict[str, object]:
    """The values a snapshot may change, by field name."""
    return {name: getattr(call, attribute) for name, attribute in TRACKED}


def _save_changes(call: Call, changed: list[str]) -> None:
    if changed:
        call.save(update_fields=changed)


def _insert_or_update(calls: list[Call]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE: one statement and no savepoint, where a lookup
    before the INSERT would cost three more. Each row's id is set either way."""
    if not calls:
        return
    for call in calls:
        call.pk = None  # a stored call too: its row is found by its key, and its id returned
    Call.objects.bulk_create(
        calls,
        update_conflicts=True,
        unique_fields=CALL_KEY,
        update_fields=[*SNAPSHOT_COLUMNS, *ATTRIBUTION],
    )


def starting_calls(batch: list) -> set[tuple[str, float]]:
    """The calls whose start is among the batch's snapshots."""
    return {
        (event.call_id, event.started_at)
        for event in batch
        if isinstance(event, CallSnapshot) and event.event == CallEvent.START
    }


def coalesced(batch: list) -> list:
    """Bindings and sightings in order, then the newest snapshot of each call."""
    others = [event for event in batch if not isinstance(event, CallSnapshot)]
    calls: dict[tuple[str, float], CallSnapshot] = {}
    for event in batch:
        if isinstance(event, CallSnapshot):
            calls.pop((event.call_id, event.started_at), None)
            calls[(event.call_id, event.started_at)] = event
    return others + list(calls.values())


def fresh_connection_if_broken() -> None:
    """A connection that failed is replaced by a fresh one for the next batch: closed
    now (outside any transaction) when it can no longer be used."""
    if connection.in_atomic_block:
        return
    close_old_connections()


def parked_kind_of(event: object) -> tuple[str, str]:
    """The ParkedEvent kind and subject of a capture event."""
    if isinstance(event, BindingSeen):
        return ParkedEvent.Kind.BINDING, f"{event.extension} at {event.ip}"
    if isinstance(event, CallSnapshot):
        return ParkedEvent.Kind.CALL, event.call_id
    if isinstance(event, EncryptedSignallingSeen):
        return ParkedEvent.Kind.SIGNALLING, event.ip
    return ParkedEvent.Kind.OTHER, type(event).__name__


class DatabaseSink(QueuedSink):
    """Applies the capture loop's events to the database from a thread of its own."""

    def __init__(
        self, node: str = "", capacity: int = 100_000, finisher: Finisher | None = None
    ) -> None:
        super().__init__(capacity)
        # Without a finisher of the caller's, each recording is finished in this sink's
        # thread once its batch commits.
        self.finisher = finisher if finisher is not None else InlineFinisher()
        self.calls = CallLog(node, self.finisher)
        self.bindings_applied = 0
        self.outcomes: Counter = Counter()
        self.failures: Counter = Counter()
        # The CPU time this sink's thread used, once it has stopped.
        self.cpu_seconds = 0.0
        self.thread = threading.Thread(target=self._work, name="qms-db-sink", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Apply everything queued, then stop."""
        self.events.put(STOP)
        self.thread.join()

    def _work(self) -> None:
        try:
            stopped = False
            while not stopped:
                batch = self.next_batch(BATCH)
                stopped = batch[-1] is STOP
                self._apply_batch([event for event in batch if event is not STOP])
        finally:
            connection.close()
            self.cpu_seconds = time.thread_time()

    def _apply_batch(self, batch: list) -> None:
        """One transaction per batch (one commit, one fsync). Bindings go first, in order,
        so the calls of the batch are attributed with them; of several snapshots of one
        call only the last is written, as each snapshot holds the whole call so far.

        The batch is applied at first without a savepoint per event (two round trips
        each). Should any event fail, the whole batch is rolled back and applied again
        with each event in a savepoint of its own, so one failure spoils nothing else."""
        if not batch:
            return
        events = coalesced(batch)
        self.calls.begin_batch(starting_calls(batch))
        if not self._apply_at_once(events):
            self._apply_one_by_one(events, len(batch))

    def _apply_at_once(self, events: list) -> bool:
        counts = (self.outcomes.copy(), self.bindings_applied, self.calls.written)
        snapshots = [event for event in events if isinstance(event, CallSnapshot)]
        try:
            with transaction.atomic():
                for event in events:
                    if not isinstance(event, CallSnapshot):
                        self._apply_event(event)
                self.calls.record_all(snapshots)
        except Exception as error:  # any failure: the event-by-event pass counts and logs it
            log.info("a batch of %d events is applied again one by one: %s", len(events), error)
            self.outcomes, self.bindings_applied, self.calls.written = counts
            self.calls.forget()
            fresh_connection_if_broken()  # outside the transaction, now rolled back
            return False
        return True

    def _apply_one_by_one(self, events: list, received: int) -> None:
        """Each event in a savepoint of its own: one that fails is rolled back alone and
        parked with its reason, and the rest of the batch commits. Should the connection
        itself break, the batch is tried once more on a fresh one."""
        for attempt in (1, 2):
            try:
                with transaction.atomic():
                    for event in events:
                        self._apply(event)
                return
            except DatabaseError as error:
                self.calls.forget()
                # Closed only now, outside the transaction: closing inside it would roll
                # back the events already applied and fail every one after it.
                connection.close()
                if attempt == 2:
                    self.failures[type(error).__name__] += received
                    log.error("could not commit %d events: %s", received, error)

    def _bind(self, seen: BindingSeen) -> None:
        refused = refusal_of(seen)
        if refused:
            self.outcomes[refused] += 1
            return
        self.outcomes[apply_binding(seen).action] += 1
        self.bindings_applied += 1

    def _apply(self, event: BindingSeen | CallSnapshot) -> None:
        # The loop's edge: one bad event is rolled back to its savepoint, counted and
        # parked, never the end of the rest. A broken connection is the batch's failure.
        try:
            with transaction.atomic():
                self._apply_event(event)
        except TRANSIENT:
            raise
        except DatabaseError as error:
            self.failures[type(error).__name__] += 1
            log.error("could not store %r: %s", event, error)
            self._park(event, error)
        except Exception as error:
            self.failures["unexpected"] += 1
            log.exception("could not store %r", event)
            self._park(event, error)

    def _park(self, event: object, error: Exception) -> None:
        self._forget(event)
        kind, subject = parked_kind_of(event)
        park(kind, subject, error, event, self.calls.node)

    def _apply_event(self, event: BindingSeen | CallSnapshot) -> None:
        if isinstance(event, BindingSeen):
            self._bind(event)
        elif isinstance(event, EncryptedSignallingSeen):
            note_encrypted_signalling(event)
        else:
            self.calls.record(event)

    def _forget(self, event: object) -> None:
        """A call whose write was rolled back with its savepoint is read again next time."""
        if isinstance(event, CallSnapshot):
            self.calls.forget(event)
