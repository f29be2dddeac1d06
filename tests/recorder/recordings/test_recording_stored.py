"""Recording.is_stored(): the one answer to "is this recording already stored?".

Finishing a call again (a recovery at start that finds a log its process did not live to
remove, a node's finalisation delivered twice) must leave a stored recording as it is, and
may overwrite one that is not. Stored: complete, partial and not decodable, with the file in
storage; not stored: recording and failed. The boundaries are checked on the model, then
through both callers: the start-up recovery and the node's finalisation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from recorder.models import Call, Recording
from recorder.nodes.models import PendingFinalisation
from recorder.recordings.finalise import finalise_recording
from recorder.recordings.recovery import mark_failed, recover_spools
from tests.recorder.recordings.test_recording_recovery import logged_call, logged_call_log_only

Status = Recording.Status


def recording_of(call: Call, status: str, with_file: bool = True) -> Recording:
    recording = Recording.objects.create(
        signalling=call, call_id=call.call_id, started_at=call.started_at, status=status
    )
    if with_file:
        recording.file.save(f"stored-{recording.pk}.wav", ContentFile(b"RIFF"), save=True)
    return recording


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        (Status.COMPLETE, True),
        (Status.PARTIAL, True),
        (Status.NOT_DECODABLE, True),
        (Status.RECORDING, False),
        (Status.FAILED, False),
    ],
)
def test_a_recording_with_its_file_is_stored_by_its_status(
    postgresql: None, tmp_path: Path, status: str, stored: bool
) -> None:
    call, _ = logged_call(tmp_path, f"status-{status}")
    assert recording_of(call, status).is_stored() is stored


def test_a_complete_recording_whose_file_is_gone_is_not_stored(
    postgresql: None, tmp_path: Path
) -> None:
    call, _ = logged_call(tmp_path, "file-gone")
    recording = recording_of(call, Status.COMPLETE)
    recording.file.storage.delete(recording.file.name)
    assert not recording.is_stored()


def test_a_complete_recording_without_a_file_is_not_stored(
    postgresql: None, tmp_path: Path
) -> None:
    call, _ = logged_call(tmp_path, "no-file")
    assert not recording_of(call, Status.COMPLETE, with_file=False).is_stored()


def test_recovery_leaves_a_partial_recording_as_it_was_and_only_removes_the_log(
    postgresql: None, tmp_path: Path
) -> None:
    logged_call(tmp_path, "partial-once")
    [first] = recover_spools(tmp_path)
    # The same call's log again, as if the process died before removing it: were it finished
    # again, its one packet would replace the second of audio.
    _, spool_again = logged_call_log_only(tmp_path, "partial-once")

    assert recover_spools(tmp_path) == []

    assert not spool_again.exists()
    again = Recording.objects.get()
    assert (again.status, again.sha256, again.duration_seconds) == (
        Status.PARTIAL,
        first.sha256,
        first.duration_seconds,
    )


def test_recovery_finishes_a_failed_recording_again_once_its_spool_is_back(
    postgresql: None, tmp_path: Path
) -> None:
    call, _spool = logged_call(tmp_path, "put-back")
    mark_failed(call, OSError("no space left on device"))
    assert Recording.objects.get().status == Status.FAILED

    [recording] = recover_spools(tmp_path)

    assert recording.status == Status.PARTIAL
    assert recording.duration_seconds == pytest.approx(1.0, abs=0.05)


def test_a_stored_recording_is_never_marked_failed(postgresql: None, tmp_path: Path) -> None:
    call, _ = logged_call(tmp_path, "kept")
    [recording] = recover_spools(tmp_path)

    mark_failed(call, ValueError("a second attempt failed"))

    recording.refresh_from_db()
    assert recording.status == Status.PARTIAL


def test_a_recording_whose_file_is_gone_may_be_marked_failed(
    postgresql: None, tmp_path: Path
) -> None:
    call, _ = logged_call(tmp_path, "lost-file")
    [recording] = recover_spools(tmp_path)
    recording.file.storage.delete(recording.file.name)

    mark_failed(call, ValueError("a second attempt failed"))

    recording.refresh_from_db()
    assert recording.status == Status.FAILED


def pending_for(call: Call, spool: Path, reason: str) -> PendingFinalisation:
    return PendingFinalisation.objects.create(
        call=call, node="node-a", spool=str(spool), reason=reason
    )


def test_a_node_finalisation_delivered_again_leaves_a_partial_recording_as_it_was(
    postgresql: None, tmp_path: Path
) -> None:
    call, spool = logged_call(tmp_path, "node-partial")
    crashed = PendingFinalisation.Reason.CAPTURE_CRASHED
    first = Recording.objects.get(pk=finalise_recording.run(pending_for(call, spool, crashed).pk))
    assert first.status == Status.PARTIAL
    _, spool_again = logged_call_log_only(tmp_path, "node-partial")

    assert finalise_recording.run(pending_for(call, spool_again, crashed).pk) is None

    assert not spool_again.exists()
    again = Recording.objects.get()
    assert (again.status, again.sha256) == (Status.PARTIAL, first.sha256)


def test_a_node_finalisation_overwrites_a_failed_recording(
    postgresql: None, tmp_path: Path
) -> None:
    call, spool = logged_call(tmp_path, "node-failed")
    mark_failed(call, OSError("no space left on device"))

    finished = finalise_recording.run(pending_for(call, spool, "ended").pk)

    assert Recording.objects.get(pk=finished).status == Status.COMPLETE
