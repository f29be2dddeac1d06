"""Through a hold, both channels stay on the call's clock: a reply after the hold plays
after the hold, even when the phones froze their RTP timestamps while holding."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest
from django.core.management import call_command

from qms.demo.capture import tune
from recorder.capture.synthesis import rtp, sdp, sip, udp, write_pcap
from recorder.models import Recording

CALLER, CALLEE = "10.40.0.11", "10.40.0.12"
START = 1_700_000_000.0
SILENCE = b"\xff" * 160  # µ-law digital silence


def signalling() -> list[tuple[float, bytes]]:
    ends = ["From: <sip:9001@pbx>;tag=a", "To: <sip:9002@pbx>;tag=b", "Call-ID: hold-1"]
    via = ["Via: SIP/2.0/UDP 10.40.0.11:5060;branch=z9hG4bKhold"]
    invite = sip("INVITE sip:9002@10.40.0.12 SIP/2.0", via + ends[:1] + ["To: <sip:9002@pbx>",
                 "Call-ID: hold-1", "CSeq: 1 INVITE", "Contact: <sip:9001@10.40.0.11>"],
                 sdp(CALLER, 16384))  # fmt: skip
    ok = sip("SIP/2.0 200 OK", via + ends + ["CSeq: 1 INVITE", "Contact: <sip:9002@10.40.0.12>"],
             sdp(CALLEE, 20000))  # fmt: skip
    bye = sip("BYE sip:9002@10.40.0.12 SIP/2.0", via + ends + ["CSeq: 2 BYE"])
    return [
        (START, udp(CALLER, 5060, CALLEE, 5060, invite)),
        (START + 0.01, udp(CALLEE, 5060, CALLER, 5060, ok)),
        (START + 15.0, udp(CALLER, 5060, CALLEE, 5060, bye)),
    ]


def media() -> list[tuple[float, bytes]]:
    question, answer = tune([440.0], 2.0), tune([660.0], 2.0)
    frames = []
    # Two seconds of the caller's question, then ten seconds of hold with no RTP at all,
    # then the callee's answer, each phone's timestamps carrying on as if no time passed.
    for tick in range(200):
        talking = tick < 100
        at = START + 0.1 + (tick if talking else tick + 500) * 0.02
        part = slice((tick % 100) * 160, (tick % 100 + 1) * 160)
        to_callee = rtp(tick, tick * 160, 0xA, question[part] if talking else SILENCE)
        to_caller = rtp(tick, tick * 160, 0xB, SILENCE if talking else answer[part])
        frames.append((at, udp(CALLER, 16384, CALLEE, 20000, to_callee)))
        frames.append((at + 0.001, udp(CALLEE, 20000, CALLER, 16384, to_caller)))
    return frames


def loud_seconds(channel: list[int], rate: int) -> list[int]:
    """The whole seconds of a channel that carry sound."""
    return [
        second
        for second in range(len(channel) // rate)
        if max(abs(sample) for sample in channel[second * rate : (second + 1) * rate]) > 1000
    ]


@pytest.mark.django_db(transaction=True)
def test_the_answer_after_a_hold_plays_after_the_hold(tmp_path: Path) -> None:
    capture = tmp_path / "hold.pcap"
    write_pcap(capture, sorted(signalling() + media(), key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())
    recording = Recording.objects.get()
    with wave.open(recording.file.path) as audio:
        rate = audio.getframerate()
        frames = audio.readframes(audio.getnframes())
    samples = [int.from_bytes(frames[i : i + 2], "little", signed=True)
               for i in range(0, len(frames), 2)]  # fmt: skip
    left, right = samples[0::2], samples[1::2]
    assert loud_seconds(left, rate) == [0, 1]
    assert loud_seconds(right, rate) == [12, 13]
    assert recording.duration_seconds == pytest.approx(14.0, abs=0.1)
