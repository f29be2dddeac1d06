"""The TAPI bridge protocol's decoder: JSON documents in, observations out, no Django."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integrations.observations import BindingSource, CallEvent, Side
from integrations.shoretel.bridge.protocol import (
    LINECALLSTATE,
    STEPS,
    ProtocolError,
    TapiState,
    decode_events,
    decode_lines,
    read_clock,
)

NOW = "2026-11-02T09:00:12.400Z"


def envelope(**fields: object) -> dict:
    return {"version": "1.0", "boot_id": "b007", "server_time": NOW} | fields


def call_event(state: str, **fields: object) -> dict:
    event = {
        "id": f"b007-{state}",
        "time": "2026-11-02T09:00:05.000Z",
        "kind": "call",
        "call_id": "1001",
        "extension": "9007",
        "state": state,
        "ip": "10.20.0.50",
    }
    return event | fields


def page(*events: dict, **fields: object) -> dict:
    return envelope(events=list(events), next_cursor="b007.9", more=False) | fields


def test_a_line_is_a_tapi_binding_of_the_extension_exactly_as_written() -> None:
    listed = [
        {"extension": "09007", "device": "001049A0D150", "ip": "10.20.0.50",
         "line_number": 2, "in_service": True},
        {"extension": "9008", "device": "", "ip": "", "in_service": False},
    ]  # fmt: skip
    lines = decode_lines(envelope(lines=listed))
    seen_at = datetime(2026, 11, 2, 9, tzinfo=UTC)
    binding = lines.lines[0].binding(seen_at)
    assert (binding.extension, binding.ip, binding.source) == ("09007", "10.20.0.50", "tapi")
    assert (binding.device, binding.line_number, binding.unregister) == ("001049A0D150", 2, False)
    assert binding.seen_at == seen_at
    # A line the bridge could not place on a phone teaches no binding.
    assert lines.lines[1].binding(seen_at) is None


def test_an_offered_call_starts_with_the_line_as_the_callee() -> None:
    event = decode_events(
        page(call_event("offering", caller="6175551212", caller_name="Acme Corp", callee="9007"))
    ).events[0]
    signal = event.observation
    assert (signal.call_id, signal.event, signal.protocol) == ("tapi:1001", CallEvent.START, "tapi")
    assert (signal.caller, signal.caller_name, signal.callee) == ("6175551212", "Acme Corp", "9007")
    assert (signal.local_side, signal.callee_ip, signal.caller_ip) == (
        Side.CALLEE,
        "10.20.0.50",
        "",
    )
    assert signal.at == datetime(2026, 11, 2, 9, 0, 5, tzinfo=UTC)
    assert (event.call_id, event.state, event.extension) == ("1001", "offering", "9007")


@pytest.mark.parametrize(
    ("fields", "side"),
    [
        ({"caller": "9007", "callee": "6175550100"}, Side.CALLER),
        ({"origin": "outbound"}, Side.CALLER),
        ({"origin": "external"}, Side.CALLEE),
        ({"state": "dialtone"}, Side.CALLER),
        ({"state": "accepted"}, Side.CALLEE),
    ],
)
def test_the_line_s_side_comes_from_its_number_then_the_origin_then_the_state(
    fields: dict, side: Side
) -> None:
    raw = call_event(fields.pop("state", "connected"), **fields)
    assert decode_events(page(raw)).events[0].observation.local_side == side


@pytest.mark.parametrize(
    ("state", "step"),
    [
        ("offering", CallEvent.START),
        ("dialing", CallEvent.START),
        ("accepted", CallEvent.RINGING),
        ("ringback", CallEvent.RINGING),
        ("connected", CallEvent.ANSWER),
        ("onhold", CallEvent.HOLD),
        ("disconnected", CallEvent.END),
        ("idle", CallEvent.END),
    ],
)
def test_each_tapi_state_is_its_step_of_the_call(state: str, step: CallEvent) -> None:
    signal = decode_events(page(call_event(state))).events[0].observation
    assert signal.event == step
    assert signal.reason == (state if step == CallEvent.END else "")


def test_the_state_names_carry_tapi_s_linecallstate_values() -> None:
    # tapi.h / [MS-TRP] 2.2.3.1.29.
    assert LINECALLSTATE[TapiState.OFFERING] == 0x2
    assert LINECALLSTATE[TapiState.ACCEPTED] == 0x4
    assert LINECALLSTATE[TapiState.CONNECTED] == 0x100
    assert LINECALLSTATE[TapiState.ONHOLD] == 0x400
    assert LINECALLSTATE[TapiState.DISCONNECTED] == 0x4000
    assert LINECALLSTATE[TapiState.IDLE] == 0x1
    assert len(set(LINECALLSTATE.values())) == len(TapiState) == 16


def test_tones_and_unknown_states_and_kinds_are_kept_but_move_nothing() -> None:
    events = decode_events(
        page(
            call_event("busy"),
            call_event("something-new"),
            {"id": "b007-x", "time": NOW, "kind": "agent", "state": "ready"},
        )
    ).events
    assert [event.observation for event in events] == [None, None, None]
    assert [event.state for event in events] == ["busy", "something-new", "ready"]
    assert TapiState.BUSY not in STEPS


def test_a_line_event_out_of_service_unregisters_the_binding() -> None:
    raw = {"id": "b007-3", "time": NOW, "kind": "line", "extension": "9007",
           "device": "001049A0D150", "ip": "10.20.0.50", "line_number": 1,
           "state": "outofservice"}  # fmt: skip
    binding = decode_events(page(raw)).events[0].observation
    assert (binding.extension, binding.ip, binding.unregister) == ("9007", "10.20.0.50", True)
    assert binding.source == BindingSource.TAPI


def test_a_malformed_event_is_rejected_with_its_reason_and_the_rest_still_count() -> None:
    decoded = decode_events(
        page(
            call_event("offering", time="2026-11-02 09:00:05"),
            call_event("connected", ip="not-an-address"),
            call_event("connected", call_id=""),
            call_event("disconnected"),
        )
    )
    assert [event.state for event in decoded.events] == ["disconnected"]
    assert len(decoded.rejected) == 3
    assert "no UTC offset" in decoded.rejected[0]
    assert "not an IP address" in decoded.rejected[1]
    assert "call_id is missing" in decoded.rejected[2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not a JSON object"),
        (envelope(version="2.0", events=[], next_cursor="", more=False), "version '2.0'"),
        (envelope(boot_id="", events=[], next_cursor="", more=False), "no boot_id"),
        (envelope(events={}, next_cursor="", more=False), "no list of events"),
        (envelope(events=[], more=False), "next_cursor"),
    ],
)
def test_a_document_that_is_not_version_1_is_refused(body: object, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_events(body)


def test_the_bridge_clock_is_measured_against_the_midpoint_of_the_exchange() -> None:
    sent = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC).timestamp()
    bridge_time = datetime(2026, 11, 2, 9, 2, 0, 100000, tzinfo=UTC)  # stamped 120 s ahead
    reading = read_clock(bridge_time, None, sent, sent + 0.2)
    assert reading.offset == pytest.approx(120.0, abs=1e-6)
    assert reading.correction() == timedelta(seconds=reading.offset)
    behind = read_clock(bridge_time - timedelta(seconds=300), None, sent, sent + 0.2)
    assert behind.offset == pytest.approx(-180.0, abs=1e-6)


def test_a_small_offset_is_noise_and_corrects_nothing() -> None:
    sent = datetime(2026, 11, 2, 9, tzinfo=UTC).timestamp()
    stamped = datetime.fromtimestamp(sent + 0.05 + 0.6, UTC)
    assert read_clock(stamped, None, sent, sent + 0.1).correction() == timedelta(0)


def test_without_server_time_the_date_header_is_read_as_the_middle_of_its_second() -> None:
    sent = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC).timestamp()
    date = datetime(2026, 11, 2, 9, 1, 0, tzinfo=UTC)
    reading = read_clock(None, date, sent, sent + 0.2)
    assert reading.source == "date"
    assert reading.offset == pytest.approx(60.4, abs=1e-6)
    assert reading.uncertainty == pytest.approx(0.6, abs=1e-6)


def test_shifting_a_page_moves_every_observation_onto_qms_s_clock() -> None:
    line = {"id": "b007-1", "time": "2026-11-02T09:02:00Z", "kind": "line",
            "extension": "9007", "ip": "10.20.0.50", "state": "inservice"}  # fmt: skip
    decoded = decode_events(page(line, call_event("connected", time="2026-11-02T09:02:05Z")))
    shifted = decoded.shifted(timedelta(seconds=120))
    binding, signal = (event.observation for event in shifted.events)
    assert binding.seen_at == datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)
    assert signal.at == datetime(2026, 11, 2, 9, 0, 5, tzinfo=UTC)
    assert shifted.events[1].at == signal.at
