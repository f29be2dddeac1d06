"""A call whose first INVITE fails with a status that asks for a retry (issue 14, item 1).

The caller sends a new INVITE on the same Call-ID, with the same From tag and a higher CSeq
(RFC 3261 §8.1.3.5): after 422 Session Interval Too Small (RFC 4028 §6), 491 Request Pending
(RFC 3261 §14.1), a redirect (3xx, §8.1.3.4) or 488 and a new offer. That INVITE and its 200
are the call: it is answered, both sides talk, and QMS records it as one call. Captures are
written here, frame by frame, and go through `import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from recorder.capture.synthesis import rtp, sdp, sip, udp, write_pcap
from recorder.models import Call, Recording

PHONE, GATEWAY, STRANGER = "10.71.0.21", "10.71.9.1", "10.71.0.66"
PHONE_RTP, GATEWAY_RTP = 16400, 31000
START = 1_796_100_000.0
Frames = list[tuple[float, bytes]]

FROM = "From: <sip:9001@pbx.example>;tag=caller1"
TO = "To: <sip:+15550111@pbx.example>"
ANSWERED_TO = TO + ";tag=gw7"


def headers(call_id: str, cseq: str, to: str = TO, branch: str = "") -> list[str]:
    via = f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK{branch or cseq.split()[0]}"
    return [via, FROM, to, f"Call-ID: {call_id}", f"CSeq: {cseq}"]


def invite(call_id: str, cseq: int, port: int, *extra: str) -> bytes:
    return sip(
        f"INVITE sip:+15550111@{GATEWAY} SIP/2.0",
        [*headers(call_id, f"{cseq} INVITE"), f"Contact: <sip:9001@{PHONE}:5060>", *extra],
        sdp(PHONE, port),
    )


def answer(call_id: str, status: str, cseq: int, *extra: str, body: str = "") -> bytes:
    to = ANSWERED_TO if not status.startswith("100") else TO
    contact = [f"Contact: <sip:+15550111@{GATEWAY}:5060>"] if status[0] in "23" else []
    return sip(
        f"SIP/2.0 {status}", [*headers(call_id, f"{cseq} INVITE", to), *contact, *extra], body
    )


def ack(call_id: str, cseq: int) -> bytes:
    return sip(
        f"ACK sip:+15550111@{GATEWAY} SIP/2.0",
        headers(call_id, f"{cseq} ACK", ANSWERED_TO, branch=str(cseq)),
    )


def to_gateway(at: float, payload: bytes) -> tuple[float, bytes]:
    return at, udp(PHONE, 5060, GATEWAY, 5060, payload)


def to_phone(at: float, payload: bytes, src: str = GATEWAY) -> tuple[float, bytes]:
    return at, udp(src, 5060, PHONE, 5060, payload)


# What the gateway says to the first INVITE, and what the caller adds to the second.
REFUSALS = {
    "422": (["Min-SE: 1800"], ["Session-Expires: 1800", "Min-SE: 1800"]),
    "491": ([], []),
    "302": ([f"Contact: <sip:+15550111@{GATEWAY}:5080>"], []),
    "488": (['Warning: 304 gw "Media type not available"'], []),
}
STATUS_LINES = {
    "422": "422 Session Interval Too Small",
    "491": "491 Request Pending",
    "302": "302 Moved Temporarily",
    "488": "488 Not Acceptable Here",
}


def retried_call(call_id: str, status: str, seconds: float = 2.0) -> Frames:
    """INVITE, the refusal and its ACK; the retried INVITE (CSeq 2, a new offer after 488),
    100, 180, 200, ACK; `seconds` of RTP both ways; BYE and its 200."""
    refusal_headers, retry_headers = REFUSALS[status]
    retry_port = PHONE_RTP + 2 if status == "488" else PHONE_RTP
    refusal = sip(
        f"SIP/2.0 {STATUS_LINES[status]}",
        [*headers(call_id, "1 INVITE", ANSWERED_TO), *refusal_headers],
    )
    frames = [
        to_gateway(START, invite(call_id, 1, PHONE_RTP)),
        to_phone(START + 0.02, answer(call_id, "100 Trying", 1)),
        to_phone(START + 0.05, refusal),
        to_gateway(START + 0.06, ack(call_id, 1)),
        to_gateway(START + 0.5, invite(call_id, 2, retry_port, *retry_headers)),
        to_phone(START + 0.52, answer(call_id, "100 Trying", 2)),
        to_phone(START + 0.6, answer(call_id, "180 Ringing", 2)),
        to_phone(START + 1.5, answer(call_id, "200 OK", 2, body=sdp(GATEWAY, GATEWAY_RTP))),
        to_gateway(START + 1.51, ack(call_id, 2)),
    ]
    frames += talk(START + 1.6, seconds, retry_port)
    bye = sip(
        f"BYE sip:+15550111@{GATEWAY}:5060 SIP/2.0",
        headers(call_id, "3 BYE", ANSWERED_TO, branch="bye"),
    )
    ended = START + 1.7 + seconds
    frames += [
        to_gateway(ended, bye),
        to_phone(
            ended + 0.01, sip("SIP/2.0 200 OK", headers(call_id, "3 BYE", ANSWERED_TO, "bye"))
        ),
    ]
    return frames


def talk(start: float, seconds: float, phone_rtp: int) -> Frames:
    frames = []
    for tick in range(int(seconds / 0.02)):
        at = start + tick * 0.02
        voice = rtp(tick, tick * 160, 0x5151, bytes([0x10 + tick % 64]) * 160)
        frames.append((at, udp(PHONE, phone_rtp, GATEWAY, GATEWAY_RTP, voice)))
        frames.append((at + 0.001, udp(GATEWAY, GATEWAY_RTP, PHONE, phone_rtp, voice)))
    return frames


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


@pytest.mark.parametrize("status", ["422", "491", "302", "488"])
def test_a_call_retried_on_its_call_id_is_one_answered_call_with_its_recording(
    spool_root: Path, tmp_path: Path, status: str
) -> None:
    call_id = f"retried-{status}@{PHONE}"
    import_capture(tmp_path, retried_call(call_id, status))

    (call,) = Call.objects.filter(call_id=call_id)
    assert (call.state, call.end_reason) == (Call.State.ENDED, "bye")
    assert call.answered_at is not None
    assert call.started_at.timestamp() == pytest.approx(START)
    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert recording.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert list(spool_root.iterdir()) == []


@pytest.mark.parametrize("capture_goes_on", [True, False])
def test_a_refused_call_nobody_retries_ends_with_the_status_at_the_refusal(
    spool_root: Path, tmp_path: Path, capture_goes_on: bool
) -> None:
    """Ended by the wait for a retry, or by the capture's end: by the refusal either way."""
    call_id = f"refused@{PHONE}"
    refusal = sip(
        "SIP/2.0 422 Session Interval Too Small",
        [*headers(call_id, "1 INVITE", ANSWERED_TO), "Min-SE: 1800"],
    )
    frames = [
        to_gateway(START, invite(call_id, 1, PHONE_RTP)),
        to_phone(START + 0.05, refusal),
        to_gateway(START + 0.06, ack(call_id, 1)),
    ]
    if capture_goes_on:
        frames.append((START + 120.0, udp("10.71.5.5", 40000, "10.71.5.6", 40000, b"later")))
    import_capture(tmp_path, frames)

    (call,) = Call.objects.filter(call_id=call_id)
    assert (call.end_reason, call.answered_at) == ("422", None)
    assert call.ended_at.timestamp() == pytest.approx(START + 0.05)


def test_a_stranger_cannot_end_or_move_an_answered_call_with_a_forged_refusal(
    spool_root: Path, tmp_path: Path
) -> None:
    """After the 200, a 422 or a 302 to the call's INVITE, sent by anyone, changes nothing:
    the call talks on and ends by its BYE."""
    call_id = f"forged@{PHONE}"
    frames = [
        to_gateway(START, invite(call_id, 1, PHONE_RTP)),
        to_phone(START + 0.5, answer(call_id, "200 OK", 1, body=sdp(GATEWAY, GATEWAY_RTP))),
        to_gateway(START + 0.51, ack(call_id, 1)),
    ]
    frames += talk(START + 0.6, 3.0, PHONE_RTP)
    forged_refusal = sip(
        "SIP/2.0 422 Session Interval Too Small",
        [*headers(call_id, "1 INVITE", ANSWERED_TO), "Min-SE: 1800"],
    )
    moved = sip(
        "SIP/2.0 302 Moved Temporarily",
        [*headers(call_id, "1 INVITE", ANSWERED_TO), "Contact: <sip:x@10.71.0.66>"],
    )
    frames += [
        to_phone(START + 1.0, forged_refusal, src=STRANGER),
        to_phone(START + 1.1, moved, src=STRANGER),
    ]
    bye = sip(
        f"BYE sip:+15550111@{GATEWAY}:5060 SIP/2.0",
        headers(call_id, "2 BYE", ANSWERED_TO, branch="bye"),
    )
    frames.append(to_gateway(START + 3.7, bye))
    import_capture(tmp_path, frames)

    (call,) = Call.objects.filter(call_id=call_id)
    assert call.end_reason == "bye"
    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert recording.duration_seconds == pytest.approx(3.0, abs=0.1)
