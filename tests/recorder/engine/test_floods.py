"""Floods from the wire are capped (docs/capture.md, "Floods"): unanswered INVITEs, forged
REGISTERs with random numbers and RTP-like junk cost neither a real call's recording nor
unbounded rows, and every cap that trips is counted as a capture alert. Through
import_pcap, on the database the suite runs on (PostgreSQL in CI)."""

from __future__ import annotations

import io
import random
import resource
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command

from extensions.models import Agent, Extension, Phone, SeenExtension
from extensions.services import assign_line
from integrations.observations import CallEvent, CallSignal, Endpoint, MediaOffer, Side
from integrations.sip.tracker import SipTracker
from recorder.capture.synthesis import rtp, sdp, sip, udp, write_pcap
from recorder.engine.calls import CallTable
from recorder.engine.floods import (
    FLOOD_EVICTED,
    NEW_NUMBER_FLOOD,
    NEW_NUMBERS_PER_SOURCE,
    PLAUSIBLE_PACKETS,
    SPOOL_RESERVE,
    UNANSWERED_OVERALL_CAP,
    UNANSWERED_PER_SOURCE,
    UNANSWERED_SOURCE_CAP,
    StreamProbation,
    UnansweredCalls,
)
from recorder.models import Call, Recording
from recorder.nodes.models import CaptureAlert

JOHN_PHONE = "10.50.0.31"
GATEWAY = "10.50.9.1"
PBX = "10.50.9.2"
START = 1_760_000_000.0
Frames = list[tuple[float, bytes]]


def john_at_his_desk() -> None:
    phone = Phone.objects.create(device_name="SEP-JOHN", protocol="sip", current_ip=JOHN_PHONE)
    assign_line(phone, 1, "9001")
    Extension.objects.filter(number="9001").update(agent=Agent.objects.create(name="John"))


def johns_call(start: float, seconds: float = 2.0) -> Frames:
    """John calls out through the gateway: answered, both directions talk, BYE."""
    via = [f"Via: SIP/2.0/UDP {JOHN_PHONE}:5060;branch=z9hG4bKjohn"]
    ends = ["From: <sip:9001@pbx>;tag=a", "To: <sip:+15550100@pbx>", "Call-ID: johns-call"]
    answered = [ends[0], "To: <sip:+15550100@pbx>;tag=b", ends[2]]
    invite = sip(f"INVITE sip:+15550100@{GATEWAY} SIP/2.0",
                 via + ends + ["CSeq: 1 INVITE", f"Contact: <sip:9001@{JOHN_PHONE}>"],
                 sdp(JOHN_PHONE, 16384))  # fmt: skip
    ok = sip("SIP/2.0 200 OK", via + answered + ["CSeq: 1 INVITE"], sdp(GATEWAY, 30000))
    bye = sip(f"BYE sip:+15550100@{GATEWAY} SIP/2.0", via + answered + ["CSeq: 2 BYE"])
    frames = [(start, udp(JOHN_PHONE, 5060, GATEWAY, 5060, invite)),
              (start + 0.01, udp(GATEWAY, 5060, JOHN_PHONE, 5060, ok))]  # fmt: skip
    for tick in range(round(seconds / 0.02)):
        voice = rtp(tick, tick * 160, 0x7, b"\x00\x7f" * 80)
        at = start + 0.1 + tick * 0.02
        frames.append((at, udp(JOHN_PHONE, 16384, GATEWAY, 30000, voice)))
        frames.append((at + 0.001, udp(GATEWAY, 30000, JOHN_PHONE, 16384, voice)))
    frames.append((start + seconds + 0.2, udp(JOHN_PHONE, 5060, GATEWAY, 5060, bye)))
    return frames


def flood_invite(index: int, source: str, at: float, early_media: bool) -> Frames:
    """An INVITE nobody answers, from a scanner at `source`; with early media, one RTP
    packet to the address its SDP names, which would open a spool."""
    port = 20000 + 2 * (index % 20000)
    headers = [
        f"Via: SIP/2.0/UDP {source}:5060;branch=z9hG4bKflood{index}",
        f"From: <sip:{100000 + index}@{source}>;tag=f{index}",
        f"To: <sip:9001@{PBX}>",
        f"Call-ID: flood-{index}@{source}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{100000 + index}@{source}>",
    ]
    invite = sip(f"INVITE sip:9001@{PBX} SIP/2.0", headers, sdp(source, port))
    frames = [(at, udp(source, 5060, PBX, 5060, invite))]
    if early_media:
        frames.append((at + 0.0001, udp(PBX, 40000, source, port, rtp(0, 0, index, b"\xff" * 160))))
    return frames


def scanners(count: int) -> list[str]:
    return [f"198.51.{100 + index // 250}.{1 + index % 250}" for index in range(count)]


def import_capture(path: Path, frames: Frames) -> str:
    write_pcap(path, sorted(frames, key=lambda frame: frame[0]))
    output = io.StringIO()
    call_command("import_pcap", str(path), stdout=output)
    return output.getvalue()


def alert_count(kind: str) -> int:
    return sum(CaptureAlert.objects.filter(kind=kind).values_list("count", flat=True))


@pytest.fixture
def few_file_handles(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """This process limited to 256 open files, as a small server's default would: the
    engine is kept from raising its limit to the hard one."""
    monkeypatch.setattr("recorder.engine.engine.allow_open_files", lambda: None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.django_db(transaction=True)
def test_1500_unanswered_invites_with_early_media_leave_handles_for_johns_call(
    tmp_path: Path, few_file_handles: int
) -> None:
    john_at_his_desk()
    frames: Frames = []
    for index, source in enumerate(scanners(10) * 150):
        frames += flood_invite(index, source, START + index * 0.006, early_media=True)
    frames += johns_call(START + 20.0)

    output = import_capture(tmp_path / "invite-flood.pcap", frames)

    recording = Recording.objects.select_related("agent").get(call_id="johns-call")
    assert (recording.agent.name, recording.status) == ("John", "complete")
    assert recording.quality["agent_to_far"]["received"] == 100
    assert "spool-unavailable" not in output
    # The flood's early media got spools only while the handles kept for answered calls
    # stayed free; the rest were refused, counted, and shown as an alert.
    assert alert_count(SPOOL_RESERVE) > 1500 - few_file_handles
    assert f"{SPOOL_RESERVE} " in output


@pytest.mark.django_db(transaction=True)
def test_20000_unanswered_invites_make_bounded_call_rows_and_alerts(tmp_path: Path) -> None:
    john_at_his_desk()
    frames: Frames = []
    # Five scanners, 4,000 INVITEs each: each is held to its share of ringing calls.
    # (The overall cap, with eviction, is shown on the call table alone below.)
    for index, source in enumerate(scanners(5) * 4000):
        frames += flood_invite(index, source, START + index * 0.0005, early_media=False)
    frames += johns_call(START + 20.0)

    output = import_capture(tmp_path / "big-invite-flood.pcap", frames)

    assert alert_count(UNANSWERED_SOURCE_CAP) == 20_000 - 5 * UNANSWERED_PER_SOURCE
    assert Call.objects.filter(call_id__startswith="flood-").count() == 5 * UNANSWERED_PER_SOURCE
    assert f"calls seen: {5 * UNANSWERED_PER_SOURCE + 1}" in output
    assert Recording.objects.filter(call_id="johns-call", status="complete").exists()


def forged_registration(index: int, source: str, number: str, at: float) -> Frames:
    """A REGISTER and its 200 OK, both forged: a random number moved to `source`."""
    headers = [
        f"Via: SIP/2.0/UDP {source}:5060;branch=z9hG4bKreg{index}",
        f"From: <sip:{number}@{PBX}>;tag=r{index}",
        f"To: <sip:{number}@{PBX}>",
        f"Call-ID: reg-{index}@{source}",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:{number}@{source}:5060>",
        "Expires: 3600",
    ]
    register = sip(f"REGISTER sip:{PBX} SIP/2.0", headers)
    ok = sip("SIP/2.0 200 OK", [*headers[:2], headers[2] + ";tag=ok", *headers[3:]])
    return [
        (at, udp(source, 5060, PBX, 5060, register)),
        (at + 0.0001, udp(PBX, 5060, source, 5060, ok)),
    ]


@pytest.mark.django_db(transaction=True)
def test_20000_forged_registrations_of_random_numbers_are_capped_and_alerted(
    tmp_path: Path,
) -> None:
    numbers = random.Random(11).sample(range(10**6, 10**7), 20_000)
    sources = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"]
    frames: Frames = []
    for index, number in enumerate(numbers):
        frames += forged_registration(index, sources[index % 4], str(number), START + index * 0.002)

    output = import_capture(tmp_path / "register-flood.pcap", frames)

    allowed = len(sources) * NEW_NUMBERS_PER_SOURCE
    assert SeenExtension.objects.count() <= allowed
    assert alert_count(NEW_NUMBER_FLOOD) == 20_000 - allowed
    assert f"{NEW_NUMBER_FLOOD} {20_000 - allowed}" in output


@pytest.mark.django_db(transaction=True)
def test_three_junk_rtp_packets_to_each_of_5000_ports_of_johns_phone_record_nothing(
    tmp_path: Path,
) -> None:
    john_at_his_desk()
    junk = random.Random(7)
    frames: Frames = []
    for port in range(5000):
        source = f"203.0.113.{1 + port % 250}"
        for packet in range(3):
            # RTP version 2 and a payload type, everything else random: RTP-looking junk.
            header = struct.pack("!BBHII", 0x80, junk.randrange(0, 128), junk.randrange(1 << 16),
                                 junk.randrange(1 << 32), junk.randrange(1 << 32))  # fmt: skip
            at = START + port * 0.001 + packet * 0.0003
            frames.append((at, udp(source, 40000 + port % 999, JOHN_PHONE, 10000 + port,
                                   header + junk.randbytes(160))))  # fmt: skip

    output = import_capture(tmp_path / "junk-rtp.pcap", frames)

    assert Recording.objects.count() == 0
    assert Call.objects.count() == 0
    assert "RTP packets: 0 matched to calls, 15000 unmatched" in output


@pytest.mark.django_db(transaction=True)
def test_a_real_unsignalled_stream_after_junk_is_still_recorded_from_its_first_packet(
    tmp_path: Path,
) -> None:
    john_at_his_desk()
    frames: Frames = []
    for port in range(200):
        frames.append((START + port * 0.001, udp("203.0.113.9", 40000, JOHN_PHONE, 10000 + port,
                                                 rtp(port, 0, port, b"\xff" * 160))))  # fmt: skip
    for index in range(100):
        at = START + 1 + index * 0.02
        frames.append((at, udp(JOHN_PHONE, 5004, "10.30.0.9", 5004,
                               rtp(index, index * 160, 0x51, b"\x00\x7f" * 80))))  # fmt: skip

    import_capture(tmp_path / "junk-then-stream.pcap", frames)

    recording = Recording.objects.get()
    assert recording.call_id.startswith(f"rtp:{JOHN_PHONE}:5004:")
    assert recording.quality["agent_to_far"]["received"] == 100


# -- the caps alone -------------------------------------------------------------------------


def moment(at: float = START) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def signal(call_id: str, event: CallEvent, source: str, at: float = START) -> CallSignal:
    media = (MediaOffer(Side.CALLER, Endpoint(source, 20000 + len(call_id))),)
    return CallSignal(call_id, event, moment(at), "sip",
                      caller_ip=source, media=media)  # fmt: skip


def test_answered_calls_are_never_evicted_for_unanswered_ones() -> None:
    table = CallTable()
    table.unanswered = UnansweredCalls(per_source=3, overall=3)
    for call_id in ("a1", "a2"):
        table.apply(signal(call_id, CallEvent.START, "10.0.0.1"), START)
        table.apply(signal(call_id, CallEvent.ANSWER, "10.0.0.1"), START)
    for index in range(10):
        table.apply(signal(f"f{index}", CallEvent.START, "198.51.100.1"), START + index)
    table.apply(signal("quiet", CallEvent.START, "10.0.0.2"), START + 20)

    assert {"a1", "a2", "quiet"} <= set(table.calls)
    # The flood's source kept its share but for the one it gave the quiet caller.
    assert [call.call_id for call in table.take_evicted()] == ["f0"]
    assert table.caps == {UNANSWERED_SOURCE_CAP: 7, FLOOD_EVICTED: 1}


def test_a_refused_call_is_still_recorded_when_it_is_answered() -> None:
    table = CallTable()
    table.unanswered = UnansweredCalls(per_source=1, overall=10)
    table.apply(signal("first", CallEvent.START, "10.0.0.1"), START)
    table.apply(signal("second", CallEvent.START, "10.0.0.1", START + 1), START + 1)
    assert "second" not in table.calls
    answered = table.apply(signal("second", CallEvent.ANSWER, "10.0.0.1", START + 5), START + 5)

    assert answered is not None and answered.started_at == START + 1
    assert answered.caller_ip == "10.0.0.1" and Side.CALLER in answered.streams


def test_the_busiest_source_makes_room_and_equal_shares_refuse() -> None:
    calls = UnansweredCalls(per_source=10, overall=4)
    for index in range(3):
        calls.add("busy", f"b{index}")
    calls.add("other", "o0")
    assert calls.verdict("new").evict == "b0"
    calls.remove("b0")
    calls.add("new", "n0")
    calls.remove("b1")
    calls.add("other", "o1")
    # Each of three sources holds one or two: no one is busier than a newcomer would be
    # by more than one call, so the newcomer is refused.
    assert calls.verdict("other").cap == UNANSWERED_OVERALL_CAP


def test_a_stream_becomes_plausible_only_in_sequence_and_in_time() -> None:
    probation = StreamProbation()
    pair = (b"phone1", b"far001")
    packets = [rtp(index, index * 160, 0x51, b"\xff" * 160) for index in range(60)]
    for index in range(PLAUSIBLE_PACKETS - 1):
        assert probation.offer(pair, True, packets[index], b"phone1", START + index * 0.02) is None
    # A gap of more than a second starts the count over.
    later = START + 5
    for index in range(PLAUSIBLE_PACKETS - 1):
        packet = packets[30 + index]
        assert probation.offer(pair, True, packet, b"phone1", later + index * 0.02) is None
    held = probation.offer(pair, True, packets[59], b"phone1", later + 1)
    assert held is not None and held[-1][2] == packets[59]


def test_the_sip_tracker_evicts_ringing_calls_before_answered_ones() -> None:
    tracker = SipTracker(max_calls=3)
    answered = tracker.feed(*sip_invite_and_ok("talking"))
    assert answered
    ended = []
    for index in range(6):
        ended += tracker.feed(*sip_invite(f"ringing-{index}"))
    evicted = [o.call_id for o in ended if isinstance(o, CallSignal) and o.reason == "evicted"]
    assert "talking" not in evicted and len(evicted) == 4


def sip_invite(call_id: str) -> tuple[bytes, Endpoint, Endpoint, datetime, str]:
    headers = [
        "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK" + call_id,
        "From: <sip:1@198.51.100.1>;tag=x",
        f"To: <sip:9001@{PBX}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
    ]
    message = sip(f"INVITE sip:9001@{PBX} SIP/2.0", headers, sdp("198.51.100.1", 20000))
    return message, Endpoint("198.51.100.1", 5060), Endpoint(PBX, 5060), moment(), "udp"


def sip_invite_and_ok(call_id: str) -> tuple[bytes, Endpoint, Endpoint, datetime, str]:
    """A 200 OK for an INVITE the capture missed: the tracker picks the call up answered."""
    headers = [
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK" + call_id,
        "From: <sip:9002@pbx>;tag=x",
        "To: <sip:9001@pbx>;tag=y",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
    ]
    message = sip("SIP/2.0 200 OK", headers, sdp("10.0.0.2", 20000))
    return message, Endpoint("10.0.0.2", 5060), Endpoint("10.0.0.1", 5060), moment(), "udp"
