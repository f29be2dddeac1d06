"""Recordings finished off the capture process (recordings/finisher.py): by worker processes
that share nothing with the capture but the database and the disk, and that lose nothing
when one of them dies or the command is killed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from recorder.models import Call, Recording, recordings_storage
from recorder.nodes.models import PendingFinalisation
from recorder.recordings import finalise, finish
from recorder.recordings.finalise import NOTHING_TO_STORE, finish_batch, schedule_finalisation
from recorder.recordings.finisher import (
    InlineFinisher,
    ProcessFinisher,
    finish_left_over,
)
from recorder.recordings.finishing_process import BATCH, NICENESS, share_of
from recorder.recordings.recovery import FAILED, recover_spools
from tests.qms.test_settings import run_manage
from tests.recorder.recordings.test_recording_recovery import logged_call
from tests.recorder.recordings.test_spool_failures import call_with_damaged_spool

# The tests' SQLite database is in memory, which a second process cannot open; CI runs these
# on PostgreSQL (DATABASE_URL), as production does.
needs_shared_database = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="a second process cannot open SQLite in memory"
)
holds_column_lengths = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="SQLite does not hold a value to its column's length"
)


def hand_over(call: Call, spool: Path, enqueue) -> None:
    """End the call as a sink does: its pending row committed, then handed to `enqueue`."""
    with transaction.atomic():
        schedule_finalisation(call, "here", spool, "", PendingFinalisation.Reason.ENDED, enqueue)


def calls(tmp_path: Path, count: int, prefix: str = "finished") -> list[tuple[Call, Path]]:
    return [logged_call(tmp_path, f"{prefix}-{n}") for n in range(count)]


@needs_shared_database
@pytest.mark.django_db(transaction=True)
def test_recordings_are_finished_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoding here would fail: the recordings can only come out of the worker process.
    def not_here(*args: object) -> None:
        raise AssertionError("decoded in the capture process")

    monkeypatch.setattr(finish, "finish_recording", not_here)
    monkeypatch.setattr("recorder.recordings.recovery.finish_recording", not_here)
    finisher = ProcessFinisher(1)
    for call, spool in calls(tmp_path, 3):
        hand_over(call, spool, finisher.submit)
    finisher.close()

    assert finisher.outcomes == {"complete": 3}
    assert sorted(Recording.objects.values_list("status", flat=True)) == ["complete"] * 3
    assert not PendingFinalisation.objects.exists()
    assert not list(tmp_path.iterdir())  # every spool gone with its committed recording
    assert all(not worker.is_alive() for worker in finisher.workers)


@needs_shared_database
@pytest.mark.django_db(transaction=True)
def test_started_workers_are_up_before_the_first_call_ends_and_share_its_recordings(
    tmp_path: Path,
) -> None:
    finisher = ProcessFinisher(2)
    finisher.start()
    started = [worker.pid for worker in finisher.workers]
    assert len(started) == 2 and all(worker.is_alive() for worker in finisher.workers)
    for call, spool in calls(tmp_path, 4):
        hand_over(call, spool, finisher.submit)
    finisher.close()

    assert [worker.pid for worker in finisher.workers] == started  # no others were started
    assert finisher.outcomes == {"complete": 4}
    assert all(not worker.is_alive() for worker in finisher.workers)


@needs_shared_database
@pytest.mark.django_db(transaction=True)
def test_workers_run_at_a_lower_priority_than_their_command(tmp_path: Path) -> None:
    finisher = ProcessFinisher(1)
    finisher.start()
    [worker] = finisher.workers
    own = os.getpriority(os.PRIO_PROCESS, 0)
    deadline = time.monotonic() + 30
    # The worker lowers its own priority as it starts.
    while os.getpriority(os.PRIO_PROCESS, worker.pid) == own and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, own + NICENESS)
    for call, spool in calls(tmp_path, 1):
        hand_over(call, spool, finisher.submit)
    finisher.close()
    assert finisher.outcomes == {"complete": 1}


def test_commands_finish_in_a_process_a_core_by_default(tmp_path: Path) -> None:
    script = "from django.conf import settings; print(settings.QMS_FINISH_PROCESSES)"
    done = run_manage(tmp_path, "shell", "-c", script, DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == min(4, len(os.sched_getaffinity(0)))


@needs_shared_database
@pytest.mark.django_db(transaction=True)
def test_started_workers_with_nothing_to_finish_end_with_their_command() -> None:
    finisher = ProcessFinisher(1)
    finisher.start()
    finisher.close()
    assert finisher.outcomes == {}
    [worker] = finisher.workers
    worker.join(timeout=30)  # told to stop, it ends once it is set up
    assert worker.exitcode == 0


@needs_shared_database
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_midway_is_replaced_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    finisher = ProcessFinisher(1)
    made = calls(tmp_path, 6)
    for call, spool in made[:3]:
        hand_over(call, spool, finisher.submit)
    [first] = finisher.workers
    os.kill(first.pid, signal.SIGKILL)
    first.join(timeout=10)
    for call, spool in made[3:]:
        hand_over(call, spool, finisher.submit)
    finisher.close()

    [second] = finisher.workers
    assert second.pid != first.pid and first.exitcode == -signal.SIGKILL
    assert Recording.objects.count() == 6
    assert set(Recording.objects.values_list("status", flat=True)) == {"complete"}
    assert sum(finisher.outcomes.values()) == 6  # each counted once, however often handed over
    assert not PendingFinalisation.objects.exists()


@needs_shared_database
@pytest.mark.django_db(transaction=True)
def test_a_worker_takes_no_interrupt_its_command_finishes_first(tmp_path: Path) -> None:
    # Ctrl-C reaches the terminal's whole process group; the command stops the capture and
    # then waits for what its workers hold.
    finisher = ProcessFinisher(1)
    call, spool = logged_call(tmp_path, "interrupted")
    hand_over(call, spool, finisher.submit)
    [worker] = finisher.workers
    time.sleep(1.0)  # past its start-up, when the signals are set aside
    os.kill(worker.pid, signal.SIGINT)
    os.kill(worker.pid, signal.SIGTERM)
    finisher.close()
    assert worker.exitcode == 0
    assert Recording.objects.get().status == "complete"


@pytest.mark.django_db(transaction=True)
def test_what_a_killed_command_handed_over_is_finished_at_the_next_start(tmp_path: Path) -> None:
    # Killed after the commit, before its finisher took the call: the pending row remains.
    call, spool = logged_call(tmp_path, "left-over")
    hand_over(call, spool, lambda pending: None)
    assert finish_left_over("elsewhere", tmp_path) == 0  # another node's rows are not ours

    assert finish_left_over("here", tmp_path) == 1
    # The call had ended: a complete recording, not one of a cut call, and nothing left
    # for the recovery of cut calls.
    assert Recording.objects.get().status == "complete"
    assert recover_spools(tmp_path) == []
    assert not PendingFinalisation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_inline_finisher_finishes_in_the_thread_that_hands_over(tmp_path: Path) -> None:
    finisher = InlineFinisher()
    call, spool = logged_call(tmp_path, "inline")
    hand_over(call, spool, finisher.submit)
    # Finished by the time the commit returns: nothing waits for close().
    assert Recording.objects.get().status == "complete"
    assert finisher.outcomes == {"complete": 1}


# -- several recordings finished together (recordings/finalise.py finalise_batch) ----------


def pending_calls(tmp_path: Path, count: int, prefix: str = "finished") -> list[int]:
    """`count` ended calls with their pending rows, as a sink leaves them."""
    pending_ids = []
    for call, spool in calls(tmp_path, count, prefix):
        hand_over(call, spool, lambda pending: pending_ids.append(pending.pk))
    return pending_ids


def files_in(archive: Path) -> set[str]:
    return {str(path.relative_to(archive)) for path in archive.rglob("*") if path.is_file()}


@pytest.mark.django_db(transaction=True)
def test_a_batch_costs_the_same_few_statements_whatever_its_size(tmp_path: Path) -> None:
    few, many = pending_calls(tmp_path, 2, "few"), pending_calls(tmp_path, 20, "many")
    with CaptureQueriesContext(connection) as for_few:
        assert set(finish_batch(few).values()) == {"complete"}
    with CaptureQueriesContext(connection) as for_many:
        assert set(finish_batch(many).values()) == {"complete"}
    # The pending rows with their calls, the do-not-record numbers, stored recordings
    # looked for, every row in one statement, the pending rows removed, the transaction.
    assert len(for_many) == len(for_few) <= 8
    assert Recording.objects.filter(status="complete").count() == 22


@pytest.mark.django_db(transaction=True)
def test_a_batch_writes_its_files_before_its_transaction_begins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction holds the rows alone: on SQLite its write lock is the database's
    one, and held over a batch's files and fsyncs it kept the other finishing processes
    and the capture's database process waiting (asleep in SQLite's busy handler)."""
    pending_ids = pending_calls(tmp_path, 3)
    in_transaction: dict[str, list[bool]] = {"files": [], "rows": []}
    real_store, real_upsert = finish._store, finish._upsert

    def store(*arguments: object) -> None:
        in_transaction["files"].append(connection.in_atomic_block)
        real_store(*arguments)

    def upsert(*arguments: object) -> None:
        in_transaction["rows"].append(connection.in_atomic_block)
        real_upsert(*arguments)

    monkeypatch.setattr(finish, "_store", store)
    monkeypatch.setattr(finish, "_upsert", upsert)

    outcomes = finish_batch(pending_ids)

    assert [outcomes[pending_id] for pending_id in pending_ids] == ["complete"] * 3
    assert in_transaction == {"files": [False] * 3, "rows": [True]}
    assert not PendingFinalisation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_transaction_cannot_begin_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files are written before the transaction: a database that refuses it (locked,
    gone) must still find no file without its row, and the spools and pending rows kept."""
    pending_ids = pending_calls(tmp_path, 2)
    archive = Path(recordings_storage().location)
    before = files_in(archive)

    class Refused:
        def __enter__(self) -> None:
            raise OperationalError("database is locked")

        def __exit__(self, *exception: object) -> None:
            pass

    monkeypatch.setattr(finalise.transaction, "atomic", Refused)
    with pytest.raises(OperationalError):
        finalise.finalise_batch(pending_ids)
    monkeypatch.undo()

    assert files_in(archive) == before
    assert set(PendingFinalisation.objects.values_list("pk", flat=True)) == set(pending_ids)
    assert not Recording.objects.exists()
    assert set(finish_batch(pending_ids).values()) == {"complete"}


@pytest.mark.django_db(transaction=True)
def test_a_batch_holds_so_much_decoded_audio_at_once_and_finishes_the_rest_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of long calls is not all in memory: past the budget, the calls decoded so
    far are stored, and the rest are decoded in a round of their own."""
    pending_ids = pending_calls(tmp_path, 5)
    rounds: list[tuple[int, int]] = []  # (recordings stored, audio bytes held) per round
    real = finish.write_recordings

    def counted(decoded: list) -> finish.WrittenRecordings:
        rounds.append((len(decoded), sum(call.audio.held_bytes for call in decoded)))
        return real(decoded)

    monkeypatch.setattr(finalise, "write_recordings", counted)
    monkeypatch.setattr(finalise, "BATCH_AUDIO_BYTES", 1)  # one call's audio is past it

    outcomes = finish_batch(pending_ids)

    assert [outcomes[pending_id] for pending_id in pending_ids] == ["complete"] * 5
    assert [stored for stored, _ in rounds] == [1, 1, 1, 1, 1]
    one_call = rounds[0][1]
    assert one_call > 0
    monkeypatch.setattr(finalise, "BATCH_AUDIO_BYTES", one_call + 1)  # two calls reach it
    rounds.clear()
    assert set(finish_batch(pending_calls(tmp_path, 5, "again")).values()) == {"complete"}
    assert [stored for stored, _ in rounds] == [2, 2, 1]
    assert Recording.objects.filter(status="complete").count() == 10
    assert not PendingFinalisation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_damaged_spool_in_a_batch_is_set_aside_alone(tmp_path: Path) -> None:
    pending_ids = pending_calls(tmp_path, 3)
    damaged, spool = call_with_damaged_spool(tmp_path, "damaged-in-a-batch")
    hand_over(damaged, spool, lambda pending: pending_ids.insert(1, pending.pk))

    outcomes = finish_batch(pending_ids)

    assert sorted(outcomes.values()) == ["complete"] * 3 + [NOTHING_TO_STORE]
    assert Recording.objects.get(signalling=damaged).status == Recording.Status.FAILED
    assert (tmp_path / FAILED / spool.name).is_file()
    assert Recording.objects.filter(status="complete").count() == 3
    assert not PendingFinalisation.objects.exists()


@holds_column_lengths
@pytest.mark.django_db(transaction=True)
def test_a_row_the_database_refuses_spoils_nothing_else_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending_ids = pending_calls(tmp_path, 4)
    refused = PendingFinalisation.objects.get(pk=pending_ids[2]).call
    real = finish._store

    def too_long_for_its_column(recording: Recording, found: object, storage: object) -> Path:
        written = real(recording, found, storage)
        if recording.signalling_id == refused.pk:
            recording.codec = "PCMU" * 20  # the column holds 64
        return written

    monkeypatch.setattr(finish, "_store", too_long_for_its_column)
    archive = Path(recordings_storage().location)
    before = files_in(archive)

    outcomes = finish_batch(pending_ids)

    assert [outcomes[pending_id] for pending_id in pending_ids] == [
        "complete", "complete", NOTHING_TO_STORE, "complete"
    ]  # fmt: skip
    assert Recording.objects.get(signalling=refused).status == Recording.Status.FAILED
    assert not PendingFinalisation.objects.exists()
    # The batch's rolled-back files are gone: every new file is a stored recording's.
    stored = set(Recording.objects.exclude(file="").values_list("file", flat=True))
    assert files_in(archive) - before == stored - before
    assert len(stored) == 3


def test_a_worker_takes_an_even_share_of_what_is_queued() -> None:
    # A worker has just taken one recording; what it takes in all is its share of that
    # one and those still queued, so that a burst of call ends keeps every worker busy.
    jobs = multiprocessing.get_context("spawn").Queue()
    assert share_of(jobs, 2) == 1  # nothing else queued: the one it has
    for pending_id in range(54):
        jobs.put(pending_id)
    assert share_of(jobs, 2) == 28  # 55 ended together: 28 for this one, 27 left
    assert share_of(jobs, 1) == 55
    for pending_id in range(54, 500):
        jobs.put(pending_id)
    assert share_of(jobs, 2) == BATCH  # a long queue: batches as large as they may be
    jobs.close()
    jobs.cancel_join_thread()
