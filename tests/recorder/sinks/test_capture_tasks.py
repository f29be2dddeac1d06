"""The events of a capture node, from its outbox to the database through the event tasks.

Generated SIP traffic (a registration and calls with RTP) runs through the engine with an
OutboxSink, as a sniffer hosted by a capture worker does; the records of its outbox are
then handed to the tasks the delivery thread would send them to, in process. Whatever the
order and however often they arrive, each event takes effect once, in capture order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import OperationalError
from django.utils import timezone

from extensions.models import Agent, Binding, Extension, Phone
from extensions.services import assign_line
from integrations.observations import CallEvent
from qms.celery import app as celery_app
from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.synthesis import rtp, sdp, sip, udp
from recorder.engine.calls import CallSnapshot
from recorder.engine.codec import snapshot_json
from recorder.engine.engine import Engine
from recorder.models import Call, Recording
from recorder.nodes.models import HeldEvent, OutboxCursor, ParkedEvent, PendingFinalisation
from recorder.nodes.node import CaptureNode
from recorder.recordings.recovery import leftover_spools
from recorder.sinks import ordered
from recorder.sinks.delivery import event_tasks
from recorder.sinks.ordered import apply_in_order
from recorder.sinks.outbox import OutboxRecord, OutboxSink, OutboxWriter, RunReader

PHONE, GATEWAY, REGISTRAR = "10.60.0.41", "10.60.9.1", "10.60.9.5"
START = 1795600000.0
NODE = "node-a"
CALL_SECONDS = 1.0


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Tasks run in this process, whatever broker the environment names."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = before


@pytest.fixture
def john(postgresql: None) -> Agent:
    """John's phone has 9001 as line 1; its address is learned from its REGISTER."""
    john = Agent.objects.create(name="John")
    assign_line(Phone.objects.create(device_name="john-desk", protocol="sip"), 1, "9001")
    Extension.objects.filter(number="9001").update(agent=john)
    return john


def registration(at: float) -> list[tuple[float, bytes]]:
    via = [f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bKreg{int(at)}"]
    parties = ["From: <sip:9001@pbx>;tag=r", "To: <sip:9001@pbx>", f"Call-ID: reg-{int(at)}"]
    common = via + parties + ["CSeq: 1 REGISTER", f"Contact: <sip:9001@{PHONE}:5060>"]
    register = sip(f"REGISTER sip:{REGISTRAR} SIP/2.0", [*common, "Expires: 3600"])
    ok = sip("SIP/2.0 200 OK", [*common[:-1], f"Contact: <sip:9001@{PHONE}:5060>;expires=3600"])
    return [
        (at, udp(PHONE, 5060, REGISTRAR, 5060, register)),
        (at + 0.01, udp(REGISTRAR, 5060, PHONE, 5060, ok)),
    ]


def call(call_id: str, start: float, seconds: float, hang_up: bool = True) -> list:
    """9001 calls out through the gateway; both sides speak for `seconds`."""
    via = [f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK{call_id}"]
    ends = ["From: <sip:9001@pbx>;tag=a", "To: <sip:+15550100@pbx>", f"Call-ID: {call_id}"]
    answered = [ends[0], "To: <sip:+15550100@pbx>;tag=b", ends[2]]
    invite = sip(f"INVITE sip:+15550100@{GATEWAY} SIP/2.0",
                 via + ends + ["CSeq: 1 INVITE", f"Contact: <sip:9001@{PHONE}>"],
                 sdp(PHONE, 16384))  # fmt: skip
    ok = sip("SIP/2.0 200 OK", via + answered + ["CSeq: 1 INVITE"], sdp(GATEWAY, 30000))
    frames = [(start, udp(PHONE, 5060, GATEWAY, 5060, invite)),
              (start + 0.01, udp(GATEWAY, 5060, PHONE, 5060, ok))]  # fmt: skip
    for tick in range(int(seconds / 0.02)):
        at = start + 0.1 + tick * 0.02
        voice = rtp(tick, tick * 160, 0x7, bytes([tick % 256]) * 160)
        frames.append((at, udp(PHONE, 16384, GATEWAY, 30000, voice)))
        frames.append((at, udp(GATEWAY, 30000, PHONE, 16384, voice)))
    if hang_up:
        bye = sip(f"BYE sip:+15550100@{GATEWAY} SIP/2.0", via + answered + ["CSeq: 2 BYE"])
        frames.append((start + 0.2 + seconds, udp(PHONE, 5060, GATEWAY, 5060, bye)))
    return frames


class Node:
    """A sniffer's engine writing to an outbox, without the sniffer's process."""

    def __init__(self, root: Path) -> None:
        self.outbox_dir, self.spool = root / "outbox" / "eth1", root / "spool" / "eth1"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.sink = OutboxSink(OutboxWriter(self.outbox_dir, NODE, "eth1"))
        self.engine = Engine(self.sink, set(), spool_root=self.spool)

    def capture(self, frames: list[tuple[float, bytes]]) -> None:
        for at, frame in sorted(frames, key=lambda pair: pair[0]):
            self.engine.feed(at, LINKTYPE_ETHERNET, frame)

    def stop(self) -> None:
        self.engine.finish()
        self.sink.close()

    def records(self) -> list[OutboxRecord]:
        return RunReader(self.sink.writer.directory).read(1, 10_000)

    @property
    def run(self) -> str:
        return self.sink.writer.key


def deliver(run: str, record: OutboxRecord) -> str:
    """The task the delivery thread would send, run here; what it did with the event."""
    task = event_tasks()[record.kind]
    return task.apply((run, record.seq, record.event, NODE), throw=True).get()


def deliver_all(run: str, records: list[OutboxRecord]) -> None:
    for record in records:
        assert deliver(run, record) == "applied", f"event {record.seq} ({record.kind})"


def test_the_outbox_path_records_each_call_for_the_agent_who_registered(
    john: Agent, eager_tasks: None, tmp_path: Path
) -> None:
    node = Node(tmp_path)
    node.capture(
        registration(START) + call("first", START + 5, 1.0) + call("second", START + 9, 1.0)
    )
    node.stop()

    deliver_all(node.run, node.records())

    recordings = list(Recording.objects.select_related("signalling", "agent"))
    assert sorted(r.call_id for r in recordings) == ["first", "second"]
    for recording in recordings:
        assert (recording.status, recording.agent, recording.extension) == (
            "complete",
            john,
            "9001",
        )
        assert recording.duration_seconds == pytest.approx(CALL_SECONDS, abs=0.05)
        assert recording.signalling.node == NODE
    assert list(node.spool.iterdir()) == []
    assert not PendingFinalisation.objects.exists()
    assert OutboxCursor.objects.get(run=node.run).applied_seq == len(node.records())


def test_shuffled_and_repeated_deliveries_take_effect_once_in_capture_order(
    john: Agent, eager_tasks: None, tmp_path: Path
) -> None:
    node = Node(tmp_path)
    node.capture(
        registration(START) + call("first", START + 5, 1.0) + call("second", START + 9, 1.0)
    )
    node.stop()
    records = node.records()
    # A broker that delivers everything twice and in any order, to several workers.
    deliveries = records * 2
    random.Random(7).shuffle(deliveries)
    outcomes = Counter(deliver(node.run, record) for record in deliveries)

    assert set(outcomes) == {"applied", "held", "duplicate"}  # none failed
    assert outcomes["applied"] < len(records)  # some were applied with the one before them
    assert not HeldEvent.objects.exists()
    assert Call.objects.count() == 2
    assert Recording.objects.count() == 2
    assert set(Recording.objects.values_list("agent", flat=True)) == {john.pk}
    assert Binding.objects.filter(extension_number="9001", source="sip-register").count() == 1
    assert OutboxCursor.objects.get(run=node.run).applied_seq == len(records)


def test_an_early_event_is_held_and_applied_right_after_the_one_it_follows(
    postgresql: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = []
    monkeypatch.setitem(ordered.EFFECTS, "test", lambda event, node: applied.append(event["n"]))

    assert apply_in_order("n:eth1:run", 3, "test", {"n": 3}, NODE) == "held"
    assert apply_in_order("n:eth1:run", 2, "test", {"n": 2}, NODE) == "held"
    assert applied == []
    assert apply_in_order("n:eth1:run", 1, "test", {"n": 1}, NODE) == "applied"
    assert applied == [1, 2, 3]
    assert apply_in_order("n:eth1:run", 2, "test", {"n": 2}, NODE) == "duplicate"
    assert apply_in_order("n:eth1:run", 5, "test", {"n": 5}, NODE) == "held"
    assert apply_in_order("n:eth1:run", 4, "test", {"n": 4}, NODE) == "applied"

    assert applied == [1, 2, 3, 4, 5]
    assert OutboxCursor.objects.get(run="n:eth1:run").applied_seq == 5
    assert not HeldEvent.objects.exists()


def test_a_bad_event_is_passed_over_so_the_ones_after_it_still_apply(
    postgresql: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event: dict, node: str) -> None:
        raise ValueError("a snapshot this version cannot read")

    monkeypatch.setitem(ordered.EFFECTS, "broken", broken)
    monkeypatch.setitem(ordered.EFFECTS, "fine", lambda event, node: None)
    assert apply_in_order("n:eth1:run", 1, "broken", {}, NODE) == "failed"
    assert apply_in_order("n:eth1:run", 2, "fine", {}, NODE) == "applied"


def test_a_call_event_the_database_refuses_is_parked_on_the_node_and_the_next_applies(
    postgresql: None,
) -> None:
    # A snapshot that no bound would let through (an inet column refuses "not-an-ip"),
    # as an event queued by a capture node.
    refused = snapshot_json(
        CallSnapshot(
            call_id="refused-1", protocol="sip", event=CallEvent.START, started_at=1.0e9,
            answered_at=None, ended_at=None, end_reason="", state="setup", direction="",
            caller="555", caller_name="", callee="9001", callee_name="",
            caller_ip="not-an-ip", callee_ip="", local_ip="", local_number="", media=(),
        )
    )  # fmt: skip
    assert apply_in_order("n:eth1:run", 1, ordered.CALL, refused, NODE) == "failed"
    parked = ParkedEvent.objects.get()
    assert (parked.kind, parked.subject, parked.node) == ("call", "refused-1", NODE)
    assert parked.reason.startswith("DataError") and parked.event["caller_ip"] == "not-an-ip"
    fine = dict(refused, call_id="fine-2", caller_ip="10.0.0.9")
    assert apply_in_order("n:eth1:run", 2, ordered.CALL, fine, NODE) == "applied"
    assert list(Call.objects.values_list("call_id", flat=True)) == ["fine-2"]


def test_an_unreachable_database_leaves_the_event_to_be_tried_again(
    postgresql: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_gone(event: dict, node: str) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(ordered.EFFECTS, "gone", database_gone)
    with pytest.raises(OperationalError):
        apply_in_order("n:eth1:run", 1, "gone", {}, NODE)
    assert not OutboxCursor.objects.filter(run="n:eth1:run", applied_seq__gt=0).exists()
    monkeypatch.setitem(ordered.EFFECTS, "gone", lambda event, node: None)
    assert apply_in_order("n:eth1:run", 1, "gone", {}, NODE) == "applied"


def test_a_call_live_when_the_capture_stops_becomes_a_partial_recording(
    john: Agent, eager_tasks: None, tmp_path: Path
) -> None:
    node = Node(tmp_path)
    node.capture(registration(START) + call("cut", START + 5, 2.0, hang_up=False))
    node.stop()  # as on the worker's shutdown: the engine ends the calls still live

    deliver_all(node.run, node.records())

    (recording,) = Recording.objects.all()
    assert (recording.status, recording.agent) == ("partial", john)
    assert recording.status_detail == "the capture stopped during the call"
    assert recording.signalling.end_reason == "capture-ended"
    assert recording.duration_seconds == pytest.approx(2.0, abs=0.05)


def test_a_spool_left_by_a_killed_sniffer_is_finished_as_partial_by_the_next_one(
    john: Agent, eager_tasks: None, tmp_path: Path
) -> None:
    killed = Node(tmp_path)
    killed.capture(registration(START) + call("cut", START + 5, 2.0, hang_up=False))
    killed.engine.tick(START + 6)  # the spool reaches the disk once a second of capture
    killed.sink.writer.close()  # killed: no END, the spool stays behind
    deliver_all(killed.run, killed.records())
    assert Call.objects.get().state == "connected"
    assert not Recording.objects.exists()

    successor = Node(tmp_path)
    for spool in leftover_spools(successor.spool):
        successor.sink.recover(spool)
    successor.stop()
    deliver_all(successor.run, successor.records())

    (recording,) = Recording.objects.select_related("signalling")
    assert (recording.status, recording.agent) == ("partial", john)
    assert recording.status_detail == "the capture process stopped during the call"
    assert (recording.signalling.state, recording.signalling.end_reason) == (
        "ended",
        "capture-crashed",
    )
    assert 0.5 < recording.duration_seconds <= 2.0
    assert list(successor.spool.iterdir()) == []


def test_a_finalisation_the_broker_lost_is_enqueued_again_by_the_node(
    john: Agent, eager_tasks: None, tmp_path: Path, settings
) -> None:
    node = Node(tmp_path)
    node.capture(registration(START) + call("lost", START + 5, 1.0))
    node.stop()
    records = node.records()
    celery_app.conf.task_always_eager = False  # the finalisation is "sent" to no broker
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("recorder.recordings.finalise.enqueue_finalisation", lambda pending: None)
            deliver_all(node.run, records)
    finally:
        celery_app.conf.task_always_eager = True
    assert PendingFinalisation.objects.count() == 1
    assert not Recording.objects.exists()

    settings.QMS_OUTBOX_REDELIVER_SECONDS = 60
    PendingFinalisation.objects.update(enqueued_at=timezone.now() - timedelta(seconds=61))
    CaptureNode(NODE, celery_app, "test")._requeue_finalisations()

    (recording,) = Recording.objects.all()
    assert (recording.call_id, recording.status, recording.agent) == ("lost", "complete", john)
    assert not PendingFinalisation.objects.exists()


def test_a_spool_still_waiting_for_its_finalisation_is_not_taken_for_a_cut_call(
    john: Agent, eager_tasks: None, tmp_path: Path, settings
) -> None:
    first = Node(tmp_path)
    first.capture(registration(START) + call("ended", START + 5, 1.0))
    first.stop()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("recorder.recordings.finalise.enqueue_finalisation", lambda pending: None)
        deliver_all(first.run, first.records())
        # The worker stopped before finalising: the next sniffer finds the spool.
        successor = Node(tmp_path)
        (spool,) = leftover_spools(successor.spool)
        successor.sink.recover(spool)
        successor.stop()
        deliver_all(successor.run, successor.records())
    assert PendingFinalisation.objects.get().reason == "ended"

    settings.QMS_OUTBOX_REDELIVER_SECONDS = 60
    PendingFinalisation.objects.update(enqueued_at=timezone.now() - timedelta(seconds=61))
    CaptureNode(NODE, celery_app, "test")._requeue_finalisations()

    (recording,) = Recording.objects.select_related("signalling")
    assert (recording.status, recording.signalling.end_reason) == ("complete", "bye")
