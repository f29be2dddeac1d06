"""A capture node is a Celery worker: `celery -A qms worker -Q capture.test` on node "test"
runs the sniffer configured for it in the database, and SIPp calls on loopback become
recordings of the agent whose phone registered; its state shows in the interface's row;
a call in progress when the worker stops becomes a partial recording.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from extensions.models import Agent, Binding
from recorder.models import Call, Recording
from recorder.nodes.models import CaptureInterface, PendingFinalisation
from tests.recorder.nodes.capture_node import (
    HANG_UP_AFTER_SECONDS,
    CaptureWorker,
    RedisServer,
    database_url,
    eventually,
    johns_desk,
    loopback_interface,
    phones,
)

CALL_SECONDS = 2.0
LONG_CALL_SECONDS = 8.0
LANDING_SECONDS = 30.0


@pytest.fixture
def worker(postgresql: None, redis_server: RedisServer, tmp_path: Path) -> Iterator[CaptureWorker]:
    started = CaptureWorker(tmp_path, redis_server.url, database_url())
    try:
        yield started
    finally:
        started.stop()


def recordings() -> list[Recording]:
    return list(Recording.objects.select_related("agent", "signalling").order_by("started_at"))


def test_a_capture_worker_records_sipp_calls_for_the_agent_whose_phone_registered(
    worker: CaptureWorker, tmp_path: Path
) -> None:
    john = johns_desk()
    lo = loopback_interface()
    with phones(tmp_path, CALL_SECONDS) as phone:
        worker.start()
        phone.register("9001")
        phone.call(CALL_SECONDS)
        phone.call(CALL_SECONDS)
        eventually(
            lambda: Recording.objects.count() == 2, LANDING_SECONDS, "2 recordings", worker.log
        )

        lo.refresh_from_db()
        assert lo.running and lo.lease_owner.startswith("capture-test@")
        assert timezone.now() - lo.heartbeat_at < timedelta(seconds=5)
        assert lo.running_since <= min(r.started_at for r in recordings())
        assert (lo.kernel_drops, lo.last_error) == (0, "")

    found = recordings()
    assert len({r.call_id for r in found}) == 2
    for recording in found:
        assert (recording.status, recording.agent, recording.extension) == (
            "complete",
            john,
            "9001",
        )
        assert (recording.codec, recording.local_ip) == ("PCMU", "127.0.0.41")
        assert recording.duration_seconds == pytest.approx(CALL_SECONDS, abs=0.25)
        assert recording.signalling.node == "test"
        assert Path(recording.file.path).stat().st_size == recording.size
    (binding,) = Binding.objects.filter(extension_number="9001", source="sip-register")
    assert binding.ip == "127.0.0.41"

    assert worker.stop() == 0
    lo.refresh_from_db()
    assert (lo.running, lo.lease_owner) == (False, "")


def connected_long_call(worker: CaptureWorker, phone):
    """The worker capturing, 9001 registered, and a long call from it connected."""
    worker.start()
    phone.register("9001")
    caller = phone.call(LONG_CALL_SECONDS, wait=False)
    eventually(
        lambda: Call.objects.filter(state="connected").exists(),
        LANDING_SECONDS,
        "the call to be connected",
        worker.log,
    )
    return caller


def test_a_call_in_progress_when_the_worker_stops_is_a_partial_recording_at_the_next_start(
    worker: CaptureWorker, tmp_path: Path
) -> None:
    john = johns_desk()
    loopback_interface()
    with phones(tmp_path, LONG_CALL_SECONDS) as phone:
        caller = connected_long_call(worker, phone)
        assert worker.stop() == 0  # mid-call: its sniffer ends the call as it stops
        caller.wait(timeout=30)  # the rest of the call happens while nobody captures
        assert not Recording.objects.exists()

        worker.start()
        eventually(lambda: Recording.objects.exists(), LANDING_SECONDS, "a recording", worker.log)

    (recording,) = recordings()
    assert (recording.status, recording.agent) == ("partial", john)
    assert recording.status_detail == "the capture stopped during the call"
    assert recording.signalling.end_reason == "capture-ended"
    assert 0.5 < recording.duration_seconds < LONG_CALL_SECONDS - 1
    assert not PendingFinalisation.objects.exists()
    assert Call.objects.count() == 1
    assert Agent.objects.count() == 1
    assert CaptureInterface.objects.get().restarts == 0


def test_a_sniffer_killed_mid_call_is_restarted_and_its_cut_call_recorded_as_partial(
    worker: CaptureWorker, tmp_path: Path
) -> None:
    john = johns_desk()
    loopback_interface()
    with phones(tmp_path, LONG_CALL_SECONDS) as phone:
        caller = connected_long_call(worker, phone)
        time.sleep(1.5)  # a second of audio reaches the spool
        (sniffer,) = worker.sniffer_pids()
        os.kill(sniffer, signal.SIGKILL)
        eventually(
            lambda: worker.captures_announced() == 2, LANDING_SECONDS, "a restart", worker.log
        )
        caller.wait(timeout=30)
        phone.call(CALL_SECONDS)
        eventually(
            lambda: Recording.objects.count() == 2, LANDING_SECONDS, "2 recordings", worker.log
        )

    cut, whole = recordings()
    assert (cut.status, cut.agent) == ("partial", john)
    assert cut.status_detail == "the capture process stopped during the call"
    assert cut.signalling.end_reason == "capture-crashed"
    assert 0.5 < cut.duration_seconds < LONG_CALL_SECONDS - 1
    assert (whole.status, whole.agent) == ("complete", john)
    # The far end streams its longer audio until John hangs up.
    assert whole.duration_seconds == pytest.approx(CALL_SECONDS + HANG_UP_AFTER_SECONDS, abs=0.25)
    assert len(worker.sniffer_pids()) == 2
    assert CaptureInterface.objects.get().restarts == 1


def test_two_workers_of_one_node_never_capture_the_same_interface(
    worker: CaptureWorker, redis_server: RedisServer, tmp_path: Path
) -> None:
    johns_desk()
    lo = loopback_interface()
    standby = CaptureWorker(tmp_path / "standby", redis_server.url, database_url())
    standby.workdir.mkdir()
    with phones(tmp_path, CALL_SECONDS) as phone:
        try:
            worker.start()
            standby.start(capturing=False)
            time.sleep(3)  # three heartbeats of the standby: the lease is held
            assert standby.captures_announced() == 0
            phone.register("9001")
            phone.call(CALL_SECONDS)
            eventually(
                lambda: Recording.objects.count() == 1, LANDING_SECONDS, "a recording", worker.log
            )
            lo.refresh_from_db()
            assert (
                lo.lease_owner.startswith("capture-test@")
                and str(worker.process.pid) in lo.lease_owner
            )

            assert worker.stop() == 0  # the lease is released: the standby takes over
            eventually(
                lambda: standby.captures_announced() == 1,
                LANDING_SECONDS,
                "a takeover",
                standby.log,
            )
            phone.call(CALL_SECONDS)
            eventually(
                lambda: Recording.objects.count() == 2, LANDING_SECONDS, "2 recordings", standby.log
            )
        finally:
            standby.stop()

    assert Call.objects.count() == 2
    assert set(Recording.objects.values_list("status", flat=True)) == {"complete"}
    assert worker.captures_announced() == 1


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_killed_worker_s_sniffer_stops_and_its_successor_takes_the_interface_back_at_once(
    worker: CaptureWorker,
) -> None:
    loopback_interface()
    worker.lease_seconds = 60
    worker.start()
    (sniffer,) = worker.sniffer_pids()
    killed = worker.process.pid
    worker.process.kill()  # SIGKILL: no clean stop, no lease released
    worker.process.wait()
    eventually(lambda: not running(sniffer), 10, "the orphaned sniffer to stop", worker.log)

    started = time.monotonic()
    worker.start()

    # Well within the minute the killed worker's lease still ran.
    assert time.monotonic() - started < 20
    lo = CaptureInterface.objects.get()
    assert f":{worker.process.pid}:" in lo.lease_owner and f":{killed}:" not in lo.lease_owner
