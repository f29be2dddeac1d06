"""Offers with more than one m=audio line (issue 14, item 4).

A SIPREC session (RFC 7866) is an INVITE from the recording client (an SBC) to a recording
server whose offer has two audio streams, both a=sendonly: one carries each party of the
recorded call. Its body is multipart/mixed, the SDP beside the recording metadata (RFC 7866
§6.1, RFC 2046 §5.1). QMS records the two streams as the recording's two channels, one party
each. Any other offer with two audio streams has every stream followed, so none of its RTP is
taken for another call; a stream rejected with port 0 is none (RFC 3264 §6). Every voice is
its own pseudo-random G.711 µ-law, so channels are checked sample for sample. Captures are
written here and go through the engine, and through `import_pcap` into PostgreSQL.
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

from recorder.capture.synthesis import rtp, sip, udp, write_pcap
from recorder.engine.engine import Engine
from recorder.media.rtplog import read_log
from recorder.models import Call, Recording
from tests.recorder.collected import Collected

SBC, RECORDER = "10.74.9.5", "10.74.9.50"
SBC_PORTS, RECORDER_PORTS = (40000, 40002), (50000, 50002)
PHONE, GATEWAY = "10.74.0.21", "10.74.9.1"
START = 1_796_500_000.0
PACKETS = 100
Frames = list[tuple[float, bytes]]
BOUNDARY = "qms-siprec-boundary"


def audio_lines(ports: tuple[int, ...], direction: str) -> str:
    """One m=audio per port (port 0: rejected), each with its label (RFC 4574)."""
    lines = ""
    for label, port in enumerate(ports, start=1):
        lines += f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=label:{label}\r\n"
        lines += f"a={direction}\r\n"
    return lines


def session(ip: str, ports: tuple[int, ...], direction: str) -> str:
    head = f"v=0\r\no=qms 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    return head + audio_lines(ports, direction)


METADATA = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1">\r\n'
    "<datamode>complete</datamode>\r\n"
    '<participant participant_id="p1"><nameID aor="sip:9001@pbx.example"/></participant>\r\n'
    '<participant participant_id="p2"><nameID aor="sip:+15550113@pbx.example"/></participant>\r\n'
    '<stream stream_id="s1" session_id="r1"><label>1</label></stream>\r\n'
    '<stream stream_id="s2" session_id="r1"><label>2</label></stream>\r\n'
    "</recording>\r\n"
)


def multipart(sdp_body: str) -> str:
    """The SIPREC INVITE's body: the SDP and the recording metadata (RFC 7866 §6.1)."""
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{sdp_body}"
        f"--{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\n"
        f"Content-Disposition: recording-session\r\n\r\n{METADATA}--{BOUNDARY}--\r\n"
    )


def siprec_invite(call_id: str) -> bytes:
    offer = multipart(session(SBC, SBC_PORTS, "sendonly"))
    headers = [
        f"Via: SIP/2.0/UDP {SBC}:5060;branch=z9hG4bKsrc1",
        "From: <sip:sbc@pbx.example>;tag=src",
        f"To: <sip:srs@{RECORDER}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:sbc@{SBC}:5060>;+sip.src",
        "Require: siprec",
        f"Content-Type: multipart/mixed;boundary={BOUNDARY}",
        f"Content-Length: {len(offer.encode())}",
    ]
    return ("\r\n".join([f"INVITE sip:srs@{RECORDER} SIP/2.0", *headers, "", ""]) + offer).encode()


def siprec_session(call_id: str) -> tuple[Frames, list[bytes], list[bytes]]:
    """The SBC records a call to the recorder: INVITE, 200 with two recvonly streams, ACK,
    each party's voice on its own stream, BYE. Returns the frames and the two voices."""
    dialog = ["From: <sip:sbc@pbx.example>;tag=src", f"To: <sip:srs@{RECORDER}>;tag=srs"]
    via = f"Via: SIP/2.0/UDP {SBC}:5060;branch=z9hG4bKsrc1"
    ok = sip(
        "SIP/2.0 200 OK",
        [via, *dialog, f"Call-ID: {call_id}", "CSeq: 1 INVITE",
         f"Contact: <sip:srs@{RECORDER}:5060>"],
        session(RECORDER, RECORDER_PORTS, "recvonly"),
    )  # fmt: skip
    ack = sip(
        f"ACK sip:srs@{RECORDER}:5060 SIP/2.0",
        [f"Via: SIP/2.0/UDP {SBC}:5060;branch=z9hG4bKsrc2", *dialog, f"Call-ID: {call_id}",
         "CSeq: 1 ACK"],
    )  # fmt: skip
    bye = sip(
        f"BYE sip:srs@{RECORDER}:5060 SIP/2.0",
        [f"Via: SIP/2.0/UDP {SBC}:5060;branch=z9hG4bKsrc3", *dialog, f"Call-ID: {call_id}",
         "CSeq: 2 BYE"],
    )  # fmt: skip
    frames = [
        (START, udp(SBC, 5060, RECORDER, 5060, siprec_invite(call_id))),
        (START + 0.2, udp(RECORDER, 5060, SBC, 5060, ok)),
        (START + 0.21, udp(SBC, 5060, RECORDER, 5060, ack)),
    ]
    caller_voice, callee_voice = voice(41), voice(42)
    frames += stream(SBC, SBC_PORTS[0], RECORDER, RECORDER_PORTS[0], caller_voice, 0x51)
    frames += stream(SBC, SBC_PORTS[1], RECORDER, RECORDER_PORTS[1], callee_voice, 0x52)
    frames.append((START + 0.4 + PACKETS * 0.02, udp(SBC, 5060, RECORDER, 5060, bye)))
    return sorted(frames, key=lambda frame: frame[0]), caller_voice, callee_voice


def voice(seed: int) -> list[bytes]:
    generator = random.Random(seed)
    return [generator.randbytes(160) for _ in range(PACKETS)]


def stream(src: str, sport: int, dst: str, dport: int, payloads: list[bytes], ssrc: int) -> Frames:
    start = START + 0.3 + (ssrc % 16) * 0.001
    return [
        (start + index * 0.02,
         udp(src, sport, dst, dport, rtp(index, index * 160, ssrc, payload)))
        for index, payload in enumerate(payloads)
    ]  # fmt: skip


def pcm(payloads: list[bytes]) -> array:
    return array("h", audioop.ulaw2lin(b"".join(payloads), 2))


def channels(recording: Recording) -> tuple[array, array]:
    with wave.open(recording.file.path) as audio:
        frames = audio.readframes(audio.getnframes())
    samples = array("h", struct.unpack(f"<{len(frames) // 2}h", frames))
    return samples[0::2], samples[1::2]


def holds_only(channel: array, expected: list[bytes]) -> bool:
    """The channel holds the voice whole, sample for sample, and nothing else but silence."""
    haystack, needle = channel.tobytes(), pcm(expected).tobytes()
    found = haystack.find(needle)
    while found > 0 and found % 2:
        found = haystack.find(needle, found + 1)
    if found < 0:
        return False
    start, end = found // 2, found // 2 + len(needle) // 2
    return not any(channel[:start]) and not any(channel[end:])


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def test_a_siprec_session_records_each_party_in_a_channel_of_its_own(
    spool_root: Path, tmp_path: Path
) -> None:
    call_id = f"siprec-1@{SBC}"
    frames, caller_voice, callee_voice = siprec_session(call_id)
    capture = tmp_path / "capture.pcap"
    write_pcap(capture, frames)
    output = io.StringIO()
    call_command("import_pcap", str(capture), stdout=output)

    assert f"RTP packets: {2 * PACKETS} matched to calls, 0 unmatched" in output.getvalue()
    (call,) = Call.objects.filter(call_id=call_id)
    assert call.end_reason == "bye"
    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    left, right = channels(recording)
    # Label 1 in the left channel, label 2 in the right: one party each, sample for sample,
    # and neither voice in the other's channel.
    assert holds_only(left, caller_voice)
    assert holds_only(right, callee_voice)
    assert list(spool_root.iterdir()) == []


def two_stream_call(call_id: str) -> Frames:
    """A phone's call with three m=audio lines of which the gateway rejects the middle one
    (port 0): RTP both ways on each of the two accepted streams."""
    phone_ports, gateway_ports = (16400, 16402, 16404), (31000, 0, 31004)
    via = f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK2s"
    ends = ["From: <sip:9001@pbx.example>;tag=a", "To: <sip:+15550113@pbx.example>"]
    answered = [ends[0], ends[1] + ";tag=b", f"Call-ID: {call_id}"]
    invite = sip(
        f"INVITE sip:+15550113@{GATEWAY} SIP/2.0",
        [via, *ends, f"Call-ID: {call_id}", "CSeq: 1 INVITE", f"Contact: <sip:9001@{PHONE}>"],
        session(PHONE, phone_ports, "sendrecv"),
    )
    ok = sip(
        "SIP/2.0 200 OK",
        [via, *answered, "CSeq: 1 INVITE", f"Contact: <sip:gw@{GATEWAY}>"],
        session(GATEWAY, gateway_ports, "sendrecv"),
    )
    bye = sip(f"BYE sip:gw@{GATEWAY} SIP/2.0", [via, *answered, "CSeq: 2 BYE"])
    frames = [
        (START, udp(PHONE, 5060, GATEWAY, 5060, invite)),
        (START + 0.2, udp(GATEWAY, 5060, PHONE, 5060, ok)),
    ]
    for index, (mine, theirs) in enumerate(((16400, 31000), (16404, 31004))):
        frames += stream(PHONE, mine, GATEWAY, theirs, voice(index), 0x60 + index)
        frames += stream(GATEWAY, theirs, PHONE, mine, voice(10 + index), 0x70 + index)
    frames.append((START + 0.4 + PACKETS * 0.02, udp(PHONE, 5060, GATEWAY, 5060, bye)))
    return sorted(frames, key=lambda frame: frame[0])


def test_every_accepted_audio_stream_of_a_call_is_followed_as_that_call(tmp_path: Path) -> None:
    sink = Collected()
    engine = Engine(sink, phone_ips={PHONE}, spool_root=tmp_path / "spool", record_unsignalled=True)
    for at, frame in two_stream_call("two-streams@pbx.example"):
        engine.feed(at, 1, frame)
    engine.finish()

    # All four directions' RTP is the call's: none unmatched, none an unsignalled call.
    assert (engine.stats.rtp_packets, engine.stats.rtp_unmatched) == (4 * PACKETS, 0)
    assert engine.stats.unsignalled_calls == 0
    assert {snapshot.call_id for snapshot in sink.calls} == {"two-streams@pbx.example"}
    # The recording's two channels are the first stream's; the second is followed, not mixed in.
    spool = Path(next(snapshot.spool for snapshot in sink.calls if snapshot.spool))
    ssrcs = {struct.unpack_from("!I", packet.packet, 8)[0] for packet in read_log(spool)}
    assert ssrcs == {0x60, 0x70}
