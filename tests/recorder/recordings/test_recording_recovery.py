"""Recovery at start: a spool whose call QMS has no row for is set aside once; a log
outlives its recording until the recording's row is committed, and no longer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import transaction

from integrations.observations import Side
from recorder.engine.calls import moment
from recorder.engine.codec import media_from_json
from recorder.media.rtplog import BLOCK_HEADER, LOG_NAME, MANIFEST_NAME, RtpLog, read_manifest
from recorder.models import Call, Recording
from recorder.nodes.models import PendingFinalisation
from recorder.recordings.finish import finish_recording
from recorder.recordings.recovery import ORPHANED, recover_spools
from recorder.sinks.ordered import apply_in_order
from recorder.sinks.outbox import RECOVER
from tests.recorder.media.rtp_build import rtp


@pytest.mark.django_db
def test_an_unknown_calls_spool_is_set_aside_once(tmp_path: Path) -> None:
    log = RtpLog(tmp_path / "1700000000-abc.rtp", {"call_id": "nobody", "protocol": "sip",
                                                "started_at": 1_700_000_000.0})  # fmt: skip
    log.append(1_700_000_000.5, Side.CALLER, b"\x80\x00" + b"\x00" * 10 + b"\xff" * 160)
    log.close()
    assert recover_spools(tmp_path) == []
    assert recover_spools(tmp_path) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == [ORPHANED]
    assert [path.name for path in (tmp_path / ORPHANED).iterdir()] == ["1700000000-abc.rtp"]


def logged_call(spool_root: Path, call_id: str) -> tuple[Call, Path]:
    """A Call row and its spool holding one second of A-law from each side."""
    started = 1_700_000_100.0
    call = Call.objects.create(
        protocol="sip", call_id=call_id, started_at=moment(started), ended_at=moment(started + 1),
        caller="9001", callee="9002", direction=Call.Direction.OUTBOUND,
        media=[{"side": "caller", "ip": "10.0.0.1", "port": 4000,
                "payload_types": [[8, "PCMA/8000"]], "mode": "sendrecv", "encrypted": False},
               {"side": "callee", "ip": "10.0.0.2", "port": 5000,
                "payload_types": [[8, "PCMA/8000"]], "mode": "sendrecv", "encrypted": False}],
    )  # fmt: skip
    spool = spool_root / f"{int(started)}-{call_id}.rtp"
    log = RtpLog(spool, {"call_id": call_id, "protocol": "sip", "started_at": started})
    for n in range(50):
        for side in (Side.CALLER, Side.CALLEE):
            log.append(started + 0.02 * n, side, rtp(n, 160 * n))
    log.close()
    return call, spool


@pytest.mark.django_db(transaction=True)
def test_a_recording_rolled_back_keeps_its_log_for_recovery(tmp_path: Path) -> None:
    call, spool = logged_call(tmp_path, "rolled-back")
    with pytest.raises(RuntimeError), transaction.atomic():
        finish_recording(call, spool, media_from_json(call.media), None)
        raise RuntimeError("the batch's commit never happens")
    assert spool.exists()
    assert not Recording.objects.exists()
    [recovered] = recover_spools(tmp_path)
    assert recovered.status == Recording.Status.PARTIAL
    assert not spool.exists()


@pytest.mark.django_db(transaction=True)
def test_a_committed_recording_whose_log_outlived_it_is_not_redone(tmp_path: Path) -> None:
    call, spool = logged_call(tmp_path, "committed")
    with transaction.atomic():
        recording = finish_recording(call, spool, media_from_json(call.media), None)
        assert spool.exists()  # removed only once the row is committed
    assert not spool.exists()
    _, spool_again = logged_call_log_only(tmp_path, "committed")
    assert recover_spools(tmp_path) == []
    assert not spool_again.exists()
    recording.refresh_from_db()
    assert recording.status == Recording.Status.COMPLETE


def logged_call_log_only(spool_root: Path, call_id: str) -> tuple[None, Path]:
    """The same call's log written again, as if the process died before removing it."""
    started = 1_700_000_100.0
    spool = spool_root / f"{int(started)}-{call_id}.rtp"
    log = RtpLog(spool, {"call_id": call_id, "protocol": "sip", "started_at": started})
    log.append(started, Side.CALLER, rtp(0, 0))
    log.close()
    return None, spool


@pytest.mark.django_db(transaction=True)
def test_a_node_recover_event_queued_in_the_older_form_is_applied_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outboxes written before the task read manifests itself carry the manifest's fields too.
    monkeypatch.setattr("recorder.recordings.finalise.enqueue_finalisation", lambda pending: None)
    call, spool = logged_call(tmp_path, "older-form")
    event = {"call_id": "older-form", "protocol": "sip", "started_at": 1_700_000_100.0}

    outcome = apply_in_order("node-a:eth1:run", 1, RECOVER, {**event, "spool": str(spool)}, "a")

    assert outcome == "applied"
    call.refresh_from_db()
    assert (call.state, call.end_reason) == (Call.State.ENDED, "capture-crashed")
    pending = PendingFinalisation.objects.get(call=call)
    assert (pending.reason, pending.spool, pending.node) == ("capture-crashed", str(spool), "a")


@pytest.mark.django_db(transaction=True)
def test_a_spool_folder_of_the_earlier_layout_is_still_recovered(tmp_path: Path) -> None:
    # Spools written before a call's log became one file: a folder with call.json and an
    # rtp.log of blocks alone. An upgrade with calls in progress must not lose them.
    call, spool = logged_call(tmp_path, "before-the-upgrade")
    data = spool.read_bytes()
    manifest_end = BLOCK_HEADER.size + BLOCK_HEADER.unpack_from(data)[3]
    manifest = read_manifest(spool)
    spool.unlink()
    folder = tmp_path / spool.stem
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    (folder / LOG_NAME).write_bytes(data[manifest_end:])

    [recovered] = recover_spools(tmp_path)

    assert recovered.signalling_id == call.pk
    assert recovered.status == Recording.Status.PARTIAL
    assert recovered.duration_seconds == pytest.approx(1.0, abs=0.05)
    assert list(tmp_path.iterdir()) == []
