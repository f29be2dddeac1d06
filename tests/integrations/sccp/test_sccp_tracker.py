"""SccpTracker rules on hand-built sessions: the IP rule, line refresh and removal, extension
mobility, call states, newer (V17+) media layouts, and bad input that must never raise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.observations import BindingSeen, CallEvent, CallSignal, Endpoint, Side
from integrations.sccp import SccpTracker
from integrations.sccp import messages as m
from tests.integrations.sccp_build import (
    call_info,
    call_state,
    fixed,
    ipv4or6,
    keepalive,
    line_stat,
    register,
    skinny,
    u32,
)

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
PHONE = Endpoint("192.0.2.10", 51000)
CM = Endpoint("198.51.100.1", 2000)


def from_phone(tracker: SccpTracker, data: bytes, at: datetime = T0, phone: Endpoint = PHONE):
    return tracker.feed(data, phone, CM, True, at)


def from_cm(tracker: SccpTracker, data: bytes, at: datetime = T0, phone: Endpoint = PHONE):
    return tracker.feed(data, phone, CM, False, at)


def registered(device: str = "SEP0001", lines: dict[int, str] | None = None) -> SccpTracker:
    tracker = SccpTracker()
    from_phone(tracker, register(device, "10.0.0.99"))
    from_cm(tracker, skinny(m.REGISTER_ACK, u32(30) + fixed("M/D/Y", 8)))
    for line, dn in (lines or {1: "9001"}).items():
        from_cm(tracker, line_stat(line, dn))
    return tracker


def bindings(observations) -> list[tuple[str, int | None, bool]]:
    return [
        (o.extension, o.line_number, o.unregister)
        for o in observations
        if isinstance(o, BindingSeen)
    ]


def events(observations) -> list[CallEvent]:
    return [o.event for o in observations if isinstance(o, CallSignal)]


def test_the_phone_ip_is_the_tcp_source_not_the_station_ip_behind_nat():
    tracker = SccpTracker()
    from_phone(tracker, register("SEP0001", "10.0.0.99"))
    (seen,) = from_cm(tracker, line_stat(1, "9001"))
    assert (seen.ip, seen.device, seen.line_number, seen.extension) == (
        "192.0.2.10",
        "SEP0001",
        1,
        "9001",
    )
    assert seen.expires_in == 120 + 3 * 30


def test_dns_are_kept_exactly_as_sent():
    tracker = registered(lines={1: "01234", 2: "+1 617-555-1212"})
    assert {o.extension for o in from_cm(tracker, line_stat(1, "01234"))} == {"01234"}


def test_keepalives_refresh_the_lines_at_most_every_two_minutes():
    tracker = registered(lines={1: "9001", 2: "9002"})
    assert from_phone(tracker, keepalive(), T0 + timedelta(seconds=30)) == []
    refreshed = from_phone(tracker, keepalive(), T0 + timedelta(seconds=150))
    assert bindings(refreshed) == [("9001", 1, False), ("9002", 2, False)]
    assert from_phone(tracker, keepalive(), T0 + timedelta(seconds=180)) == []


def test_unregister_drops_every_line():
    tracker = registered(lines={1: "9001", 2: "9002"})
    dropped = from_phone(tracker, skinny(m.UNREGISTER))
    assert bindings(dropped) == [("9001", 1, True), ("9002", 2, True)]
    assert tracker.close(PHONE, CM, T0) == []


def test_register_reject_drops_the_lines_of_the_session():
    tracker = registered()
    assert bindings(from_cm(tracker, skinny(m.REGISTER_REJECT, fixed("Error", 32)))) == [
        ("9001", 1, True)
    ]


def test_close_and_expiry_end_the_session_with_its_lines_and_calls():
    tracker = registered()
    from_cm(tracker, call_state(5, 1, 77))
    closed = tracker.close(PHONE, CM, T0)
    assert bindings(closed) == [("9001", 1, True)]
    assert [(o.event, o.reason) for o in closed if isinstance(o, CallSignal)] == [
        (CallEvent.END, "session-closed")
    ]
    tracker = registered()
    assert tracker.expire(T0 + timedelta(seconds=60)) == []
    assert bindings(tracker.expire(T0 + timedelta(seconds=91))) == [("9001", 1, True)]
    assert tracker.session_count == 0


def test_extension_mobility_replaces_the_lines_of_the_same_device():
    tracker = registered(lines={1: "9001", 2: "9003"})
    moved = Endpoint("192.0.2.10", 51001)  # the phone re-registers on a new connection
    observations = from_phone(tracker, register("SEP0001", "10.0.0.99"), phone=moved)
    observations += from_cm(tracker, line_stat(1, "9002"), phone=moved)
    observations += from_cm(tracker, line_stat(2, "9003"), phone=moved)
    observations += from_phone(tracker, keepalive(), T0 + timedelta(seconds=30), phone=moved)
    assert bindings(observations) == [("9001", 1, True), ("9002", 1, False), ("9003", 2, False)]
    assert tracker.session_count == 1


def test_a_line_that_is_not_announced_again_is_unregistered_at_the_first_keepalive():
    tracker = registered(lines={1: "9001", 2: "9002"})
    from_phone(tracker, register("SEP0001", "10.0.0.99"))
    from_cm(tracker, line_stat(1, "9001"))
    settled = from_phone(tracker, keepalive(), T0 + timedelta(seconds=30))
    assert ("9002", 2, True) in bindings(settled)


def test_call_states_give_start_ringing_answer_hold_resume_end():
    tracker = registered()
    observations = from_cm(tracker, call_state(4, 1, 77))
    observations += from_cm(tracker, call_info("6175551212", "Carl", "", "", 1, 77, 1))
    for state in (1, 5, 8, 5, 2):
        observations += from_cm(tracker, call_state(state, 1, 77))
    assert events(observations) == [
        CallEvent.START, CallEvent.RINGING, CallEvent.ANSWER, CallEvent.HOLD, CallEvent.RESUME,
        CallEvent.END,
    ]  # fmt: skip
    end = observations[-1]
    assert (end.call_id, end.caller, end.callee, end.local_side) == (
        "sccp:SEP0001:77", "6175551212", "9001", Side.CALLEE,
    )  # fmt: skip


def test_an_outbound_call_puts_the_phone_dn_in_the_caller_field():
    tracker = registered()
    observations = from_cm(tracker, call_state(1, 1, 5))
    observations += from_cm(tracker, call_info("", "", "9002", "Mary", 1, 5, 2))
    observations += from_cm(tracker, call_state(0, 1, 5))
    end = observations[-1]
    assert (end.caller, end.callee, end.caller_ip, end.reason) == (
        "9001",
        "9002",
        "192.0.2.10",
        "onhook",
    )


def test_v17_media_messages_through_the_tracker():
    # Connected at first sight: a call the phone placed, so the far end is the callee.
    tracker = registered()
    from_cm(
        tracker,
        call_state(5, 1, 9, version=0x11),
    )
    orc = u32(9, 300, 20, 4, 0, 0, 9)
    from_cm(tracker, skinny(m.OPEN_RECEIVE_CHANNEL, orc, 0x11))
    ack = from_phone(
        tracker,
        skinny(m.OPEN_RECEIVE_CHANNEL_ACK, u32(0) + ipv4or6("10.0.0.99") + u32(24000, 300), 0x11),
    )
    smt_payload = u32(9, 300) + ipv4or6("203.0.113.5") + u32(31000, 20, 2) + bytes(16) + u32(9)
    smt = from_cm(tracker, skinny(m.START_MEDIA_TRANSMISSION, smt_payload, 0x11))
    (local,) = ack[-1].media
    (far,) = smt[-1].media
    assert (local.receive_at, local.payload_types) == (
        Endpoint("192.0.2.10", 24000),
        ((0, "PCMU/8000"),),
    )
    assert (far.side, far.receive_at, far.payload_types) == (
        Side.CALLEE,
        Endpoint("203.0.113.5", 31000),
        ((8, "PCMA/8000"),),
    )


def test_line_stat_v2_and_call_info_v2_through_the_tracker():
    tracker = SccpTracker()
    from_phone(tracker, register("SEP0002", "10.0.0.98", version=0x11))
    (seen,) = from_cm(
        tracker, skinny(m.LINE_STAT_V2, u32(1, 0) + b"9003\x00Carl\x009003\x00", 0x11)
    )
    assert (seen.extension, seen.line_number) == ("9003", 1)
    strings = (
        b"\x00".join([b"9001", b"", b"", b"", b"", b"", b"", b"", b"", b"John", b""]) + b"\x00"
    )
    from_cm(tracker, call_state(4, 1, 3, version=0x11))
    observations = from_cm(
        tracker, skinny(m.CALL_INFO_V2, u32(1, 3, 1, 0, 0, 1, 0, 0) + strings, 0x11)
    )
    (ringing,) = observations
    assert (ringing.event, ringing.caller, ringing.caller_name, ringing.callee) == (
        CallEvent.RINGING, "9001", "John", "9003",
    )  # fmt: skip


def test_garbage_on_port_2000_is_counted_and_never_raised():
    tracker = SccpTracker()
    assert from_phone(tracker, b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 40) == []
    assert from_phone(tracker, skinny(m.CALL_STATE, u32(1))) == []
    assert tracker.errors


def test_decode_errors_are_counted_by_kind():
    tracker = registered()
    from_phone(tracker, keepalive())
    from_cm(tracker, skinny(m.CALL_STATE, u32(4, 1)))
    from_cm(tracker, skinny(0x7777, b"????"))
    assert tracker.errors["truncated"] == 1
    assert tracker.messages["unknown"] == 1


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=15),
    seconds=st.integers(0, 10_000),
)
def test_the_tracker_never_raises_on_arbitrary_bytes(chunks, seconds):
    tracker = registered()
    for from_phone_side, chunk in chunks:
        tracker.feed(chunk, PHONE, CM, from_phone_side, T0)
        tracker.gap(PHONE, CM, from_phone_side)
    tracker.expire(T0 + timedelta(seconds=seconds))
    tracker.close(PHONE, CM, T0)
    assert tracker.errors["internal"] == 0


MESSAGES = st.sampled_from(
    [
        call_state(4, 1, 7), call_state(5, 1, 7), call_state(8, 1, 7), call_state(2, 1, 7),
        call_info("1", "a", "2", "b", 1, 7, 1), line_stat(1, "9001"), line_stat(2, "9002"),
        register("SEP0001", "10.0.0.1"), keepalive(), skinny(m.UNREGISTER),
        skinny(m.OFF_HOOK), skinny(m.ON_HOOK), skinny(m.STIMULUS, u32(3, 1)),
        skinny(m.START_MEDIA_TRANSMISSION, b"\x0a\x00\x00\x01" + u32(5000, 20, 4) + bytes(20)),
        skinny(m.START_MEDIA_RECEPTION, b"\x0a\x00\x00\x01" + u32(20, 4) + bytes(12)),
        skinny(m.IP_PORT, u32(5001)), skinny(m.CALL_INFO, bytes(128)),
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(st.tuples(st.booleans(), MESSAGES), max_size=30))
def test_any_order_of_valid_messages_never_raises(sequence):
    tracker = SccpTracker()
    for side, message in sequence:
        tracker.feed(message, PHONE, CM, side, T0)
    tracker.close(PHONE, CM, T0)
    assert tracker.errors["internal"] == 0
    assert tracker.session_count == 0


def test_a_line_number_that_is_no_extension_is_counted_and_refused():
    tracker = registered(lines={1: "9001"})
    assert from_cm(tracker, line_stat(2, "")) == []
    assert from_cm(tracker, line_stat(1, "617-555-1212")) == []
    refreshed = from_phone(tracker, keepalive(), T0 + timedelta(minutes=3))
    assert bindings(refreshed) == [("9001", 1, False)]
    assert tracker.errors["bad-dn"] == 2
