"""One bad event costs only itself (issue 11 §1; audit finding H1).

A DatabaseSink applies a batch in one transaction; an event the database refuses must be
rolled back to its own savepoint and parked with its reason, while every event before and
after it in the batch is stored. Before, the sink closed the connection inside the batch's
transaction on PostgreSQL, which rolled back what was applied and failed all that followed.

The events here are handed to the sink directly, in one batch, as values that bounds would
let through but PostgreSQL refuses (text that is no IP address, for an inet column).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from extensions.models import Binding
from integrations.observations import BindingSeen, BindingSource, CallEvent
from recorder.engine.calls import CallSnapshot
from recorder.models import Call
from recorder.nodes.models import ParkedEvent
from recorder.sinks.database import STOP, DatabaseSink

START = 1_796_100_000.0


def snapshot(call_id: str, event: CallEvent, **changes: object) -> CallSnapshot:
    """An outbound call of 9001 to an outside number, without audio."""
    ended = event == CallEvent.END
    values = dict(
        call_id=call_id, protocol="sip", event=event, started_at=START,
        answered_at=START + 1, ended_at=START + 30 if ended else None,
        end_reason="bye" if ended else "", state="ended" if ended else "connected",
        direction="outbound", caller="9001", caller_name="John", callee="+15550100",
        callee_name="", caller_ip="10.80.0.11", callee_ip="10.80.9.1", local_ip="",
        local_number="9001", media=(),
    )  # fmt: skip
    return CallSnapshot(**(values | changes))


def sighting(extension: str, ip: str) -> BindingSeen:
    return BindingSeen(
        extension, ip, BindingSource.SIP_REGISTER, datetime.fromtimestamp(START, UTC), 3600
    )


def apply_as_one_batch(events: list) -> DatabaseSink:
    """The sink applies `events` as one batch, in this thread. Its own thread would take
    the first event alone should it wake before the rest are queued; so it is stopped
    first, and its work loop is run here on everything queued at once."""
    sink = DatabaseSink(node="isolation")
    sink.close()
    for event in [*events, STOP]:
        sink.events.put(event)
    sink._work()
    return sink


def call_states() -> dict[str, str]:
    return dict(Call.objects.values_list("call_id", "state"))


@pytest.fixture
def one_bad_call(postgresql: None) -> DatabaseSink:
    return apply_as_one_batch(
        [
            sighting("9001", "10.80.0.11"),
            snapshot("ordinary-1", CallEvent.START),
            snapshot("ordinary-1", CallEvent.END),
            snapshot("bad-ip", CallEvent.START, caller_ip="not-an-ip"),
            snapshot("ordinary-2", CallEvent.START),
            snapshot("ordinary-2", CallEvent.END),
        ]
    )


def test_a_call_the_database_refuses_costs_no_other_event_of_its_batch(
    one_bad_call: DatabaseSink,
) -> None:
    assert call_states() == {"ordinary-1": "ended", "ordinary-2": "ended"}
    assert Binding.objects.filter(extension_number="9001", ip="10.80.0.11").exists()


def test_a_call_the_database_refuses_is_parked_with_its_reason_and_counted(
    one_bad_call: DatabaseSink,
) -> None:
    (parked,) = ParkedEvent.objects.all()
    assert (parked.kind, parked.subject, parked.node) == ("call", "bad-ip", "isolation")
    assert parked.reason.startswith("DataError") and "inet" in parked.reason
    assert parked.event["caller_ip"] == "not-an-ip"
    assert one_bad_call.failures == {"DataError": 1}


def test_a_binding_refused_in_the_first_pass_keeps_the_events_before_and_after_it(
    postgresql: None,
) -> None:
    good = sighting("9001", "10.80.0.11")
    sink = apply_as_one_batch(
        [
            good,
            snapshot("before", CallEvent.START),
            replace(good, extension="9002", ip="not-an-ip"),
            sighting("9003", "10.80.0.13"),
            snapshot("after", CallEvent.START),
        ]
    )

    assert sorted(Binding.objects.values_list("extension_number", "ip")) == [
        ("9001", "10.80.0.11"),
        ("9003", "10.80.0.13"),
    ]
    assert call_states() == {"before": "connected", "after": "connected"}
    (parked,) = ParkedEvent.objects.all()
    assert (parked.kind, parked.subject) == ("binding", "9002 at not-an-ip")
    assert sum(sink.failures.values()) == 1
    assert sink.bindings_applied == 2
