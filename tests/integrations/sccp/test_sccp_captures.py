"""What each public SCCP capture must yield through SccpTracker (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.observations import (
    BindingSeen,
    CallEvent,
    CallSignal,
    Endpoint,
    MediaOffer,
    Observation,
    Side,
)
from integrations.sccp import SccpTracker
from tests.conftest import PUBLIC_CAPTURES, need
from tests.integrations.sccp_streams import skinny_segments


def replay(name: str) -> tuple[SccpTracker, list[Observation]]:
    path: Path = PUBLIC_CAPTURES / name
    need(path.is_file(), f"needs the public capture {path}")
    tracker = SccpTracker()
    observations: list[Observation] = []
    for segment in skinny_segments(path):
        if segment.closing:
            observations += tracker.close(segment.phone, segment.cm, segment.at)
        else:
            observations += tracker.feed(
                segment.payload, segment.phone, segment.cm, segment.from_phone, segment.at
            )
    return tracker, observations


def bindings(observations: list[Observation]) -> list[tuple[str, str, str, int | None, bool]]:
    return [
        (seen.device, seen.extension, seen.ip, seen.line_number, seen.unregister)
        for seen in observations
        if isinstance(seen, BindingSeen)
    ]


def signals(observations: list[Observation]) -> list[CallSignal]:
    return [signal for signal in observations if isinstance(signal, CallSignal)]


def test_call_to_7912_yields_line_1012_and_one_answered_inbound_call_with_media():
    tracker, observations = replay("pyskinny-cm_call_from_pyskinny_to_7912.pcapng")
    assert bindings(observations) == [("SEP001380AD9E5F", "1012", "10.102.10.209", 1, False)]
    calls = signals(observations)
    assert {signal.call_id for signal in calls} == {"sccp:SEP001380AD9E5F:16777247"}
    assert [signal.event for signal in calls] == [
        CallEvent.START,
        CallEvent.RINGING,
        CallEvent.ANSWER,
        CallEvent.MEDIA,
        CallEvent.MEDIA,
        CallEvent.END,
    ]
    end = calls[-1]
    assert (end.caller, end.caller_name, end.callee, end.reason) == (
        "1003",
        "Python",
        "1012",
        "onhook",
    )
    assert (end.local_side, end.callee_ip, end.caller_ip) == (Side.CALLEE, "10.102.10.209", "")
    media = {offer.side: offer for signal in calls for offer in signal.media}
    assert media[Side.CALLEE] == MediaOffer(
        Side.CALLEE, Endpoint("10.102.10.209", 16384), ((0, "PCMU/8000"),)
    )
    assert media[Side.CALLER] == MediaOffer(
        Side.CALLER, Endpoint("10.102.219.27", 60186), ((0, "PCMU/8000"),)
    )
    assert not tracker.errors
    assert tracker.messages["CallStateMessage"] == 4


def test_cm_cap_yields_line_1012_and_an_off_hook_call_without_media():
    tracker, observations = replay("pyskinny-cm_cap.pcapng")
    assert bindings(observations) == [("SEP001380AD9E5F", "1012", "10.102.10.209", 1, False)]
    calls = signals(observations)
    assert [signal.event for signal in calls] == [CallEvent.START, CallEvent.END]
    assert (calls[0].local_side, calls[0].caller, calls[0].caller_ip) == (
        Side.CALLER,
        "1012",
        "10.102.10.209",
    )
    assert all(not signal.media for signal in calls)
    assert tracker.messages["RegisterReqMessage"] == 1 and not tracker.errors


def test_cm2_register_keeps_three_devices_on_one_ip_apart():
    tracker, observations = replay("pyskinny-cm2_register.pcapng")
    seen = bindings(observations)
    registered = {(device, dn) for device, dn, _, _, unregister in seen if not unregister}
    assert registered == {("pyskinny01", "1091"), ("pyskinny02", "1092"), ("pyskinny03", "1093")}
    assert {ip for _, _, ip, _, _ in seen} == {"10.102.172.11"}
    assert {line for _, _, _, line, _ in seen} == {1}
    # Every registration ends: Unregister, then FIN; rejected registrations give no binding.
    assert sum(not unregister for *_, unregister in seen) == 28
    assert sum(unregister for *_, unregister in seen) == 28
    assert tracker.messages["RegisterRejectMessage"] == 7
    assert tracker.messages["UnregisterReqMessage"] == 28
    assert tracker.session_count == 0
    assert not tracker.errors


def test_cm2_register_follows_legacy_calls_from_1091_to_1092():
    _, observations = replay("pyskinny-cm2_register.pcapng")
    calls = signals(observations)
    caller_ends = [s for s in calls if s.event is CallEvent.END and "pyskinny01" in s.call_id]
    callee_ends = [s for s in calls if s.event is CallEvent.END and "pyskinny02" in s.call_id]
    assert len(caller_ends) == len(callee_ends) == 6
    assert {(s.caller, s.callee, s.local_side) for s in caller_ends} == {
        ("1091", "1092", Side.CALLER)
    }
    assert {(s.caller, s.callee, s.local_side) for s in callee_ends} == {
        ("1091", "1092", Side.CALLEE)
    }
    far = {offer.receive_at for s in calls for offer in s.media}
    assert far == {Endpoint("10.102.172.11", 5001)}
    answered = [s for s in calls if s.event is CallEvent.ANSWER]
    assert len(answered) == 12


def test_vphone_hold_unhold_picks_up_a_legacy_call_mid_stream():
    tracker, observations = replay("pyskinny-vphone_hold_unhold.pcap")
    assert bindings(observations) == []
    calls = signals(observations)
    assert {signal.call_id for signal in calls} == {"sccp:10.0.1.130:1067:legacy-1"}
    assert [signal.event for signal in calls] == [
        CallEvent.START,
        CallEvent.HOLD,
        CallEvent.RESUME,
        CallEvent.MEDIA,
    ]
    (offer,) = calls[-1].media
    assert offer.receive_at == Endpoint("10.102.219.27", 5001)
    assert offer.payload_types == ((0, "PCMU/8000"),)
    # No IpPortMessage in this short capture: the phone's own receive port is unknown.
    assert tracker.errors == {"media-reception-without-port": 1}


@pytest.mark.parametrize("name", ["pyskinny-cm_call_from_pyskinny_to_7912.pcapng"])
def test_a_session_picked_up_mid_stream_still_yields_the_call(name):
    path = PUBLIC_CAPTURES / name
    need(path.is_file(), f"needs the public capture {path}")
    tracker = SccpTracker()
    dropped: dict[bool, int] = {True: 0, False: 0}
    drop = {True: 400, False: 700}  # past Register (phone side) and LineStat (CM side)
    observations: list[Observation] = []
    for segment in skinny_segments(path):
        payload = segment.payload
        if dropped[segment.from_phone] < drop[segment.from_phone]:
            cut = min(len(payload), drop[segment.from_phone] - dropped[segment.from_phone])
            dropped[segment.from_phone] += cut
            payload = payload[cut:]
        observations += tracker.feed(
            payload, segment.phone, segment.cm, segment.from_phone, segment.at
        )
    calls = signals(observations)
    # Register was lost with the first bytes, so the call is named after the phone's address.
    assert {signal.call_id for signal in calls} == {"sccp:10.102.10.209:3892:16777247"}
    assert [signal.event for signal in calls][-1] is CallEvent.END
    assert any(offer.receive_at.port == 16384 for signal in calls for offer in signal.media)
