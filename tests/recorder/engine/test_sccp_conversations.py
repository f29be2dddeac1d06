"""SCCP transfers and conferences end as recordings that share a conversation id, and calls
that have nothing to do with each other do not (docs/sccp.md, "Transfers and conferences")."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command

from integrations.observations import CallEvent, CallSignal
from recorder.capture.synthesis import rtp, tcp, udp, write_pcap
from recorder.engine.calls import CallTable
from recorder.models import Recording
from tests.integrations.sccp_build import (
    call_info,
    call_state,
    dialed_number,
    fixed,
    line_stat,
    open_receive_channel,
    open_receive_channel_ack,
    register,
    skinny,
    soft_key,
    start_media_transmission,
    u32,
)

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def step(call_id: str, event: CallEvent, **fields: object) -> CallSignal:
    return CallSignal(call_id, event, AT, "sccp", **fields)


def test_a_call_that_joins_another_takes_its_conversation_from_the_start() -> None:
    table = CallTable()
    table.apply(step("held", CallEvent.START, replaces_call_id="earlier"), 1.0)
    consult = table.apply(step("consult", CallEvent.START, joins_call_id="held"), 5.0)
    stranger = table.apply(step("stranger", CallEvent.START), 6.0)
    assert consult.conversation_id == "earlier"
    assert stranger.conversation_id == "stranger"


def test_a_live_call_that_joins_another_takes_its_conversation_from_then_on() -> None:
    table = CallTable()
    for call_id, at in (("held", 1.0), ("active", 2.0), ("consult", 3.0)):
        table.apply(step(call_id, CallEvent.START), at)
    joined = table.apply(step("active", CallEvent.TRANSFER, joins_call_id="held"), 20.0)
    assert joined.conversation_id == "held"
    assert table.transfers == {}  # a join names no transfer target
    table.apply(step("held", CallEvent.END, reason="onhook"), 30.0)
    ended = table.apply(step("consult", CallEvent.END, joins_call_id="held"), 31.0)
    assert (ended.state, ended.conversation_id) == ("ended", "held")
    assert ended.snapshot(CallEvent.END).conversation_id == "held"


def test_the_next_segment_of_a_call_joins_its_own_first_segment() -> None:
    table = CallTable()
    table.apply(step("sccp:SEP1:7", CallEvent.START, joins_call_id="first"), 1.0)
    table.apply(step("sccp:SEP1:7", CallEvent.END, reason="far-party-changed"), 9.0)
    segment = table.apply(step("sccp:SEP1:7", CallEvent.START, joins_call_id="sccp:SEP1:7"), 9.0)
    assert (segment.started_at, segment.conversation_id) == (9.0, "first")


# --- Through the engine: a capture with three phones ----------------------------------------

START = 1_700_000_000.0
CM_IP, SCCP_PORT = "10.50.0.1", 2000
SILENCE = b"\xff" * 160  # µ-law digital silence
HOLD, CONNECTED, ON_HOOK = 8, 5, 2
TRANSFER, CONFRN = 4, 13


class Station:
    """One phone's Skinny session with the CallManager, written as TCP frames."""

    def __init__(self, frames: list, device: str, ip: str, port: int, dn: str) -> None:
        self.frames, self.ip, self.port, self.dn = frames, ip, port, dn
        self.seq = {True: 1000, False: 70000}
        self.phone(0.0, register(device, ip))
        self.cm(0.01, skinny(0x0081, u32(30) + fixed("M/D/Y", 8)), line_stat(1, dn))

    def send(self, at: float, from_phone: bool, messages: tuple[bytes, ...]) -> None:
        """Messages in one TCP segment, `at` seconds into the capture."""
        payload = b"".join(messages)
        seq = self.seq[from_phone]
        self.seq[from_phone] += len(payload)
        ends = (self.ip, self.port, CM_IP, SCCP_PORT)
        src, sport, dst, dport = ends if from_phone else (CM_IP, SCCP_PORT, self.ip, self.port)
        self.frames.append((START + at, tcp(src, sport, dst, dport, seq, payload)))

    def phone(self, at: float, *messages: bytes) -> None:
        self.send(at, True, messages)

    def cm(self, at: float, *messages: bytes) -> None:
        self.send(at, False, messages)

    def inbound(self, at: float, ref: int, caller: str) -> None:
        self.cm(at, call_state(4, 1, ref), call_info(caller, "", self.dn, "", 1, ref, 1))
        self.cm(at + 0.5, call_state(1, 1, ref), call_state(CONNECTED, 1, ref))

    def outbound(self, at: float, ref: int, callee: str) -> None:
        self.cm(at, call_state(1, 1, ref), dialed_number(callee, 1, ref), call_state(12, 1, ref))
        self.cm(at + 0.1, call_state(3, 1, ref), call_info(self.dn, "", callee, "", 1, ref, 2))
        self.cm(at + 1.0, call_state(CONNECTED, 1, ref))

    def media(self, at: float, ref: int, port: int, far: tuple[str, int]) -> None:
        party = 1000 + ref
        self.cm(at, open_receive_channel(ref, party))
        self.phone(at + 0.01, open_receive_channel_ack(self.ip, port, party, ref))
        self.cm(at + 0.02, start_media_transmission(ref, party, *far))

    def talk(self, at: float, seconds: float, port: int, far: tuple[str, int]) -> None:
        """RTP both ways between the phone's port and the far end, 20 ms of silence each."""
        for tick in range(int(seconds / 0.02)):
            when = START + at + tick * 0.02
            out = rtp(tick, tick * 160, port, SILENCE)
            back = rtp(tick, tick * 160, far[1], SILENCE)
            self.frames.append((when, udp(self.ip, port, *far, out)))
            self.frames.append((when + 0.001, udp(far[0], far[1] + 1, self.ip, port, back)))

    def press(self, at: float, key: int, ref: int) -> None:
        self.phone(at, soft_key(key, 1, ref))

    def states(self, at: float, ref: int, *states: int) -> None:
        self.cm(at, *(call_state(state, 1, ref) for state in states))


def consult_transfer(frames: list) -> None:
    """9001 takes a customer's call, consults 9004 with Transfer, completes; then, later, an
    unrelated call."""
    agent = Station(frames, "SEP000000000001", "10.50.0.11", 50001, "9001")
    agent.inbound(1.0, 101, "+16175551212")
    agent.media(1.6, 101, 20000, ("10.60.0.1", 30000))
    agent.talk(2.0, 3.0, 20000, ("10.60.0.1", 30000))
    agent.press(6.0, TRANSFER, 101)
    agent.states(6.1, 101, HOLD)
    agent.outbound(6.2, 102, "9004")
    agent.media(7.3, 102, 20002, ("10.60.0.2", 30002))
    agent.talk(8.0, 3.0, 20002, ("10.60.0.2", 30002))
    agent.press(12.0, TRANSFER, 102)
    agent.states(12.1, 102, ON_HOOK)
    agent.states(12.1, 101, ON_HOOK)
    agent.inbound(20.0, 103, "+16175559999")
    agent.media(20.6, 103, 20004, ("10.60.0.1", 30020))
    agent.talk(21.0, 2.0, 20004, ("10.60.0.1", 30020))
    agent.states(24.0, 103, ON_HOOK)


def conference(frames: list) -> None:
    """9002 calls out, adds 9005 with Confrn; the call goes on at the conference bridge."""
    host = Station(frames, "SEP000000000002", "10.50.0.12", 50002, "9002")
    host.outbound(1.0, 201, "6175550000")
    host.media(2.1, 201, 21000, ("10.60.0.3", 30004))
    host.talk(2.5, 3.0, 21000, ("10.60.0.3", 30004))
    host.press(6.0, CONFRN, 201)
    host.states(6.1, 201, HOLD)
    host.outbound(6.2, 202, "9005")
    host.media(7.3, 202, 21002, ("10.60.0.4", 30006))
    host.talk(8.0, 3.0, 21002, ("10.60.0.4", 30006))
    host.press(12.0, CONFRN, 202)
    host.states(12.1, 202, ON_HOOK)
    host.states(12.2, 201, CONNECTED)
    host.cm(12.3, call_info("9002", "", "", "Conference", 1, 201, 2))
    host.cm(12.4, start_media_transmission(201, 1201, "10.60.0.5", 30008))
    host.talk(13.0, 3.0, 21000, ("10.60.0.5", 30008))
    host.states(17.0, 201, ON_HOOK)


def transferee(frames: list) -> None:
    """9003 talks with 9007, who transfers it to 9008: the same call reference goes on."""
    phone = Station(frames, "SEP000000000003", "10.50.0.13", 50003, "9003")
    phone.inbound(1.0, 301, "9007")
    phone.media(1.6, 301, 22000, ("10.60.0.6", 30010))
    phone.talk(2.0, 3.0, 22000, ("10.60.0.6", 30010))
    phone.cm(7.0, call_info("9008", "", "9003", "", 1, 301, 1))
    phone.cm(7.1, start_media_transmission(301, 1301, "10.60.0.7", 30012))
    phone.talk(7.5, 3.0, 22000, ("10.60.0.7", 30012))
    phone.states(11.0, 301, ON_HOOK)


@pytest.mark.django_db(transaction=True)
def test_transfer_and_conference_segments_share_a_conversation_and_strangers_do_not(
    tmp_path: Path, postgresql: None
) -> None:
    frames: list = []
    for scenario in (consult_transfer, conference, transferee):
        scenario(frames)
    capture = tmp_path / "sccp-transfers.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())

    conversations: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for recording in Recording.objects.order_by("started_at", "call_id"):
        call_ref = recording.call_id.rsplit(":", 1)[1]
        conversations[recording.conversation_id].append((call_ref, recording.remote_party))
    assert dict(conversations) == {
        "sccp:SEP000000000001:101": [("101", "+16175551212"), ("102", "9004")],
        "sccp:SEP000000000002:201": [("201", "6175550000"), ("202", "9005"), ("201", "")],
        "sccp:SEP000000000003:301": [("301", "9007"), ("301", "9008")],
        "sccp:SEP000000000001:103": [("103", "+16175559999")],
    }
    bridge = Recording.objects.get(call_id="sccp:SEP000000000002:201", remote_party="")
    assert bridge.remote_name == "Conference"
