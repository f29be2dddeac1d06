"""A held call resumed, or transferred, by a re-INVITE without SDP (issue 14, item 8).

Cisco CallManager changes a phone's media with a re-INVITE that carries no SDP: the phone's
200 carries the offer and CallManager's ACK the answer (RFC 3261 §13.2.1, §14.1; RFC 3264).
Whether the call is held follows that answer: a=inactive holds it (RFC 3264 §8.4), a=sendrecv
resumes it, and an answer naming another party's address is a transfer done the same way.
CallManager may number its own requests from 101, as Cisco phones do, so that its first
re-INVITE has the CSeq of the phone's INVITE: a dialog has one CSeq space per direction (RFC
3261 §12.2.1.1), and that re-INVITE is no retransmission. A party transferred to may be behind
a NAT, its SDP naming a private address: the phone's voice to it is learned only in a call
that is connected, not held (docs/capture.md, "Media relays and NAT").

Every party speaks its own pseudo-random G.711 µ-law, so each channel of the recording is
checked sample for sample. Captures are written here and go through the engine, and through
`import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import audioop
import io
import random
import struct
import wave
from array import array
from pathlib import Path

import pytest
from django.core.management import call_command

from integrations.observations import CallEvent, CallState
from recorder.capture.synthesis import rtp, sip, udp, write_pcap
from recorder.engine.engine import Engine
from recorder.models import Call, Recording
from tests.recorder.collected import Collected

PHONE, CUCM = "10.72.0.21", "10.72.9.1"
FAR, TRANSFERRED_TO = "10.72.0.22", "10.72.0.23"
# A teleworker's phone: its SDP names its private address, its RTP comes from its NAT.
NATED_SDP, NATED = "192.168.1.30", "203.0.113.9"
PHONE_RTP, FAR_RTP, TRANSFERRED_RTP = 16600, 24000, 26000
# Where CallManager's own CSeq count begins: at the phone's (Cisco's 101), or elsewhere.
CUCM_CSEQS = [101, 2001]
START = 1_796_400_000.0
TALK = 2.0
HOLD_AT = START + 3.0
RESUME_AT = START + 4.5
Frames = list[tuple[float, bytes]]

PHONE_TAG, CUCM_TAG = "ph101", "cm101"
PHONE_FROM = f"From: <sip:9001@{CUCM}>;tag={PHONE_TAG}"
CUCM_FROM = f"From: <sip:9002@{CUCM}>;tag={CUCM_TAG}"


def offer(ip: str, port: int, direction: str = "sendrecv") -> str:
    """An SDP body (RFC 4566) receiving G.711 µ-law at ip:port, in `direction`."""
    return (
        f"v=0\r\no=CiscoSystemsCCM-SIP 1 1 IN IP4 {ip}\r\ns=SIP Call\r\nc=IN IP4 {ip}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )


def phone_request(method: str, call_id: str, cseq: int, body: str = "") -> bytes:
    """A request of the phone's: its From, CSeq numbers of its own."""
    to = f"To: <sip:9002@{CUCM}>" + (f";tag={CUCM_TAG}" if method != "INVITE" else "")
    return sip(
        f"{method} sip:9002@{CUCM}:5060 SIP/2.0",
        [f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK{method.lower()}{cseq}", PHONE_FROM,
         to, f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
         f"Contact: <sip:9001@{PHONE}:5060>"],
        body,
    )  # fmt: skip


def cucm_request(method: str, call_id: str, cseq: int, body: str = "") -> bytes:
    """A request of CallManager's in the dialog: its From is the dialog's remote party."""
    return sip(
        f"{method} sip:9001@{PHONE}:5060 SIP/2.0",
        [f"Via: SIP/2.0/UDP {CUCM}:5060;branch=z9hG4bKcm{method.lower()}{cseq}", CUCM_FROM,
         f"To: <sip:9001@{CUCM}>;tag={PHONE_TAG}", f"Call-ID: {call_id}",
         f"CSeq: {cseq} {method}", f"Contact: <sip:9002@{CUCM}:5060>"],
        body,
    )  # fmt: skip


def ok(call_id: str, cseq: str, parties: tuple[str, str], contact: str, body: str = "") -> bytes:
    """The 200 to a request: it copies the request's From, To and CSeq (RFC 3261 §8.2.6)."""
    return sip(
        "SIP/2.0 200 OK",
        [f"Via: SIP/2.0/UDP {contact}:5060;branch=z9hG4bK", *parties, f"Call-ID: {call_id}",
         f"CSeq: {cseq}", f"Contact: <sip:x@{contact}:5060>"],
        body,
    )  # fmt: skip


def to_cucm(at: float, payload: bytes) -> tuple[float, bytes]:
    return at, udp(PHONE, 5060, CUCM, 5060, payload)


def to_phone(at: float, payload: bytes) -> tuple[float, bytes]:
    return at, udp(CUCM, 5060, PHONE, 5060, payload)


def placed_call(call_id: str) -> Frames:
    """The phone calls 9002 through CallManager with its offer; 9002's phone answers."""
    answered = (PHONE_FROM, f"To: <sip:9002@{CUCM}>;tag={CUCM_TAG}")
    return [
        to_cucm(START, phone_request("INVITE", call_id, 101, offer(PHONE, PHONE_RTP))),
        to_phone(START + 0.5, ok(call_id, "101 INVITE", answered, CUCM, offer(FAR, FAR_RTP))),
        to_cucm(START + 0.51, phone_request("ACK", call_id, 101)),
    ]


def late_offer(call_id: str, cseq: int, at: float, answer: str) -> Frames:
    """CallManager's re-INVITE without SDP, the phone's 200 with its offer, CallManager's ACK
    with `answer` (RFC 3261 §14.1)."""
    theirs = (CUCM_FROM, f"To: <sip:9001@{CUCM}>;tag={PHONE_TAG}")
    return [
        to_phone(at, cucm_request("INVITE", call_id, cseq)),
        to_cucm(at + 0.05, ok(call_id, f"{cseq} INVITE", theirs, PHONE, offer(PHONE, PHONE_RTP))),
        to_phone(at + 0.06, cucm_request("ACK", call_id, cseq, answer)),
    ]


def early_offer_hold(call_id: str, cseq: int, at: float) -> Frames:
    """CallManager's re-INVITE with a=sendonly; the phone answers a=recvonly (§8.4)."""
    theirs = (CUCM_FROM, f"To: <sip:9001@{CUCM}>;tag={PHONE_TAG}")
    held = offer(PHONE, PHONE_RTP, "recvonly")
    return [
        to_phone(at, cucm_request("INVITE", call_id, cseq, offer(FAR, FAR_RTP, "sendonly"))),
        to_cucm(at + 0.05, ok(call_id, f"{cseq} INVITE", theirs, PHONE, held)),
        to_phone(at + 0.06, cucm_request("ACK", call_id, cseq)),
    ]


def voice(seed: int) -> list[bytes]:
    """TALK seconds of a voice of its own: pseudo-random µ-law, 20 ms a packet."""
    generator = random.Random(seed)
    return [generator.randbytes(160) for _ in range(int(TALK / 0.02))]


def talk(
    start: float, far: str, far_port: int, seed: int
) -> tuple[Frames, list[bytes], list[bytes]]:
    """RTP both ways between the phone and `far`: the frames, the phone's and far's voice."""
    phone_voice, far_voice = voice(seed), voice(seed + 1)
    frames: Frames = []
    for tick, (mine, theirs) in enumerate(zip(phone_voice, far_voice, strict=True)):
        at, sequence = start + tick * 0.02, tick + int(seed) * 1000
        frames.append(
            (
                at,
                udp(
                    PHONE,
                    PHONE_RTP,
                    far,
                    far_port,
                    rtp(sequence, sequence * 160, 0x1000 + seed, mine),
                ),
            )
        )
        frames.append(
            (
                at + 0.001,
                udp(
                    far,
                    far_port,
                    PHONE,
                    PHONE_RTP,
                    rtp(sequence, sequence * 160, 0x2000 + seed, theirs),
                ),
            )
        )
    return frames, phone_voice, far_voice  # fmt: skip


def bye(call_id: str, at: float) -> Frames:
    return [to_cucm(at, phone_request("BYE", call_id, 102))]


def held_and_resumed(
    call_id: str, hold: str, resumed_to: str = FAR, cseq: int = 101
) -> tuple[Frames, list]:
    """A call talks, is held (by an early or a late offer), and is resumed by a late offer
    to its far party, or to the party it was transferred to; it talks again and ends."""
    frames = placed_call(call_id)
    before, phone_before, far_before = talk(START + 0.6, FAR, FAR_RTP, 1)
    if hold == "early-offer":
        frames += early_offer_hold(call_id, cseq, HOLD_AT)
    else:
        frames += late_offer(call_id, cseq, HOLD_AT, offer(FAR, FAR_RTP, "inactive"))
    port = FAR_RTP if resumed_to == FAR else TRANSFERRED_RTP
    announced = NATED_SDP if resumed_to == NATED else resumed_to
    frames += late_offer(call_id, cseq + 1, RESUME_AT, offer(announced, port))
    after, phone_after, far_after = talk(RESUME_AT + 0.1, resumed_to, port, 3)
    frames += before + after + bye(call_id, RESUME_AT + 0.2 + TALK)
    voices = [(phone_before, far_before), (phone_after, far_after)]
    return sorted(frames, key=lambda frame: frame[0]), voices


def run(frames: Frames) -> Collected:
    sink = Collected()
    engine = Engine(sink)
    for at, frame in frames:
        engine.feed(at, 1, frame)
    engine.finish()
    return sink


def pcm(payloads: list[bytes]) -> array:
    return array("h", audioop.ulaw2lin(b"".join(payloads), 2))


def channels(recording: Recording) -> tuple[array, array]:
    with wave.open(recording.file.path) as audio:
        frames = audio.readframes(audio.getnframes())
    samples = array("h", struct.unpack(f"<{len(frames) // 2}h", frames))
    return samples[0::2], samples[1::2]


def holds_voice(channel: array, expected: list[bytes]) -> bool:
    """Whether the channel holds the voice whole, sample for sample."""
    haystack, needle = channel.tobytes(), pcm(expected).tobytes()
    found = haystack.find(needle)
    while found > 0 and found % 2:
        found = haystack.find(needle, found + 1)
    return found >= 0


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def import_capture(tmp_path: Path, frames: Frames) -> None:
    path = tmp_path / "capture.pcap"
    write_pcap(path, frames)
    call_command("import_pcap", str(path), stdout=io.StringIO())


@pytest.mark.parametrize("hold", ["early-offer", "late-offer"])
@pytest.mark.parametrize("cseq", CUCM_CSEQS)
def test_a_call_held_and_resumed_by_a_late_offer_is_connected_again(hold: str, cseq: int) -> None:
    frames, _ = held_and_resumed(f"resumed-{hold}@{CUCM}", hold, cseq=cseq)
    sink = run(frames)

    steps = [(snapshot.event, snapshot.state) for snapshot in sink.calls]
    assert steps == [
        (CallEvent.START, CallState.SETUP),
        (CallEvent.ANSWER, CallState.CONNECTED),
        (CallEvent.HOLD, CallState.HELD),
        (CallEvent.RESUME, CallState.CONNECTED),
        (CallEvent.END, CallState.ENDED),
    ]


@pytest.mark.parametrize("hold", ["early-offer", "late-offer"])
@pytest.mark.parametrize("resumed_to", [FAR, TRANSFERRED_TO, NATED])
@pytest.mark.parametrize("cseq", CUCM_CSEQS)
def test_the_voices_after_a_late_offer_resume_or_transfer_are_recorded(
    spool_root: Path, tmp_path: Path, hold: str, resumed_to: str, cseq: int
) -> None:
    call_id = f"late-{hold}-{resumed_to}-{cseq}@{CUCM}"
    frames, voices = held_and_resumed(call_id, hold, resumed_to, cseq)
    import_capture(tmp_path, frames)

    (call,) = Call.objects.filter(call_id=call_id)
    assert call.end_reason == "bye"
    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert recording.duration_seconds == pytest.approx(
        RESUME_AT + 0.1 + TALK - START - 0.6, abs=0.1
    )
    to_far, to_phone = channels(recording)
    for phone_voice, far_voice in voices:
        assert holds_voice(to_far, phone_voice)
        assert holds_voice(to_phone, far_voice)
    assert list(spool_root.iterdir()) == []
