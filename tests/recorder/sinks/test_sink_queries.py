"""What the sink asks of the database per call and per binding, pinned.

The capture loop hands the sink one binding per phone sighting and a few snapshots per
call; at a thousand calls a second, each query on those paths counts. The bounds are the
numbers measured when they were last cut; a change that adds queries fails here first.
Before that cut, the call below with its binding took 48 statements here (now 21), a
binding refresh 15 (now 7) and a trunk's INVITE 4 (now 1).

Tests run inside a transaction, so each batch of the sink is a savepoint here: the two
statements SAVEPOINT and RELEASE that a real batch (its own transaction) does not pay are
counted in the bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from extensions.models import Agent, Binding, Extension, Phone
from extensions.services import apply_binding, assign_line, learns_from_call
from integrations.observations import BindingSeen, BindingSource
from recorder.engine.calls import CallSnapshot
from recorder.engine.engine import Engine
from recorder.models import Call, Recording, recordings_storage
from recorder.nodes.models import PendingFinalisation
from recorder.sinks import database as sinks
from recorder.sinks.database import DatabaseSink
from tests.recorder.recordings.test_recording_mobility import (
    DAY_ONE,
    GATEWAY,
    HOT_DESK,
    outbound_call,
)

REGISTERED = datetime.fromtimestamp(DAY_ONE - 60, UTC)


class Collector:
    """A sink that keeps the engine's events, to be applied by the test, counted."""

    def __init__(self) -> None:
        self.events: list = []

    def binding(self, seen: BindingSeen) -> None:
        self.events.append(seen)

    def call(self, snapshot: CallSnapshot) -> None:
        self.events.append(snapshot)

    def encrypted(self, seen: object) -> None:
        self.events.append(seen)


@pytest.fixture
def john(db: None) -> Agent:
    """John's 9001 is line 1 on his SIP phone, which registered from the hot desk."""
    phone = Phone.objects.create(device_name="SEP-JOHN", protocol="sip")
    assign_line(phone, 1, "9001")
    agent = Agent.objects.create(name="John")
    Extension.objects.filter(number="9001").update(agent=agent)
    apply_binding(register("9001", REGISTERED))
    return agent


@pytest.fixture
def sink() -> Iterator[DatabaseSink]:
    """A sink whose batches the test applies in its own thread (and transaction)."""
    sink = DatabaseSink(node="test")
    sink.close()
    yield sink


def register(number: str, at: datetime) -> BindingSeen:
    return BindingSeen(number, HOT_DESK, BindingSource.SIP_REGISTER, at, expires_in=3600)


def one_call(call_id: str, tmp_path: Path) -> list:
    """The engine's events for one recorded call from the hot desk: its binding, then the
    snapshots start, answer and end (with the spool of its RTP)."""
    collector = Collector()
    engine = Engine(collector, {HOT_DESK}, spool_root=tmp_path / "spool")
    for at, frame in outbound_call(call_id, "9001", DAY_ONE):
        engine.feed(at, 1, frame)
    engine.finish()
    return collector.events


def counted(apply: Callable[..., object], *args: object) -> int:
    with CaptureQueriesContext(connection) as queries:
        apply(*args)
    return len(queries)


def test_a_recorded_call_and_its_binding_cost_a_handful_of_queries(
    john: Agent, sink: DatabaseSink, tmp_path: Path, django_capture_on_commit_callbacks
) -> None:
    binding, start, answer, end = one_call("counted", tmp_path)
    assert (start.event, answer.event, end.event) == ("start", "answer", "end") and end.spool

    # The phone's INVITE refreshes its binding; the call's row is one INSERT. One more
    # reads the call servers (extensions/trust.py), at most every 30 s in a process.
    assert counted(sink._apply_batch, [binding, start]) <= 13
    assert counted(sink._apply_batch, [answer]) <= 3
    # The end: the row's changed columns and the recording's pending row; the recording
    # is finished only once the batch commits, off the batch (recordings/finisher.py).
    with django_capture_on_commit_callbacks() as committed:
        assert counted(sink._apply_batch, [end]) <= 4
    assert not Recording.objects.exists()
    [finish] = committed
    # Finishing: the pending row with its call, the do-not-record numbers, a stored
    # recording looked for, the recording written, the pending row removed, the savepoint.
    assert counted(finish) <= 8

    recording = Recording.objects.get()
    assert (recording.agent, recording.extension, recording.status) == (john, "9001", "complete")
    assert recording.file.name.endswith(f"call-{recording.signalling_id:08d}.wav")
    assert not PendingFinalisation.objects.exists()
    call = Call.objects.get()
    assert (call.state, call.agent, call.phone.device_name) == ("ended", john, "SEP-JOHN")
    assert not sink.failures and sink.outcomes == {"refreshed": 1}
    assert sink.finisher.outcomes == {"complete": 1}


def test_a_snapshot_that_changes_nothing_writes_nothing(
    john: Agent, sink: DatabaseSink, tmp_path: Path
) -> None:
    _, start, answer, _ = one_call("twice", tmp_path)
    sink._apply_batch([start, answer])
    assert counted(sink._apply_batch, [answer]) <= 2  # the batch's savepoint, nothing else


def test_a_binding_refresh_costs_seven_queries(john: Agent) -> None:
    again = register("9001", REGISTERED + timedelta(minutes=30))
    assert counted(apply_binding, again) <= 7
    assert Binding.objects.get().last_seen == again.seen_at


def test_a_trunks_invite_is_told_apart_in_one_query(john: Agent) -> None:
    trunk = BindingSeen("+15550100", GATEWAY, BindingSource.SIP_CALL, REGISTERED)
    with CaptureQueriesContext(connection) as queries:
        assert not learns_from_call(trunk)
    assert len(queries) == 1
    phone = BindingSeen("9001", HOT_DESK, BindingSource.SIP_CALL, REGISTERED)
    assert learns_from_call(phone)


def test_one_bad_event_in_a_batch_spoils_nothing_else(
    john: Agent,
    sink: DatabaseSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks,
) -> None:
    _, kept_start, _, kept_end = one_call("kept", tmp_path)
    _, spoilt_start, _, spoilt_end = one_call("spoilt", tmp_path)
    sink._apply_batch([kept_start, spoilt_start])
    real_schedule = sinks.schedule_finalisations

    def failing_on_spoilt(ended: list, *args: object) -> list[PendingFinalisation]:
        if any(finishing.call.call_id == "spoilt" for finishing in ended):
            raise ValueError("a value this version cannot store")
        return real_schedule(ended, *args)

    monkeypatch.setattr(sinks, "schedule_finalisations", failing_on_spoilt)
    later = register("9001", REGISTERED + timedelta(minutes=30))
    elsewhere = BindingSeen("9002", "10.50.0.32", BindingSource.SIP_REGISTER, REGISTERED)
    archive = Path(recordings_storage().location)
    files_before = set(archive.rglob("*.wav"))
    with django_capture_on_commit_callbacks(execute=True) as committed:
        sink._apply_batch([later, elsewhere, kept_end, spoilt_end])

    assert sink.failures == {"unexpected": 1}
    assert sink.outcomes == {"opened": 1, "refreshed": 1}  # counted once, not per pass
    assert Binding.objects.get(extension_number="9001").last_seen == later.seen_at
    assert Binding.objects.filter(extension_number="9002", ip="10.50.0.32").exists()
    # The rolled-back first pass handed nothing over: one recording is finished, once.
    handed = [done for done in committed if "hand_over" in done.__qualname__]
    assert len(handed) == 1
    kept = Recording.objects.get()
    assert (kept.call_id, kept.status, kept.agent) == ("kept", "complete", john)
    # (SQLite gives ids again, so the kept file's name may be one an earlier test wrote.)
    assert (archive / kept.file.name).is_file()
    assert set(archive.rglob("*.wav")) - files_before <= {archive / kept.file.name}
    # The failed end is rolled back: the call stands as its start left it.
    assert Call.objects.get(call_id="spoilt").state == "setup"
    assert not PendingFinalisation.objects.filter(call__call_id="spoilt").exists()
