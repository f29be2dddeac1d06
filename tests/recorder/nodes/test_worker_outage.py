"""Redis, then PostgreSQL, go away while a capture worker records calls (issue 5, §2).

The worker runs on a redis-server of the test's own, which is stopped mid-capture and
started again empty (no persistence: whatever it held is forgotten), and reaches
PostgreSQL through a TCP proxy that the test cuts for a while (the test itself reads the
database directly). Calls go on throughout. Afterwards every call is one complete
recording of the right agent, and nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from extensions.models import Binding
from recorder.models import Call, Recording
from recorder.nodes.models import CaptureInterface, OutboxCursor, PendingFinalisation
from recorder.sinks.outbox import RunReader, runs_of
from tests.recorder.nodes.capture_node import (
    CaptureWorker,
    RedisServer,
    TcpProxy,
    database_url,
    eventually,
    johns_desk,
    loopback_interface,
    phones,
)

CALL_SECONDS = 2.0
LANDING_SECONDS = 45.0


@pytest.fixture
def database_proxy(postgresql: None) -> Iterator[TcpProxy]:
    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    proxy.open()
    try:
        yield proxy
    finally:
        proxy.cut()


@pytest.fixture
def worker(
    redis_server: RedisServer, database_proxy: TcpProxy, tmp_path: Path
) -> Iterator[CaptureWorker]:
    reached = database_url("127.0.0.1", database_proxy.port)
    started = CaptureWorker(tmp_path, redis_server.url, reached)
    try:
        yield started
    finally:
        started.stop()


def undelivered(outbox: Path) -> int:
    """Events in the worker's outbox that the database has not applied."""
    waiting = 0
    for run in runs_of(outbox):
        key = f"test:lo:{run.name}"
        applied = OutboxCursor.objects.filter(run=key).values_list("applied_seq", flat=True)
        waiting += RunReader(run).last_seq() - (applied.first() or 0)
    return waiting


def test_calls_captured_through_broker_and_database_outages_are_each_recorded_once(
    worker: CaptureWorker, redis_server: RedisServer, database_proxy: TcpProxy, tmp_path: Path
) -> None:
    john = johns_desk()
    loopback_interface()
    landed = lambda count: lambda: Recording.objects.count() == count  # noqa: E731
    with phones(tmp_path, CALL_SECONDS) as phone:
        worker.start()
        phone.register("9001")
        phone.call(CALL_SECONDS)
        eventually(landed(1), LANDING_SECONDS, "the first recording", worker.log)

        # Redis goes away: the capture goes on, its events wait in the outbox.
        redis_server.stop()
        phone.register("9001")
        phone.call(CALL_SECONDS)
        phone.call(CALL_SECONDS)
        assert undelivered(worker.outbox()) >= 4
        assert Call.objects.count() == 1
        # The admin shows the outbox growing: the heartbeat goes on while the database is up.
        eventually(
            lambda: CaptureInterface.objects.filter(outbox_backlog__gte=4).exists(),
            5,
            "the backlog in the interface's live state",
            worker.log,
        )
        redis_server.start()  # empty: nothing it held before survives
        eventually(landed(3), LANDING_SECONDS, "the calls made while Redis was down", worker.log)

        # PostgreSQL becomes unreachable for the worker (the test still reads it).
        database_proxy.cut()
        phone.call(CALL_SECONDS)
        phone.call(CALL_SECONDS)
        assert undelivered(worker.outbox()) >= 4
        assert Call.objects.count() == 3
        database_proxy.open()
        eventually(
            landed(5), LANDING_SECONDS, "the calls made while PostgreSQL was away", worker.log
        )
        eventually(
            lambda: undelivered(worker.outbox()) == 0,
            LANDING_SECONDS,
            "the outbox to be empty",
            worker.log,
        )

    calls = list(Call.objects.all())
    recordings = list(Recording.objects.select_related("agent", "signalling"))
    assert len(calls) == 5 and len({call.call_id for call in calls}) == 5
    assert sorted(r.signalling_id for r in recordings) == sorted(call.pk for call in calls)
    for recording in recordings:
        assert (recording.status, recording.agent, recording.extension) == (
            "complete",
            john,
            "9001",
        )
        assert recording.duration_seconds == pytest.approx(CALL_SECONDS, abs=0.25)
        assert Path(recording.file.path).stat().st_size == recording.size
    for call in calls:
        assert (call.state, call.end_reason, call.agent) == ("ended", "bye", john)
    (binding,) = Binding.objects.filter(extension_number="9001", source="sip-register")
    assert (binding.ip, binding.ended_at) == ("127.0.0.41", None)
    assert not PendingFinalisation.objects.exists()
    eventually(
        lambda: CaptureInterface.objects.filter(outbox_backlog=0).exists(),
        5,
        "an empty outbox in the interface's live state",
        worker.log,
    )
    lo = CaptureInterface.objects.get()
    assert (lo.running, lo.restarts) == (True, 0)
