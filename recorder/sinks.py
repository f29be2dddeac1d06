"""Where the capture loop's events meet the database.

The capture loop hands bindings and call snapshots to a DatabaseSink, whose own thread
applies them: bindings through the directory's service function, calls as Call rows. The
loop never waits on the database; the queue between them is bounded, and when it is full
the loop waits rather than lose a binding or a call.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from collections import Counter
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction

from extensions.models import Binding, Extension, Phone
from extensions.services import (
    apply_binding,
    learns_from_call,
    note_encrypted_signalling,
    who_was_at,
)
from integrations.observations import BindingSeen, CallEvent, EncryptedSignallingSeen
from recorder.calls import CallSnapshot, moment
from recorder.models import Call
from recorder.recording import finish_recording, recover_spools

log = logging.getLogger(__name__)

STOP = object()
# Events applied per transaction: one commit (one fsync) per batch, not per event.
BATCH = 500


def known_phone_ips() -> set[str]:
    """Every address the directory believes is a phone: configured, current, or bound."""
    ips = set(Phone.objects.exclude(current_ip=None).values_list("current_ip", flat=True))
    ips |= set(Phone.objects.exclude(configured_ip=None).values_list("configured_ip", flat=True))
    ips |= set(Binding.objects.filter(ended_at__isnull=True).values_list("ip", flat=True))
    return ips


def do_not_record_numbers() -> set[str]:
    return set(Extension.objects.filter(do_not_record=True).values_list("number", flat=True))


def add_recording_arguments(parser) -> None:
    """The options every capture command shares."""
    parser.add_argument(
        "--no-recording",
        action="store_true",
        help="Follow calls and learn bindings, but record no audio.",
    )


def recording_options(options: dict) -> dict:
    """The engine's recording settings for a capture command, after finishing, as partial
    recordings, the spools a killed earlier run left behind."""
    if options.get("no_recording"):
        return {}
    spool_root = Path(settings.QMS_SPOOL_DIR)
    spool_root.mkdir(parents=True, exist_ok=True)
    for recording in recover_spools(spool_root):
        log.warning("recovered a partial recording of call %s", recording.call_id)
    return {
        "spool_root": spool_root,
        "do_not_record": do_not_record_numbers(),
        "record_unsignalled": settings.QMS_RECORD_UNSIGNALLED,
        "max_call_seconds": settings.QMS_MAX_CALL_SECONDS,
    }


class CallLog:
    """Writes call snapshots as Call rows, one row per call, idempotently."""

    def __init__(self, node: str = "") -> None:
        self.node = node
        self.live: dict[tuple[str, float], Call] = {}
        self.written = 0

    def record(self, snapshot: CallSnapshot) -> Call:
        call, new = self._row(snapshot)
        call.state = snapshot.state
        call.direction = snapshot.direction
        call.conversation_id = snapshot.conversation_id[:255]
        call.answered_at = moment(snapshot.answered_at)
        call.ended_at = moment(snapshot.ended_at)
        call.end_reason = snapshot.end_reason
        for name in ("caller", "caller_name", "callee", "callee_name"):
            setattr(call, name, getattr(snapshot, name)[:128])
        call.caller_ip = snapshot.caller_ip or None
        call.callee_ip = snapshot.callee_ip or None
        call.media = [media_json(offer) for offer in snapshot.media]
        ended = snapshot.event == CallEvent.END
        # Who the call belongs to is looked up when it starts, and again at its end only if
        # it was not found then (the binding may have arrived in between): not at every step.
        if new or not call.extension or (ended and call.agent_id is None):
            self._attribute(call, snapshot)
        call.save()
        self.written += 1
        if ended:
            self.live.pop((snapshot.call_id, snapshot.started_at), None)
            if snapshot.spool:
                self._finish_recording(call, snapshot)
        return call

    def _finish_recording(self, call: Call, snapshot: CallSnapshot) -> None:
        spool = Path(snapshot.spool)
        if Extension.objects.filter(number=call.extension, do_not_record=True).exists():
            # Belt and braces: the engine starts no log for a do-not-record number it
            # knows, but a number may be learned only as the call goes on.
            shutil.rmtree(spool, ignore_errors=True)
            return
        finish_recording(call, spool, snapshot.media, snapshot.local_side)

    def _row(self, snapshot: CallSnapshot) -> tuple[Call, bool]:
        key = (snapshot.call_id, snapshot.started_at)
        found = self.live.get(key)
        if found is not None:
            return found, False
        call, created = Call.objects.get_or_create(
            protocol=snapshot.protocol,
            call_id=snapshot.call_id[:255],
            started_at=moment(snapshot.started_at),
            defaults={"node": self.node},
        )
        self.live[key] = call
        return call, created

    def _attribute(self, call: Call, snapshot: CallSnapshot) -> None:
        """The recorded side's extension, phone and person, as the directory had them."""
        call.extension = snapshot.local_number[:128]
        if not snapshot.local_ip:
            return
        found = who_was_at(snapshot.local_ip, call.started_at)
        if found is not None:
            call.phone = found.phone
            call.agent = found.agent
            call.extension = call.extension or found.extension_number


def media_json(offer) -> dict:
    return {
        "side": str(offer.side),
        "ip": offer.receive_at.ip,
        "port": offer.receive_at.port,
        "payload_types": [list(pair) for pair in offer.payload_types],
        "mode": offer.mode,
        "encrypted": offer.encrypted,
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


class DatabaseSink:
    """Applies the capture loop's events to the database from a thread of its own."""

    def __init__(self, node: str = "", capacity: int = 100_000) -> None:
        self.events: queue.Queue = queue.Queue(maxsize=capacity)
        self.calls = CallLog(node)
        self.bindings_applied = 0
        self.outcomes: Counter = Counter()
        self.failures: Counter = Counter()
        self.thread = threading.Thread(target=self._work, name="qms-db-sink", daemon=True)
        self.thread.start()

    def binding(self, seen: BindingSeen) -> None:
        self.events.put(seen)

    def call(self, snapshot: CallSnapshot) -> None:
        self.events.put(snapshot)

    def encrypted(self, seen: EncryptedSignallingSeen) -> None:
        self.events.put(seen)

    def close(self) -> None:
        """Apply everything queued, then stop."""
        self.events.put(STOP)
        self.thread.join()

    def _work(self) -> None:
        try:
            stopped = False
            while not stopped:
                batch = self._next_batch()
                stopped = batch[-1] is STOP
                self._apply_batch([event for event in batch if event is not STOP])
        finally:
            connection.close()

    def _next_batch(self) -> list:
        """What is queued now, in order, up to BATCH events (waiting for the first)."""
        batch = [self.events.get()]
        while len(batch) < BATCH and batch[-1] is not STOP:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        return batch

    def _apply_batch(self, batch: list) -> None:
        """One transaction per batch (one commit, one fsync); each event in a savepoint of
        its own, so one failure spoils nothing else. Bindings go first, in order, so the
        calls of the batch are attributed with them; of several snapshots of one call
        only the last is written, as each snapshot holds the whole call so far."""
        try:
            with transaction.atomic():
                for event in coalesced(batch):
                    self._apply(event)
        except DatabaseError as error:
            self.failures[type(error).__name__] += len(batch)
            log.error("could not commit %d events: %s", len(batch), error)
            close_old_connections()

    def _bind(self, seen: BindingSeen) -> None:
        if not learns_from_call(seen):
            self.outcomes["not a phone's (trunk or gateway)"] += 1
            return
        self.outcomes[apply_binding(seen).action] += 1
        self.bindings_applied += 1

    def _apply(self, event: BindingSeen | CallSnapshot) -> None:
        # The loop's edge: one bad event is counted and logged, never the end of the rest.
        try:
            with transaction.atomic():
                if isinstance(event, BindingSeen):
                    self._bind(event)
                elif isinstance(event, EncryptedSignallingSeen):
                    note_encrypted_signalling(event)
                else:
                    self.calls.record(event)
        except DatabaseError as error:
            self.failures[type(error).__name__] += 1
            log.error("could not store %r: %s", event, error)
            close_old_connections()
        except Exception:
            self.failures["unexpected"] += 1
            log.exception("could not store %r", event)
