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
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from celery import shared_task
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from extensions.directory_view import do_not_record_numbers
from integrations.observations import Side
from qms.lib.database import TRANSIENT
from recorder.engine.codec import media_from_json
from recorder.lib.files import locked
from recorder.media.rtplog import remove_spool
from recorder.models import Call, Recording
from recorder.nodes.models import PendingFinalisation
from recorder.nodes.queues import queue_for
from recorder.recordings import recovery
from recorder.recordings.attribution import must_not_record
from recorder.recordings.finish import (
    DecodedCall,
    WrittenRecordings,
    commit_recordings,
    decode_call,
    remove_after_commit,
    write_recordings,
)
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


@dataclass(frozen=True, slots=True)
class Finishing:
    """An ended call whose recording is to be finished: its spool, and how it ended."""

    call: Call
    spool: Path
    local_side: str
    reason: str


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
    return schedule_finalisations([Finishing(call, spool, local_side, reason)], node, enqueue)[0]


def schedule_finalisations(
    ended: list[Finishing],
    node: str,
    enqueue: Callable[[PendingFinalisation], None] | None = None,
) -> list[PendingFinalisation]:
    """schedule_finalisation for several calls, in one statement."""
    now = timezone.now()
    pending = [
        PendingFinalisation(
            call=finishing.call,
            node=node,
            spool=str(finishing.spool),
            local_side=finishing.local_side,
            reason=finishing.reason,
            enqueued_at=now,
        )
        for finishing in ended
    ]
    # One statement (INSERT ... ON CONFLICT DO UPDATE), not a savepoint and three a call:
    # a call ended again (an event delivered twice) keeps its one row. Ids are set either way.
    PendingFinalisation.objects.bulk_create(
        pending,
        update_conflicts=True,
        unique_fields=["call"],
        update_fields=["node", "spool", "local_side", "reason", "enqueued_at"],
    )
    # Robust: a finisher that fails must not undo the batch that has just committed; the
    # pending row stays, and is finished again (recordings/finisher.py, nodes/node.py).
    hand = enqueue or enqueue_finalisation
    for row in pending:
        transaction.on_commit(_handing(hand, row), robust=True)
    return pending


def _handing(hand: Callable[[PendingFinalisation], None], row: PendingFinalisation):
    def hand_over() -> None:
        hand(row)

    return hand_over


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
    """One finished call's spool decoded into its Recording (see finalise_batch): the
    recording (None when there is none to make) and the node that spooled it."""
    finished = finalise_batch([pending_id])[pending_id]
    return finished.recording, finished.node


# What became of a pending recording that made none.
NOTHING_TO_STORE = "nothing to store"
LEFT_PENDING = "left pending"


@dataclass
class Finished:
    """What became of one pending recording: its Recording, if one was made, as an outcome
    (the recording's status, or NOTHING_TO_STORE), and the node that spooled it."""

    recording: Recording | None = None
    outcome: str = NOTHING_TO_STORE
    node: str = ""


class _BatchSpoilt(Exception):
    """The writes of a batch of several recordings failed: each is tried again alone."""


def finalise_batch(pending_ids: list[int]) -> dict[int, Finished]:
    """Finished calls' spools decoded into their Recordings together, once each.

    Each spool is locked while it is decoded, and gone (with its pending row) once its
    recording is committed. The batch's files are written and made durable together, then
    its rows are one transaction: the recordings in one statement, the pending rows
    removed in one more (recordings/finish.py write_recordings, commit_recordings). A
    spool that cannot be decoded is set aside alone; should the batch's writes fail, each
    recording is finished again alone, so that one bad call spoils nothing else. Raises
    TRANSIENT while the database is out of reach; the pending rows stay for a new attempt.

    Whoever calls it, a node's task or a capture command's finishing process
    (recordings/finisher.py), the recordings come out the same."""
    finished: dict[int, Finished] = {}
    waiting = list(pending_ids)
    # Rounds of at most BATCH_AUDIO_BYTES decoded: the calls past it wait for the next.
    while waiting:
        try:
            done, waiting = _finalise_together(waiting)
        except _BatchSpoilt as spoilt:
            log.info("%d recordings are finished again one by one: %s", len(waiting), spoilt)
            done = {}
            for pending_id in waiting:
                done.update(_finalise_together([pending_id])[0])
            waiting = []
        finished.update(done)
    return finished


def _finalise_together(pending_ids: list[int]) -> tuple[dict[int, Finished], list[int]]:
    """One round of finalise_batch: what became of each pending recording it finished,
    and the ids of those it left for another round (decoded audio past the budget)."""
    found = PendingFinalisation.objects.select_related("call").filter(pk__in=pending_ids)
    pendings = list(found.order_by("pk"))
    finished = {pending_id: Finished() for pending_id in pending_ids}
    for pending in pendings:
        finished[pending.pk].node = pending.node
    # The spool folders' locks: one finalisation at a time decodes each, however often sent.
    with ExitStack() as locks:
        present = [p for p in pendings if locks.enter_context(locked(Path(p.spool)))]
        decoded, failed, empty, later = _decode_all(present)
        for pending in later:
            del finished[pending.pk]
        stored: list[Recording] = []
        written = None
        try:
            # The files first, outside the transaction: it holds the rows alone.
            written = write_recordings([call for _, call in decoded]) if decoded else None
            with transaction.atomic():
                stored = commit_recordings(written) if written else []
                for spool in empty:
                    remove_after_commit(spool)
                done = [p.pk for p in pendings if p not in failed and p not in later]
                PendingFinalisation.objects.filter(pk__in=done).delete()
        except TRANSIENT:
            _discard(written)
            raise
        except Exception as error:  # the finalisation's edge: a recording no retry would store
            _discard(written)
            if len(pendings) > 1:
                raise _BatchSpoilt(str(error)) from error
            failed.update(dict.fromkeys(pendings, error))
            stored = []
        for pending, error in failed.items():
            _finalisation_failed(pending, Path(pending.spool), error)
    for (pending, _), recording in zip(decoded, stored, strict=False):
        finished[pending.pk] = Finished(recording, str(recording.status), pending.node)
    return finished, [pending.pk for pending in later]


# The decoded audio one round of a batch holds in memory at most (one long call may hold
# up to MEMORY_SPOOL_BYTES on its own): the calls after it wait for the next round, so a
# batch of long calls is never all in memory at once. Rounds cost a transaction each.
BATCH_AUDIO_BYTES = 64 * 1024 * 1024


def _decode_all(
    pendings: list[PendingFinalisation],
) -> tuple[list[tuple[PendingFinalisation, DecodedCall]], dict, list[Path], list]:
    """The pending calls decoded, without the database: (decoded, failed with the error,
    spools with no RTP, calls left for another round). A call whose number was learned to
    be do-not-record only as the call went on, or whose recording is stored already
    (committed, then stopped before its spool was removed), only loses its spool."""
    do_not_record = do_not_record_numbers()
    stored = _stored_calls([pending.call_id for pending in pendings])
    decoded, failed, empty = [], {}, []
    held = 0
    for index, pending in enumerate(pendings):
        if decoded and held >= BATCH_AUDIO_BYTES:
            return decoded, failed, empty, pendings[index:]
        spool = Path(pending.spool)
        if pending.call_id in stored or must_not_record(pending.call, do_not_record):
            remove_spool(spool)
            continue
        local_side = Side(pending.local_side) if pending.local_side else None
        why_partial = pending.get_reason_display() if pending.partial else ""
        call = pending.call
        # The finalisation's edge: a damaged log is set aside, not the end of the batch.
        try:
            found = decode_call(call, spool, media_from_json(call.media), local_side, why_partial)
        except Exception as error:
            failed[pending] = error
            continue
        if found is None:
            empty.append(spool)
        else:
            decoded.append((pending, found))
            held += found.audio.held_bytes
    return decoded, failed, empty, []


def _stored_calls(call_ids: list[int]) -> set[int]:
    """Those of the calls whose recording is stored for good (Recording.is_stored)."""
    found = Recording.objects.filter(signalling_id__in=call_ids)
    return {recording.signalling_id for recording in found if recording.is_stored()}


def _discard(written: WrittenRecordings | None) -> None:
    """The files of a batch whose rows were rolled back, or never begun: no row points at
    them (the transaction may fail to begin after the files are written)."""
    if written is not None:
        written.files.discard()


# A database out of reach is tried again this often, waiting longer each time, before the
# recordings are left to their pending rows (finished at the next start).
ATTEMPTS = 6
FIRST_WAIT_SECONDS = 0.5


def finish_one(pending_id: int) -> str:
    """Finish one pending recording here and now (see finish_batch): its outcome."""
    return finish_batch([pending_id])[pending_id]


def finish_batch(pending_ids: list[int]) -> dict[int, str]:
    """Finish pending recordings here and now, their waveforms included: each one's
    outcome, the recording's status, NOTHING_TO_STORE (no RTP, a do-not-record number, a
    spool set aside) or LEFT_PENDING when the database stayed out of reach (their rows wait
    for the next start)."""
    wait = FIRST_WAIT_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            finished = finalise_batch(pending_ids)
            for done in finished.values():
                _draw_waveform(done.recording)
            return {pending_id: done.outcome for pending_id, done in finished.items()}
        except TRANSIENT as error:
            log.warning("finishing %d recordings, attempt %d: %s", len(pending_ids), attempt, error)
            connection.close()  # a fresh connection for the next attempt
            time.sleep(wait)
            wait *= 2
    return dict.fromkeys(pending_ids, LEFT_PENDING)


def _draw_waveform(recording: Recording | None) -> None:
    """A recording too long to draw while it was written is drawn now, still off the capture."""
    if recording is None or recording.peaks is not None or recording.audio_format == "rtp":
        return
    recording.peaks = peaks_for_recording(recording)
    if recording.peaks is not None:
        recording.save(update_fields=["peaks"])


def _finalisation_failed(pending: PendingFinalisation, spool: Path, error: Exception) -> None:
    """A spool that cannot be finished (damaged, or a value the database refuses) would
    fail every retry: it is set aside by the rule of recordings/recovery.py, instead of a
    recording that says "recording" for ever."""
    log.error(
        "the recording of call %s could not be finished", pending.call.call_id, exc_info=error
    )
    recovery.set_aside_failed(spool, pending.call, error, pending.call.call_id, pending.node)
    pending.delete()


@shared_task(name="recorder.tasks.compute_peaks", **CALL_TASK)
def compute_peaks(recording_id: int) -> None:
    """The player's waveform, for a recording finalised without one (recordings/waveform.py)."""
    recording = Recording.objects.filter(pk=recording_id, peaks__isnull=True).first()
    if recording is None:
        return
    peaks = peaks_for_recording(recording)
    if peaks is not None:
        Recording.objects.filter(pk=recording_id).update(peaks=peaks)
