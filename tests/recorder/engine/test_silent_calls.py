"""A call whose media stops long before its BYE (issue 14, item 12).

A call can be silent for minutes and still be a call: both parties quiet with silence
suppression, media that does not cross the mirror, a hold with no music. Its SIP dialog is
still open, and its BYE ends it. Here an IPv6 call talks for two seconds, is silent for two
and a half minutes, and ends with a BYE in two IPv6 fragments (RFC 8200 §4.5). Captures are
written here and go through `import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from integrations.observations import CallEvent
from recorder.capture.synthesis import rtp, sip, write_pcap
from recorder.engine.engine import Engine
from recorder.models import Call, Recording
from tests.packets import ethernet, fragments6, udp6
from tests.recorder.collected import Collected

PHONE, GATEWAY = "2001:db8:14::21", "2001:db8:14::1"
PHONE_RTP, GATEWAY_RTP = 16500, 31500
START = 1_796_300_000.0
TALK = 2.0
Frames = list[tuple[float, bytes]]

ENDS = ["From: <sip:9001@pbx.example>;tag=ph", "To: <sip:+15550112@pbx.example>"]
ANSWERED = [ENDS[0], ENDS[1] + ";tag=gw"]


def offer(ip: str, port: int) -> str:
    """An SDP body (RFC 4566) receiving G.711 µ-law at an IPv6 address."""
    return (
        f"v=0\r\no=qms 1 1 IN IP6 {ip}\r\ns=-\r\nc=IN IP6 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def request(method: str, call_id: str, cseq: int, parties: list[str], body: str = "") -> bytes:
    via = f"Via: SIP/2.0/UDP [{PHONE}]:5060;branch=z9hG4bK{method.lower()}{cseq}"
    return sip(
        f"{method} sip:+15550112@[{GATEWAY}] SIP/2.0",
        [via, *parties, f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
         f"Contact: <sip:9001@[{PHONE}]:5060>"],
        body,
    )  # fmt: skip


def answered_call(call_id: str) -> Frames:
    """INVITE, 200 and ACK, then TALK seconds of RTP both ways."""
    via = f"Via: SIP/2.0/UDP [{PHONE}]:5060;branch=z9hG4bKinvite1"
    ok = sip(
        "SIP/2.0 200 OK",
        [via, *ANSWERED, f"Call-ID: {call_id}", "CSeq: 1 INVITE",
         f"Contact: <sip:+15550112@[{GATEWAY}]:5060>"],
        offer(GATEWAY, GATEWAY_RTP),
    )  # fmt: skip
    frames = [
        (START, ethernet(udp6(PHONE, 5060, GATEWAY, 5060,
                              request("INVITE", call_id, 1, ENDS, offer(PHONE, PHONE_RTP))))),
        (START + 0.5, ethernet(udp6(GATEWAY, 5060, PHONE, 5060, ok))),
        (START + 0.51, ethernet(udp6(PHONE, 5060, GATEWAY, 5060,
                                     request("ACK", call_id, 1, ANSWERED)))),
    ]  # fmt: skip
    for tick in range(int(TALK / 0.02)):
        at = START + 0.6 + tick * 0.02
        voice = rtp(tick, tick * 160, 0x1212, bytes([0x20 + tick % 32]) * 160)
        frames.append((at, ethernet(udp6(PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP, voice))))
        frames.append((at + 0.001, ethernet(udp6(GATEWAY, GATEWAY_RTP, PHONE, PHONE_RTP, voice))))
    return frames


def fragmented_bye(call_id: str, at: float) -> Frames:
    """The phone's BYE, large enough (a long Reason and a padding header) to need two
    IPv6 fragments."""
    parties = [*ANSWERED, 'Reason: Q.850;cause=16;text="Normal call clearing"',
               "X-Call-Report: " + "r" * 1400]  # fmt: skip
    packet = udp6(PHONE, 5060, GATEWAY, 5060, request("BYE", call_id, 2, parties))
    pieces = fragments6(packet, 1232, ident=0x14)
    assert len(pieces) == 2
    return [(at + index * 0.0001, ethernet(piece)) for index, piece in enumerate(pieces)]


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def import_capture(tmp_path: Path, frames: Frames) -> str:
    path = tmp_path / "capture.pcap"
    write_pcap(path, sorted(frames, key=lambda pair: pair[0]))
    out = io.StringIO()
    call_command("import_pcap", str(path), stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("silence", [30.0, 150.0, 900.0])
def test_a_call_silent_for_minutes_is_ended_by_its_fragmented_bye_with_its_media(
    spool_root: Path, tmp_path: Path, silence: float
) -> None:
    call_id = f"silent-{int(silence)}@pbx.example"
    bye_at = START + 0.6 + TALK + silence
    import_capture(tmp_path, answered_call(call_id) + fragmented_bye(call_id, bye_at))

    (call,) = Call.objects.filter(call_id=call_id)
    assert call.end_reason == "bye"
    assert call.ended_at.timestamp() == pytest.approx(bye_at, abs=0.01)
    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert list(spool_root.iterdir()) == []


def test_a_call_whose_bye_is_lost_still_ends_at_its_last_sign_of_life() -> None:
    """The media timeout is the fallback for a BYE the mirror lost: once the silence of a
    call with its dialog open passes the longer limit, it ends where its media stopped."""
    sink = Collected()
    engine = Engine(sink)
    frames = answered_call("lost-bye@pbx.example")
    last_rtp = frames[-1][0]
    limit = engine.calls.open_signalling_silence
    frames.append((last_rtp + limit + 5.0, ethernet(udp6(PHONE, 1, GATEWAY, 2, b"later"))))
    for at, frame in frames:
        engine.feed(at, 1, frame)

    ended = sink.calls[-1]
    assert (ended.event, ended.end_reason) == (CallEvent.END, "media-timeout")
    assert ended.ended_at == pytest.approx(last_rtp)
