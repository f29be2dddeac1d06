"""Recordings finished off the capture process (recordings/finisher.py): by worker processes
that share nothing with the capture but the database and the disk, and that lose nothing
when one of them dies or the command is killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.db import connection, transaction

from recorder.models import Call, Recording
from recorder.nodes.models import PendingFinalisation
from recorder.recordings import finish
from recorder.recordings.finalise import schedule_finalisation
from recorder.recordings.finisher import (
    InlineFinisher,
    ProcessFinisher,
    finish_left_over,
    finisher_for_commands,
)
from recorder.recordings.recovery import recover_spools
from tests.recorder.recordings.test_recording_recovery import logged_call

needs_shared_database = pytest.mark.skipif(
    connection.vendor == "sqlite", reason="a second process cannot open SQLite in memory"
)


def hand_over(call: Call, spool: Path, enqueue) -> None:
    """End the call as a sink does: its pending row committed, then handed to `enqueue`."""
    with transaction.atomic():
        schedule_finalisation(call, "here", spool, "", PendingFinalisation.Reason.ENDED, enqueue)


def calls(tmp_path: Path, count: int) -> list[tuple[Call, Path]]:
    return [logged_call(tmp_path, f"finished-{n}") for n in range(count)]


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


def test_commands_finish_in_processes_unless_told_not_to(settings) -> None:
    settings.QMS_FINISH_PROCESSES = 0
    assert isinstance(finisher_for_commands(), InlineFinisher)
    settings.QMS_FINISH_PROCESSES = 2
    in_memory = getattr(connection, "is_in_memory_db", lambda: False)()
    expected = InlineFinisher if in_memory else ProcessFinisher
    chosen = finisher_for_commands()
    assert isinstance(chosen, expected)
    if isinstance(chosen, ProcessFinisher):
        assert chosen.processes == 2 and not chosen.workers  # started only when needed
        chosen.close()
