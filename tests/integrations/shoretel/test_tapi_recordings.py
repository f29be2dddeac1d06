"""End to end: the reference bridge's calls and the RTP of a ShoreTel phone, recorded by the
engine from a capture file, become recordings with the right parties, on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.shoretel.bridge.simulator import FAR_NAME, FAR_NUMBER, PHONE_A, BridgeSimulator
from integrations.shoretel.models import TapiRecording
from integrations.shoretel.poller import poll_bridge
from recorder.models import Call, Recording
from tests.integrations.tapi_bridge import (
    FAR_END,
    START,
    bridge_for,
    gus_at_phone_a,
    import_capture,
    rtp_talk,
)

Sim = Callable[..., BridgeSimulator]
pytestmark = pytest.mark.usefixtures("postgresql")


def recording_at(offset: float) -> Recording:
    """The recording whose RTP began `offset` seconds into the scenario."""
    return (
        Recording.objects.select_related("agent", "phone", "signalling")
        .filter(started_at__gte=_moment(offset - 0.5), started_at__lte=_moment(offset + 0.5))
        .get()
    )


def _moment(offset: float) -> datetime:
    return datetime.fromtimestamp(START + offset, UTC)


def test_a_shoretel_call_s_rtp_is_recorded_with_the_tapi_call_s_parties(
    bridge_sim: Sim, tmp_path: Path
) -> None:
    phone = gus_at_phone_a()
    bridge = bridge_for(bridge_sim("inbound-call"), name="hq")
    poll_bridge(bridge)

    summary = import_capture(tmp_path, rtp_talk(PHONE_A.ip, START + 10, 2.0))

    assert "calls seen: 1 (1 unsignalled)" in summary
    recording = recording_at(10)
    assert (recording.call_id, recording.conversation_id) == ("tapi:hq:1001", "tapi:hq:1001")
    assert (recording.direction, recording.extension) == ("inbound", "9007")
    assert (recording.remote_party, recording.remote_name) == (FAR_NUMBER, FAR_NAME)
    assert (recording.agent.name, recording.phone) == ("Gus", phone)
    assert (recording.local_ip, recording.remote_ip) == (PHONE_A.ip, FAR_END)
    # Cut by the end of the capture (no silence ended it): partial, as a node says.
    assert (recording.status, recording.codec) == ("partial", "PCMU")
    assert recording.duration_seconds == pytest.approx(2.0, abs=0.05)
    assert recording.tapi_link.overlap_seconds == pytest.approx(2.0, abs=0.05)
    # The Call row keeps what the wire showed: RTP and nothing else.
    assert recording.signalling.protocol == "rtp"
    assert recording.signalling.call_id.startswith("rtp:")


def test_call_events_that_arrive_after_the_recording_still_complete_it(
    bridge_sim: Sim, tmp_path: Path
) -> None:
    gus_at_phone_a()
    # The bridge has reported the login but not yet the call (it was down, or slow).
    simulator = bridge_sim("inbound-call", pace="manual", elapsed=0)
    bridge = bridge_for(simulator, name="hq")
    poll_bridge(bridge)
    import_capture(tmp_path, rtp_talk(PHONE_A.ip, START + 10, 2.0))
    before = recording_at(10)
    assert (before.agent.name, before.remote_party, before.direction) == ("Gus", "", "outbound")
    assert before.call_id.startswith("rtp:")

    simulator.elapsed = 20
    report = poll_bridge(bridge)

    assert report.linked == 1
    after = recording_at(10)
    assert (after.call_id, after.direction) == ("tapi:hq:1001", "inbound")
    assert (after.remote_party, after.remote_name) == (FAR_NUMBER, FAR_NAME)


def test_each_of_two_calls_on_one_phone_gets_its_own_recording(
    bridge_sim: Sim, tmp_path: Path
) -> None:
    gus_at_phone_a()
    bridge = bridge_for(bridge_sim("two-calls"), name="hq")
    poll_bridge(bridge)
    talk = rtp_talk(PHONE_A.ip, START + 10, 2.0) + rtp_talk(PHONE_A.ip, START + 30, 5.0)
    # RTP at a time TAPI reported no call on the phone.
    talk += rtp_talk(PHONE_A.ip, START + 50, 2.0)

    assert "calls seen: 3 (3 unsignalled)" in import_capture(tmp_path, talk)

    inbound, outbound, stray = recording_at(10), recording_at(30), recording_at(50)
    assert (inbound.call_id, inbound.direction, inbound.remote_party) == (
        "tapi:hq:1001",
        "inbound",
        FAR_NUMBER,
    )
    assert (outbound.call_id, outbound.direction, outbound.remote_party) == (
        "tapi:hq:1003",
        "outbound",
        "6175550100",
    )
    assert stray.call_id.startswith("rtp:") and stray.remote_party == ""
    assert stray.agent.name == "Gus"  # still the phone's, by its binding
    assert TapiRecording.objects.count() == 2


def test_a_bridge_with_a_skewed_clock_still_meets_the_rtp_of_its_calls(
    bridge_sim: Sim, tmp_path: Path
) -> None:
    gus_at_phone_a()
    bridge = bridge_for(bridge_sim("inbound-call", skew=-150.0), name="hq")
    poll_bridge(bridge)

    import_capture(tmp_path, rtp_talk(PHONE_A.ip, START + 10, 2.0))

    recording = recording_at(10)
    assert (recording.call_id, recording.remote_party) == ("tapi:hq:1001", FAR_NUMBER)
    assert recording.tapi_link.overlap_seconds == pytest.approx(2.0, abs=0.5)


def test_a_later_save_of_a_stale_copy_does_not_undo_the_call_s_parties(
    bridge_sim: Sim, tmp_path: Path
) -> None:
    gus_at_phone_a()
    bridge = bridge_for(bridge_sim("inbound-call"), name="hq")
    poll_bridge(bridge)
    import_capture(tmp_path, rtp_talk(PHONE_A.ip, START + 10, 2.0))
    stale = recording_at(10)
    stale.call_id, stale.remote_party, stale.direction = stale.signalling.call_id, "", "outbound"

    stale.save()

    again = recording_at(10)
    assert (again.call_id, again.remote_party, again.direction) == (
        "tapi:hq:1001",
        FAR_NUMBER,
        "inbound",
    )


def unsignalled_recording(far_ip: str, start: float, end: float) -> Recording:
    """A finished unsignalled recording of phone A, as the engine's sink writes one."""
    began, ended = _moment(start), _moment(end)
    call = Call.objects.create(
        protocol="rtp",
        call_id=f"rtp:{PHONE_A.ip}:5004:{far_ip}:5004:{int(START + start)}",
        started_at=began,
        answered_at=began,
        ended_at=ended,
        state="ended",
        direction="outbound",
        caller_ip=PHONE_A.ip,
        callee_ip=far_ip,
    )
    return Recording.objects.create(
        signalling=call,
        call_id=call.call_id,
        started_at=began,
        ended_at=ended,
        duration_seconds=end - start,
        direction="outbound",
        local_ip=PHONE_A.ip,
        remote_ip=far_ip,
        status=Recording.Status.COMPLETE,
    )


def test_a_consult_call_takes_the_rtp_of_its_own_talk_not_the_held_call_s(
    bridge_sim: Sim,
) -> None:
    # The caller is held from +15 s to +23 s while the line talks to 6175550199 (TAPI says
    # connected from +17.5 s, its RTP begins at +17 s). The held call spans the consult's
    # RTP but was not talking then.
    gus_at_phone_a()
    held = unsignalled_recording(FAR_END, 10, 28)
    consulted = unsignalled_recording("10.30.0.10", 17, 22)
    bridge = bridge_for(bridge_sim("consult"), name="hq")

    assert poll_bridge(bridge).linked == 2

    held.refresh_from_db()
    consulted.refresh_from_db()
    assert (held.call_id, held.direction, held.remote_party) == (
        "tapi:hq:1001",
        "inbound",
        FAR_NUMBER,
    )
    assert (consulted.call_id, consulted.direction, consulted.remote_party) == (
        "tapi:hq:1004",
        "outbound",
        "6175550199",
    )
    assert consulted.remote_name == "Supervisor"
    assert held.tapi_link.overlap_seconds == pytest.approx(10.0, abs=0.01)
    assert consulted.tapi_link.overlap_seconds == pytest.approx(4.5, abs=0.01)
