"""A call whose RTP is RFC 4733 telephone-events alone (issue 14, item 6).

An IVR's far side, or a gateway that sends the digits apart from the voice, puts only
telephone-event packets on the wire. That is a call of silence with DTMF: its recording is
a WAV file of silence over the call's media, complete, with its digits, and it says why
there is no voice. It used to be "not decodable: unknown codec", with no audio at all.
The capture is written here, frame by frame, and goes through `import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest
from django.core.management import call_command

from recorder.capture.synthesis import rtp, sdp, udp, write_pcap
from recorder.models import Recording
from recorder.recordings.finish import EVENTS_ONLY
from tests.recorder.recordings.sip_calls import answered_call

PHONE, GATEWAY = "10.72.0.21", "10.72.9.1"
PHONE_RTP, GATEWAY_RTP = 16500, 31100
START = 1_796_200_000.0
EVENT_PT = 101  # recorder.capture.synthesis.sdp maps 101 to telephone-event/8000


def signalling(call_id: str, seconds: float) -> list[tuple[float, bytes]]:
    times = (START, START + 0.3, START + 0.5 + seconds)
    return answered_call(
        call_id, PHONE, GATEWAY, sdp(PHONE, PHONE_RTP), sdp(GATEWAY, GATEWAY_RTP), times
    )


def digit_packets(
    digit: int, at: float, sequence: int, timestamp: int
) -> list[tuple[float, bytes]]:
    """One DTMF digit as RFC 4733 §2.5 sends it: 100 ms of updates from the phone, then
    the end packet three times; every packet carries the event's start timestamp."""
    frames = []
    for step in range(5):
        end = step == 4
        payload = struct.pack("!BBH", digit, (0x80 if end else 0) | 10, 160 * (step + 1))
        for copy in range(3 if end else 1):
            packet = rtp(sequence, timestamp, 0x7777, payload, EVENT_PT, marker=step == 0)
            frames.append((at + 0.02 * step + 0.005 * copy,
                           udp(PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP, packet)))  # fmt: skip
            sequence += 1
    return frames


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def test_a_call_of_dtmf_alone_is_a_recording_of_silence_with_its_digits(
    spool_root: Path, tmp_path: Path
) -> None:
    call_id = f"dtmf-only@{PHONE}"
    frames = signalling(call_id, 3.0)
    frames += digit_packets(1, START + 0.5, 100, 8000)
    frames += digit_packets(2, START + 3.4, 107, 8000 + 23_200)  # 2.9 s later
    capture = tmp_path / "dtmf-only.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert recording.status_detail == EVENTS_ONLY
    assert (recording.audio_format, recording.codec) == ("wav", "telephone-event")
    assert recording.mos_estimate is None
    assert [event["digit"] for event in recording.dtmf] == ["1", "2"]
    assert recording.dtmf[1]["at"] == pytest.approx(2.9, abs=0.05)
    # Silence from the first event's packet to the last: the digits lie on it.
    assert recording.duration_seconds == pytest.approx(3.0, abs=0.1)
    with wave.open(recording.file.path, "rb") as audio:
        assert (audio.getnchannels(), audio.getframerate()) == (2, 8000)
        assert set(audio.readframes(audio.getnframes())) == {0}
    assert recording.peaks is not None


def test_undecodable_audio_with_dtmf_is_still_kept_as_it_came(
    spool_root: Path, tmp_path: Path
) -> None:
    """Not every call without decodable audio is silence: a codec QMS cannot decode next to
    the digits is kept as raw RTP, and says which codec."""
    call_id = f"opus-and-dtmf@{PHONE}"
    frames = signalling(call_id, 1.0)
    frames += digit_packets(5, START + 0.5, 100, 8000)
    for tick in range(40):
        voice = rtp(200 + tick, 20000 + 160 * tick, 0x7777, bytes(40), 96)  # PT 96: not mapped
        frames.append((START + 0.7 + 0.02 * tick,
                       udp(PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP, voice)))  # fmt: skip
    capture = tmp_path / "undecodable.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.NOT_DECODABLE
    assert recording.audio_format == "rtp"
    assert recording.status_detail == "not decodable: PT 96"
