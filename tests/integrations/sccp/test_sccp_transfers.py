"""SccpTracker on transfers and conferences: which calls say they belong to another's
conversation (`joins_call_id`), and when a call is split into segments (docs/sccp.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.observations import CallEvent, CallSignal, Endpoint, Side
from integrations.sccp import SccpTracker
from integrations.sccp import messages as m
from tests.integrations.sccp_build import (
    call_info,
    call_state,
    dialed_number,
    fixed,
    keepalive,
    line_stat,
    open_receive_channel,
    open_receive_channel_ack,
    register,
    skinny,
    soft_key,
    start_media_transmission,
    stimulus,
    u32,
)

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
PHONE = Endpoint("192.0.2.10", 51000)
CM = Endpoint("198.51.100.1", 2000)
OFF_HOOK, ON_HOOK, RING_OUT, RING_IN, CONNECTED, HOLD, PROCEED = 1, 2, 3, 4, 5, 8, 12
INBOUND, OUTBOUND = 1, 2


class Phone:
    """One registered phone (SEP0001, line 1 = 9001) and a clock that moves forward."""

    def __init__(self) -> None:
        self.tracker = SccpTracker()
        self.at = T0
        self.cm(register("SEP0001", "10.0.0.99"), phone=True)
        self.cm(skinny(m.REGISTER_ACK, u32(30) + fixed("M/D/Y", 8)))
        self.cm(line_stat(1, "9001"))

    def cm(self, data: bytes, after: float = 0.0, phone: bool = False) -> list[CallSignal]:
        self.at += timedelta(seconds=after)
        observations = self.tracker.feed(data, PHONE, CM, phone, self.at)
        return [o for o in observations if isinstance(o, CallSignal)]

    def press(self, key: int, callref: int, after: float = 0.0) -> list[CallSignal]:
        return self.cm(soft_key(key, 1, callref), after, phone=True)

    def states(self, callref: int, *states: int, after: float = 0.0) -> list[CallSignal]:
        signals = []
        for index, state in enumerate(states):
            signals += self.cm(call_state(state, 1, callref), after if index == 0 else 0.0)
        return signals

    def inbound(self, callref: int, caller: str, after: float = 0.0) -> list[CallSignal]:
        """A call that rings in from `caller` and is answered."""
        signals = self.states(callref, RING_IN, after=after)
        signals += self.cm(call_info(caller, "", "9001", "", 1, callref, INBOUND))
        return signals + self.states(callref, OFF_HOOK, CONNECTED)

    def outbound(self, callref: int, callee: str, after: float = 0.0) -> list[CallSignal]:
        """A call the phone places to `callee`, answered."""
        signals = self.states(callref, OFF_HOOK, after=after)
        signals += self.cm(dialed_number(callee, 1, callref))
        signals += self.states(callref, PROCEED, RING_OUT)
        signals += self.cm(call_info("9001", "", callee, "", 1, callref, OUTBOUND))
        return signals + self.states(callref, CONNECTED, after=1.0)


def steps(signals: list[CallSignal]) -> list[tuple[str, CallEvent, str]]:
    """(call reference, event, joins_call_id) of each signal."""
    return [(s.call_id.rsplit(":", 1)[1], s.event, s.joins_call_id) for s in signals]


A = "sccp:SEP0001:77"


def test_the_call_placed_after_transfer_is_the_consult_of_the_call_it_was_pressed_on():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.press(m.SOFT_KEY_TRANSFER, 77, after=20.0)
    signals = phone.states(77, HOLD) + phone.outbound(78, "9003")
    start = next(s for s in signals if s.call_id.endswith(":78"))
    assert (start.event, start.joins_call_id, start.local_side) == (CallEvent.START, A, Side.CALLER)
    # The second press completes the transfer: both calls clear, at once, and the next
    # call the phone places is nobody's consult.
    phone.press(m.SOFT_KEY_TRANSFER, 78, after=10.0)
    ends = phone.states(78, ON_HOOK) + phone.states(77, ON_HOOK)
    assert steps(ends) == [("78", CallEvent.END, ""), ("77", CallEvent.END, "")]
    later = phone.outbound(79, "9004", after=2.0)
    assert [s.joins_call_id for s in later] == [""] * len(later)


def test_confrn_links_the_consult_and_the_conference_goes_on_as_a_new_segment():
    phone = Phone()
    phone.outbound(5, "6175550000")
    phone.cm(open_receive_channel(5, 500))
    phone.cm(open_receive_channel_ack("10.0.0.99", 20000, 500, 5), phone=True)
    phone.cm(start_media_transmission(5, 500, "203.0.113.5", 30000))
    phone.press(m.SOFT_KEY_CONFERENCE, 5, after=30.0)
    consult = phone.states(5, HOLD) + phone.outbound(6, "9004")
    assert ("6", CallEvent.START, "sccp:SEP0001:5") in steps(consult)
    phone.press(m.SOFT_KEY_CONFERENCE, 6, after=5.0)
    phone.states(6, ON_HOOK)
    resumed = phone.states(5, CONNECTED)
    assert steps(resumed) == [("5", CallEvent.RESUME, "")]
    # CallManager renames every party of the conference "Conference": a new segment.
    bridge = phone.cm(call_info("9001", "", "", "Conference", 1, 5, OUTBOUND))
    assert steps(bridge) == [
        ("5", CallEvent.END, ""),
        ("5", CallEvent.START, "sccp:SEP0001:5"),
        ("5", CallEvent.ANSWER, ""),
    ]
    end, start, _ = bridge
    assert (end.reason, end.callee) == ("far-party-changed", "6175550000")
    assert (start.callee, start.callee_name, start.caller) == ("", "Conference", "9001")
    assert {(o.side, o.receive_at.port) for o in start.media} == {
        (Side.CALLER, 20000),
        (Side.CALLEE, 30000),
    }


def test_a_transferee_whose_far_party_changes_gets_a_new_segment_of_the_same_call():
    phone = Phone()
    phone.inbound(77, "9002")
    transferred = phone.cm(call_info("9003", "Carl", "9001", "", 1, 77, INBOUND), after=25.0)
    assert steps(transferred) == [
        ("77", CallEvent.END, ""),
        ("77", CallEvent.START, A),
        ("77", CallEvent.ANSWER, ""),
    ]
    assert [(s.caller, s.callee) for s in transferred] == [
        ("9002", "9001"),
        ("9003", "9001"),
        ("9003", "9001"),
    ]
    assert phone.states(77, ON_HOOK, after=5.0)[0].caller == "9003"


def test_a_new_far_party_right_after_the_answer_only_corrects_the_first():
    # A hunt pilot answered by a member: CallManager names the member as the call connects.
    phone = Phone()
    phone.outbound(5, "5000")
    corrected = phone.cm(call_info("9001", "", "9007", "Dana", 1, 5, OUTBOUND), after=0.5)
    assert corrected == []
    assert phone.states(5, ON_HOOK, after=30.0)[0].callee == "9007"


def test_a_far_party_change_while_ringing_does_not_split_the_call():
    phone = Phone()
    phone.states(5, OFF_HOOK, PROCEED, RING_OUT)
    phone.cm(call_info("9001", "", "9002", "", 1, 5, OUTBOUND))
    forwarded = phone.cm(call_info("9001", "", "9009", "", 1, 5, OUTBOUND), after=10.0)
    assert [s.event for s in forwarded] == []
    assert phone.states(5, CONNECTED)[0].callee == "9009"


def test_a_call_placed_while_another_is_held_joins_it_when_both_go_on_hook_together():
    # A transfer made from an application (CTI): no key on the phone, only the states.
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    consult = phone.outbound(78, "9003", after=1.0)
    assert all(s.joins_call_id == "" for s in consult)
    assert phone.states(78, ON_HOOK, after=15.0) == []  # held back: a transfer, or not?
    ends = phone.states(77, ON_HOOK, after=0.2)
    assert steps(ends) == [("78", CallEvent.END, A), ("77", CallEvent.END, "")]
    assert ends[0].at == T0 + timedelta(seconds=37.0)  # the consult's own end time


def test_the_held_call_going_on_hook_first_is_joined_by_its_consult():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    phone.outbound(78, "9003", after=1.0)
    assert steps(phone.states(77, ON_HOOK, after=15.0)) == [("77", CallEvent.END, "")]
    assert steps(phone.states(78, ON_HOOK, after=0.2)) == [("78", CallEvent.END, A)]


def test_a_call_made_while_a_customer_waits_on_hold_stays_apart_when_the_customer_resumes():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    phone.outbound(78, "9003", after=1.0)
    assert phone.states(78, ON_HOOK, after=15.0) == []
    resumed = phone.states(77, CONNECTED, after=1.0)
    assert steps(resumed) == [("78", CallEvent.END, ""), ("77", CallEvent.RESUME, "")]
    assert steps(phone.states(77, ON_HOOK, after=60.0)) == [("77", CallEvent.END, "")]


def test_a_held_back_end_is_released_once_the_held_call_did_not_follow():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    phone.outbound(78, "9003", after=1.0)
    phone.states(78, ON_HOOK, after=15.0)
    (released,) = phone.cm(keepalive(), after=10.0, phone=True)
    assert (released.event, released.joins_call_id) == (CallEvent.END, "")
    assert steps(phone.states(77, ON_HOOK, after=0.5)) == [("77", CallEvent.END, "")]
    # With no traffic at all on the session, the tracker's expiry releases it as well.
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    phone.outbound(78, "9003", after=1.0)
    phone.states(78, ON_HOOK, after=15.0)
    (released,) = phone.tracker.expire(phone.at + timedelta(seconds=4))
    assert released.call_id.endswith(":78") and released.joins_call_id == ""


def test_an_incoming_call_while_another_is_held_is_nobodys_consult():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    phone.inbound(78, "6175559999", after=1.0)
    ends = phone.states(78, ON_HOOK, after=15.0) + phone.states(77, ON_HOOK, after=0.2)
    assert steps(ends) == [("78", CallEvent.END, ""), ("77", CallEvent.END, "")]


def test_a_transfer_key_whose_consult_never_opens_links_nothing():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.press(m.SOFT_KEY_TRANSFER, 77, after=20.0)  # refused: the call stays connected
    later = phone.outbound(78, "9003", after=15.0)
    assert all(s.joins_call_id == "" for s in later)


def test_the_fixed_transfer_key_without_a_call_reference_acts_on_the_call_in_talk():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.cm(stimulus(m.STIMULUS_TRANSFER, 1), after=20.0, phone=True)
    signals = phone.states(77, HOLD) + phone.outbound(78, "9003")
    assert ("78", CallEvent.START, A) in steps(signals)


def test_dirtrfr_and_join_tie_the_active_call_to_the_held_one():
    for key in (m.SOFT_KEY_DIRECT_TRANSFER, m.SOFT_KEY_JOIN):
        phone = Phone()
        phone.inbound(77, "6175551212")
        phone.states(77, HOLD, after=20.0)
        phone.inbound(78, "9003", after=1.0)
        assert steps(phone.press(key, 78, after=10.0)) == [("78", CallEvent.TRANSFER, A)]


def test_join_with_selected_calls_ties_them_to_the_oldest():
    phone = Phone()
    for callref in (77, 78, 79):
        phone.inbound(callref, f"617555{callref}", after=5.0)
        phone.states(callref, HOLD)
    phone.press(m.SOFT_KEY_SELECT, 77)
    phone.press(m.SOFT_KEY_SELECT, 79)
    phone.states(78, CONNECTED)
    assert steps(phone.press(m.SOFT_KEY_JOIN, 78)) == [
        ("79", CallEvent.TRANSFER, A),
        ("78", CallEvent.TRANSFER, A),
    ]


def test_a_session_that_closes_during_a_consult_links_nothing():
    phone = Phone()
    phone.inbound(77, "6175551212")
    phone.states(77, HOLD, after=20.0)
    phone.outbound(78, "9003", after=1.0)
    phone.states(78, ON_HOOK, after=15.0)
    closed = [o for o in phone.tracker.close(PHONE, CM, phone.at) if isinstance(o, CallSignal)]
    assert sorted(steps(closed)) == [("77", CallEvent.END, ""), ("78", CallEvent.END, "")]


KEYS = st.sampled_from(
    [
        m.SOFT_KEY_TRANSFER, m.SOFT_KEY_CONFERENCE, m.SOFT_KEY_JOIN,
        m.SOFT_KEY_DIRECT_TRANSFER, m.SOFT_KEY_SELECT, m.SOFT_KEY_END_CALL,
    ]
)  # fmt: skip
# Whole steps a phone goes through (CallState sequences), on two call references, so that
# holds, consults, keys and far-party changes meet often.
STATES = st.sampled_from(
    [(RING_IN, OFF_HOOK, CONNECTED), (OFF_HOOK, PROCEED, RING_OUT, CONNECTED), (HOLD,),
     (CONNECTED,), (ON_HOOK,), (0,)]
)  # fmt: skip
STEP = st.one_of(
    st.tuples(st.just("states"), STATES, st.integers(1, 2)),
    st.tuples(st.just("key"), KEYS, st.integers(0, 2)),
    st.tuples(st.just("info"), st.sampled_from(["9002", "9003", ""]), st.integers(1, 2)),
    st.tuples(st.just("stimulus"), st.sampled_from([3, 4, 0x7D]), st.integers(0, 2)),
    st.tuples(st.just("keepalive"), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(script=st.lists(st.tuples(STEP, st.floats(0.0, 6.0)), min_size=10, max_size=40))
def test_every_segment_that_starts_ends_once_whatever_the_keys_and_states(script):
    phone = Phone()
    signals: list[CallSignal] = []
    for (kind, value, callref), after in script:
        if kind == "states":
            signals += phone.states(callref, *value, after=after)
        elif kind == "key":
            signals += phone.press(value, callref, after=after)
        elif kind == "info":
            signals += phone.cm(call_info(value, "", "9001", "", 1, callref, 1), after=after)
        elif kind == "stimulus":
            signals += phone.cm(stimulus(value, 1, callref or None), after=after, phone=True)
        else:
            signals += phone.cm(keepalive(), after=after, phone=True)
    signals += [o for o in phone.tracker.close(PHONE, CM, phone.at) if isinstance(o, CallSignal)]
    assert phone.tracker.errors["internal"] == 0
    live: set[str] = set()
    for signal in signals:
        if signal.event is CallEvent.START:
            assert signal.call_id not in live
            live.add(signal.call_id)
        elif signal.event is CallEvent.END:
            live.remove(signal.call_id)
        assert not signal.joins_call_id or signal.joins_call_id.startswith("sccp:SEP0001:")
    assert live == set()
