"""The live call table: media endpoints, direction, state, silence."""

from __future__ import annotations

from datetime import UTC, datetime

from integrations.observations import CallEvent, CallSignal, Endpoint, MediaOffer, Side
from recorder.engine.calls import CallTable, endpoint_key, holders

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def signal(event: CallEvent, *offers: MediaOffer, **parties: object) -> CallSignal:
    return CallSignal("call-1", event, AT, "sip", media=offers, **parties)


def offer(side: Side, ip: str, port: int, mode: str = "sendrecv") -> MediaOffer:
    return MediaOffer(side, Endpoint(ip, port), ((0, "PCMU/8000"),), mode)


def test_media_is_indexed_by_where_each_side_receives() -> None:
    table = CallTable()
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384)), 1.0)
    table.apply(signal(CallEvent.ANSWER, offer(Side.CALLEE, "10.0.0.99", 30000)), 2.0)
    caller = table.media[endpoint_key(Endpoint("10.0.0.11", 16384))]
    callee = table.media[endpoint_key(Endpoint("10.0.0.99", 30000))]
    assert (caller.receiver, callee.receiver) == (Side.CALLER, Side.CALLEE)
    assert caller.call is callee.call
    assert caller.call.state == "connected" and caller.call.answered_at == 2.0


def test_a_media_change_moves_the_index() -> None:
    table = CallTable()
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384)), 1.0)
    table.apply(signal(CallEvent.MEDIA, offer(Side.CALLER, "10.0.0.11", 16500)), 5.0)
    assert endpoint_key(Endpoint("10.0.0.11", 16384)) not in table.media
    assert endpoint_key(Endpoint("10.0.0.11", 16500)) in table.media


def test_hold_with_a_null_address_unindexes_and_resume_reindexes() -> None:
    table = CallTable()
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384)), 1.0)
    table.apply(signal(CallEvent.HOLD, offer(Side.CALLER, "0.0.0.0", 16384)), 2.0)
    assert not table.media
    assert table.calls["call-1"].state == "held"
    table.apply(signal(CallEvent.RESUME, offer(Side.CALLER, "10.0.0.11", 16384)), 3.0)
    assert len(table.media) == 1 and table.calls["call-1"].state == "connected"


def test_the_end_removes_the_call_and_its_media() -> None:
    table = CallTable()
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384)), 1.0)
    call = table.apply(signal(CallEvent.END, reason="bye"), 9.0)
    assert (call.ended_at, call.end_reason) == (9.0, "bye")
    assert not table.calls and not table.media
    assert table.apply(signal(CallEvent.END, reason="bye"), 9.5) is None


def test_direction_follows_which_side_is_a_known_phone() -> None:
    phones = {"10.0.0.11", "10.0.0.12"}
    table = CallTable(phones.__contains__)
    call = table.apply(signal(CallEvent.START, caller_ip="10.0.0.11", callee_ip="10.9.9.9"), 1.0)
    assert call.direction == "outbound"
    call.callee_ip = "10.0.0.12"
    assert table.direction_of(call) == "internal"
    call.caller_ip = "10.9.9.8"
    assert table.direction_of(call) == "inbound"


def test_the_protocols_own_word_on_the_local_side_wins() -> None:
    table = CallTable()
    call = table.apply(signal(CallEvent.START, local_side=Side.CALLEE, callee="1012"), 1.0)
    assert call.direction == "inbound"
    assert call.local_number == "1012"


def test_silent_calls_are_swept_at_their_last_sign_of_life() -> None:
    table = CallTable(silence_timeout=120.0)
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384)), 1.0)
    table.apply(signal(CallEvent.ANSWER), 2.0)
    table.calls["call-1"].streams[Side.CALLER].last_at = 60.0
    assert table.sweep(now=150.0) == ([], [])
    ended, begun = table.sweep(now=181.0)
    assert begun == []
    assert [(call.call_id, call.ended_at, call.end_reason) for call in ended] == [
        ("call-1", 60.0, "media-timeout")
    ]


def test_a_port_taken_over_by_a_new_call_leaves_the_old_one() -> None:
    table = CallTable()
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384)), 1.0)
    second = CallSignal(
        "call-2", CallEvent.START, AT, "sip", media=(offer(Side.CALLER, "10.0.0.11", 16384),)
    )
    table.apply(second, 2.0)
    stream = table.media[endpoint_key(Endpoint("10.0.0.11", 16384))]
    assert stream.call.call_id == "call-2"
    assert not table.calls["call-1"].streams


def test_a_call_longer_than_the_maximum_goes_on_as_a_linked_segment() -> None:
    table = CallTable(max_length=3600.0)
    table.apply(signal(CallEvent.START, offer(Side.CALLER, "10.0.0.11", 16384), caller="9001"), 1.0)
    table.apply(signal(CallEvent.ANSWER, offer(Side.CALLEE, "10.0.0.99", 30000)), 2.0)
    for stream in table.calls["call-1"].streams.values():
        stream.last_at = 3600.0
    ended, begun = table.sweep(now=3602.0)
    assert [(call.ended_at, call.end_reason) for call in ended] == [(3602.0, "max-length")]
    (segment,) = begun
    assert (segment.call_id, segment.started_at, segment.caller) == ("call-1", 3602.0, "9001")
    assert segment.conversation_id == ended[0].conversation_id == "call-1"
    assert table.calls["call-1"] is segment
    assert table.media[endpoint_key(Endpoint("10.0.0.99", 30000))].call is segment


def call_signal(call_id: str, event: CallEvent, **fields: object) -> CallSignal:
    return CallSignal(call_id, event, AT, "sip", **fields)


def test_a_blind_transfer_links_the_next_call_to_its_target() -> None:
    table = CallTable()
    table.apply(call_signal("first", CallEvent.START, caller="+15550001", callee="9001"), 1.0)
    table.apply(call_signal("first", CallEvent.TRANSFER, reason="sip:9002@pbx.example"), 20.0)
    table.apply(call_signal("first", CallEvent.END, reason="bye"), 21.0)
    second = table.apply(call_signal("second", CallEvent.START, callee="9002"), 22.0)
    unrelated = table.apply(call_signal("third", CallEvent.START, callee="9002"), 23.0)
    assert second.conversation_id == "first"
    assert unrelated.conversation_id == "third"


def test_a_transfer_target_called_too_late_starts_a_conversation_of_its_own() -> None:
    table = CallTable()
    table.apply(call_signal("first", CallEvent.START, callee="9001"), 1.0)
    table.apply(call_signal("first", CallEvent.TRANSFER, reason="tel:9002"), 2.0)
    later = table.apply(call_signal("later", CallEvent.START, callee="9002"), 200.0)
    assert later.conversation_id == "later"


def test_an_attended_transfer_replacing_a_call_joins_its_conversation() -> None:
    table = CallTable()
    table.apply(call_signal("consult", CallEvent.START, callee="9002"), 1.0)
    table.apply(call_signal("consult", CallEvent.END, reason="bye"), 5.0)
    joined = table.apply(
        call_signal("joined", CallEvent.START, callee="9002", replaces_call_id="consult"), 6.0
    )
    assert joined.conversation_id == "consult"


# --- one media address, two calls (docs/capture.md, "One media address, two calls") -------

A_ADDRESS = Endpoint("10.0.0.11", 16384)


def leg_with(table: CallTable, call_id: str, caller_ip: str, at: float) -> None:
    """A call whose caller side receives at phone A's address, its caller's signalling
    from `caller_ip`: A's own leg when that is A's IP, a B2BUA's leg naming A's otherwise."""
    caller = MediaOffer(Side.CALLER, A_ADDRESS, ((0, "PCMU/8000"),))
    start = CallSignal(call_id, CallEvent.START, AT, "sip", media=(caller,), caller_ip=caller_ip)
    table.apply(start, at)


def sharers(table: CallTable) -> list[str]:
    return sorted(stream.call.call_id for stream in holders(table.media[endpoint_key(A_ADDRESS)]))


def test_an_address_is_shared_by_its_own_partys_call_and_one_call_naming_it_for_another() -> None:
    table = CallTable()
    leg_with(table, "a-own", "10.0.0.11", 1.0)
    leg_with(table, "b-leg", "10.0.0.1", 2.0)
    assert sharers(table) == ["a-own", "b-leg"]
    # A transfer's leg to C names A's address for its far party too: B's leg gives it up.
    leg_with(table, "c-leg", "10.0.0.1", 3.0)
    assert sharers(table) == ["a-own", "c-leg"]
    assert Side.CALLER not in table.calls["b-leg"].streams
    # A's own next call (its first call's end lost) takes it from A's first call.
    leg_with(table, "a-next", "10.0.0.11", 4.0)
    assert sharers(table) == ["a-next", "c-leg"]
    # Calls that end give it back to the one left, and the last one's end frees it.
    table.end(table.calls["c-leg"], 5.0, "bye")
    assert sharers(table) == ["a-next"]
    table.end(table.calls["a-next"], 6.0, "bye")
    assert endpoint_key(A_ADDRESS) not in table.media


def test_two_calls_that_both_name_an_address_for_another_do_not_share_it() -> None:
    table = CallTable()
    leg_with(table, "first", "10.0.0.1", 1.0)
    leg_with(table, "second", "10.0.0.2", 2.0)
    assert sharers(table) == ["second"]
