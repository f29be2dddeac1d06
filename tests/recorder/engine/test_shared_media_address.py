"""One media address, two calls (issue 14, item 2).

An internal call whose two phones are both on the mirror is two calls to QMS: phone A's leg
and phone B's (two SIP dialogs through a B2BUA with direct media, or two SCCP phones each told
by CallManager where the other receives). Each leg announces both phones' media addresses,
and the RTP flows once, straight between the phones. QMS handed each address to the last
call that announced it: each recording got one direction, or a leg got none. Now a call that
has an address as its own party's and a call that has it as the far party's share it (each
packet counted once, logged into both), and each phone's recording has both voices, its own
on the left. Two calls that both have an address as their own party's are a phone that moved
on (a BYE the mirror lost): the new call takes it, as before. Captures are written here and
imported with `import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from extensions.models import Phone
from extensions.services import assign_line
from recorder.capture.synthesis import rtp, sip, udp, write_pcap
from recorder.models import Call, Recording
from tests.recorder.engine.test_sccp_conversations import START as SCCP_START
from tests.recorder.engine.test_sccp_conversations import Station
from tests.recorder.engine.test_sip_two_audio_streams import PACKETS, channels, holds_only, voice

START = 1_796_600_000.0
PBX = "10.81.0.1"
PHONE_A, PHONE_B = ("10.81.0.11", 16000), ("10.81.0.12", 17000)
Frames = list[tuple[float, bytes]]


def sdp(address: tuple[str, int]) -> str:
    ip, port = address
    return (
        f"v=0\r\no=qms 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )


def leg(
    call_id: str,
    uac: tuple[str, str],
    uas: tuple[str, str],
    offer: tuple[str, int],
    answer: tuple[str, int],
    invited: float,
    answered: float,
    ended: float,
) -> Frames:
    """One dialog from `uac` to `uas` ((ip, user) each; each sends its own messages, so
    its Contact is its own address): INVITE offering `offer`, 200 answering `answer`, ACK,
    and the caller's BYE."""
    (uac_ip, uac_user), (uas_ip, uas_user) = uac, uas

    def headers(cseq: str, to_tag: str = ";tag=uas") -> list[str]:
        return [
            f"Via: SIP/2.0/UDP {uac_ip}:5060;branch=z9hG4bK{call_id[:6]}{cseq.split()[0]}",
            f"From: <sip:9001@pbx.example>;tag={call_id[:6]}",
            f"To: <sip:9002@pbx.example>{to_tag}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq}",
        ]

    def sent(at: float, payload: bytes) -> tuple[float, bytes]:
        return at, udp(uac_ip, 5060, uas_ip, 5060, payload)

    return [
        sent(invited, sip(f"INVITE sip:9002@{uas_ip} SIP/2.0",
                          [*headers("1 INVITE", ""), f"Contact: <sip:{uac_user}@{uac_ip}>"],
                          sdp(offer))),
        (answered, udp(uas_ip, 5060, uac_ip, 5060, sip(
            "SIP/2.0 200 OK", [*headers("1 INVITE"), f"Contact: <sip:{uas_user}@{uas_ip}>"],
            sdp(answer)))),
        sent(answered + 0.01, sip(f"ACK sip:{uas_user}@{uas_ip} SIP/2.0", headers("1 ACK"))),
        sent(ended, sip(f"BYE sip:{uas_user}@{uas_ip} SIP/2.0", headers("2 BYE"))),
    ]  # fmt: skip


def stream(
    src: tuple[str, int], dst: tuple[str, int], payloads: list[bytes], ssrc: int, start: float
) -> Frames:
    return [
        (start + index * 0.02, udp(*src, *dst, rtp(index, index * 160, ssrc, payload)))
        for index, payload in enumerate(payloads)
    ]


def talk(start: float, a: tuple[str, int], b: tuple[str, int]) -> tuple[Frames, list, list]:
    """Two seconds of RTP straight between the phones, each its own voice."""
    voice_a, voice_b = voice(81), voice(82)
    frames = stream(a, b, voice_a, 0xA1, start) + stream(b, a, voice_b, 0xB2, start + 0.005)
    return frames, voice_a, voice_b


def imported(tmp_path: Path, frames: Frames) -> list[str]:
    capture = tmp_path / "shared-media.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    out = io.StringIO()
    call_command("import_pcap", str(capture), stdout=out)
    return out.getvalue().splitlines()


@pytest.fixture
def spooled(postgresql: None, settings, tmp_path: Path) -> None:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"


def sip_phones() -> None:
    for name, (ip, _), number in (("sep-a", PHONE_A, "9001"), ("sep-b", PHONE_B, "9002")):
        assign_line(Phone.objects.create(device_name=name, protocol="sip", configured_ip=ip),
                    1, number)  # fmt: skip


def recording_of(call_id: str) -> Recording:
    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE, recording.status_detail
    return recording


def test_both_legs_of_an_internal_call_through_a_b2bua_with_direct_media_record_both_voices(
    spooled: None, tmp_path: Path
) -> None:
    """9001 calls 9002 through the PBX, a B2BUA that passes each phone's SDP on to the
    other leg (direct media): A's leg is A to the PBX, B's leg the PBX to B, and each leg
    names both phones' addresses."""
    sip_phones()
    a, b = (PHONE_A[0], "9001"), (PHONE_B[0], "9002")
    pbx = (PBX, "pbx")
    frames = leg("leg-a@10.81.0.11", a, pbx, PHONE_A, PHONE_B, START, START + 0.22, START + 3.0)
    frames += leg("leg-b@10.81.0.1", pbx, b, PHONE_A, PHONE_B, START + 0.05, START + 0.2,
                  START + 3.01)  # fmt: skip
    media, voice_a, voice_b = talk(START + 0.3, PHONE_A, PHONE_B)
    lines = imported(tmp_path, frames + media)

    assert f"RTP packets: {2 * PACKETS} matched to calls, 0 unmatched" in lines
    assert dict(Call.objects.values_list("call_id", "end_reason")) == {
        "leg-a@10.81.0.11": "bye",
        "leg-b@10.81.0.1": "bye",
    }
    leg_a, leg_b = recording_of("leg-a@10.81.0.11"), recording_of("leg-b@10.81.0.1")
    assert (leg_a.extension, leg_b.extension) == ("9001", "9002")
    # Each phone's own voice on the left, the other phone's on the right, sample for sample.
    left, right = channels(leg_a)
    assert holds_only(left, voice_a) and holds_only(right, voice_b)
    left, right = channels(leg_b)
    assert holds_only(left, voice_b) and holds_only(right, voice_a)


def test_both_phones_of_an_internal_sccp_call_record_both_voices(
    spooled: None, tmp_path: Path
) -> None:
    """9001 calls 9002, both SCCP phones on the mirror: CallManager tells each phone, by
    StartMediaTransmission, the address the other phone announced in its
    OpenReceiveChannelAck."""
    frames: Frames = []
    a_rtp, b_rtp = ("10.82.0.11", 24000), ("10.82.0.12", 24002)
    phone_a = Station(frames, "SEP000000008201", a_rtp[0], 52001, "9001")
    phone_b = Station(frames, "SEP000000008202", b_rtp[0], 52002, "9002")
    phone_a.outbound(1.0, 601, "9002")
    phone_b.inbound(1.2, 602, "9001")
    phone_a.media(2.1, 601, a_rtp[1], b_rtp)
    phone_b.media(2.15, 602, b_rtp[1], a_rtp)
    media, voice_a, voice_b = talk(SCCP_START + 2.3, a_rtp, b_rtp)
    frames += media
    phone_a.states(5.0, 601, 2)  # on-hook
    phone_b.states(5.0, 602, 2)
    lines = imported(tmp_path, frames)

    assert f"RTP packets: {2 * PACKETS} matched to calls, 0 unmatched" in lines
    call_a, call_b = "sccp:SEP000000008201:601", "sccp:SEP000000008202:602"
    assert dict(Call.objects.values_list("call_id", "end_reason")) == {
        call_a: "onhook",
        call_b: "onhook",
    }
    recording_a, recording_b = recording_of(call_a), recording_of(call_b)
    assert (recording_a.extension, recording_b.extension) == ("9001", "9002")
    left, right = channels(recording_a)
    assert holds_only(left, voice_a) and holds_only(right, voice_b)
    left, right = channels(recording_b)
    assert holds_only(left, voice_b) and holds_only(right, voice_a)


def test_an_address_a_strangers_call_names_as_someone_elses_stays_with_its_own_call(
    spooled: None, tmp_path: Path
) -> None:
    """While 9001 talks to a gateway, a stranger's dialog names 9001's media address as
    its own far party's. 9001's call keeps the address: its recording is whole. (The
    stranger's call is given a copy, as a B2BUA's leg would be: docs/capture.md.)"""
    sip_phones()
    gateway, stranger = ("10.81.9.1", 31000), ("10.81.6.6", 40000)
    frames = leg("victim@10.81.0.11", (PHONE_A[0], "9001"), (gateway[0], "gw"), PHONE_A,
                 gateway, START, START + 0.1, START + 3.0)  # fmt: skip
    frames += leg("forged@10.81.6.6", (stranger[0], "x"), ("10.81.6.7", "y"), stranger,
                  PHONE_A, START + 0.15, START + 0.2, START + 3.0)  # fmt: skip
    media, voice_a, voice_far = talk(START + 0.3, PHONE_A, gateway)
    imported(tmp_path, frames + media)

    left, right = channels(recording_of("victim@10.81.0.11"))
    assert holds_only(left, voice_a) and holds_only(right, voice_far)


def test_a_phone_that_reuses_its_media_port_after_a_lost_bye_gives_it_to_the_new_call(
    spooled: None, tmp_path: Path
) -> None:
    """The guard on sharing: 9001's first call loses its BYE on the mirror, and its next
    call announces the same port as its own again. The new call takes the address; the old
    one does not record the new call's voices."""
    sip_phones()
    first_gateway, second_gateway = ("10.81.9.1", 31000), ("10.81.9.2", 32000)
    a = (PHONE_A[0], "9001")
    frames = leg("first@10.81.0.11", a, (first_gateway[0], "gw"), PHONE_A, first_gateway,
                 START, START + 0.1, START + 2.9)[:-1]  # the BYE is lost  # fmt: skip
    first_media, first_a, first_far = talk(START + 0.3, PHONE_A, first_gateway)
    frames += leg("second@10.81.0.11", a, (second_gateway[0], "gw"), PHONE_A, second_gateway,
                  START + 10.0, START + 10.1, START + 13.0)  # fmt: skip
    second_media = stream(PHONE_A, second_gateway, voice(91), 0xC1, START + 10.3)
    second_media += stream(second_gateway, PHONE_A, voice(92), 0xC2, START + 10.305)
    imported(tmp_path, frames + first_media + second_media)

    # Partial: with its BYE lost, the first call ran on to the end of the capture.
    left, right = channels(Recording.objects.get(call_id="first@10.81.0.11"))
    assert holds_only(left, first_a) and holds_only(right, first_far)
    left, right = channels(recording_of("second@10.81.0.11"))
    assert holds_only(left, voice(91)) and holds_only(right, voice(92))
