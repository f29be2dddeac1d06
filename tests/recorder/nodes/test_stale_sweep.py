"""The stale-call sweep: calls no capture follows any more are ended, and only those."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from recorder.models import Call
from recorder.nodes.models import CaptureInterface
from recorder.nodes.sweep import end_stale_calls
from recorder.tasks import sweep_stale_calls

NOW = timezone.now()


def open_call(node: str, started_ago: timedelta, call_id: str = "c1") -> Call:
    started = NOW - started_ago
    return Call.objects.create(
        protocol="sip", call_id=call_id, started_at=started, answered_at=started + timedelta(
            seconds=2
        ), state=Call.State.CONNECTED, node=node,
    )  # fmt: skip


def node_running_since(ago: timedelta, **state: object) -> CaptureInterface:
    values = {
        "node": "node-a",
        "interface": "eth1",
        "running": True,
        "running_since": NOW - ago,
        "heartbeat_at": NOW - timedelta(seconds=2),
    }
    values.update(state)
    return CaptureInterface.objects.create(**values)


def refreshed(call: Call) -> Call:
    call.refresh_from_db()
    return call


@pytest.mark.django_db
def test_a_call_older_than_the_sniffer_now_running_is_ended_as_stale(settings) -> None:
    settings.QMS_CAPTURE_LEASE_SECONDS = 60
    node_running_since(timedelta(minutes=5))
    orphan = open_call("node-a", timedelta(minutes=20), "before-the-restart")
    live = open_call("node-a", timedelta(minutes=2), "after-the-restart")

    assert end_stale_calls(NOW) == 1

    orphan = refreshed(orphan)
    assert (orphan.state, orphan.end_reason) == ("ended", "stale")
    assert orphan.ended_at == orphan.answered_at
    assert refreshed(live).state == "connected"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "state",
    [
        {"outbox_backlog": 4},  # events of the node not yet applied: the end may be among them
        {"heartbeat_at": NOW - timedelta(minutes=5)},  # the node stopped reporting
        {"running": False},  # the sniffer is between a crash and its restart
    ],
    ids=["outbox-not-empty", "heartbeat-stale", "not-running"],
)
def test_nothing_is_ended_while_the_node_cannot_vouch_for_its_calls(settings, state) -> None:
    settings.QMS_CAPTURE_LEASE_SECONDS = 60
    node_running_since(timedelta(minutes=5), **state)
    call = open_call("node-a", timedelta(minutes=20))

    assert end_stale_calls(NOW) == 0
    assert refreshed(call).state == "connected"


@pytest.mark.django_db
def test_a_call_longer_than_any_call_can_last_is_stale_on_any_node(settings) -> None:
    settings.QMS_MAX_CALL_SECONDS = 3600
    lost = open_call("sniff-by-hand", timedelta(hours=2), "lost")
    recent = open_call("sniff-by-hand", timedelta(minutes=30), "recent")

    assert sweep_stale_calls.apply().get() == 1

    assert refreshed(lost).end_reason == "stale"
    assert refreshed(recent).state == "connected"
