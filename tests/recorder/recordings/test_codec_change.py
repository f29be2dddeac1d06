"""A call that changes codec to another sample rate keeps all its audio (issue 14, item 5).

Both sides offer PCMU and G.722 (RFC 3551: static payload types 0 and 9; G.722 samples at
16 kHz on an 8 kHz RTP clock). The phones talk a second of PCMU, then a second of G.722.
The recording used to drop the G.722 second and still say "complete"; now it is a 16 kHz
file of both seconds, the PCMU one upsampled. Written here frame by frame, through
`import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import io
import math
import wave
from array import array
from pathlib import Path

import G722
import numpy as np
import pytest
from django.core.management import call_command

from recorder.capture.synthesis import rtp, udp, write_pcap
from recorder.media.codecs import ULAW_TABLE
from recorder.models import Recording
from tests.recorder.recordings.sip_calls import answered_call

PHONE, GATEWAY = "10.73.0.21", "10.73.9.1"
PHONE_RTP, GATEWAY_RTP = 16600, 31200
START = 1_796_300_000.0


def offer(ip: str, port: int) -> str:
    return (
        f"v=0\r\no=qms 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 9\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\n"
        "a=sendrecv\r\n"
    )


def signalling(call_id: str, seconds: float) -> list[tuple[float, bytes]]:
    times = (START, START + 0.2, START + 0.4 + seconds)
    return answered_call(
        call_id, PHONE, GATEWAY, offer(PHONE, PHONE_RTP), offer(GATEWAY, GATEWAY_RTP), times
    )


def ulaw(sample: int) -> int:
    """The mu-law code word whose expansion is nearest to `sample` (G.711 Table 2)."""
    return min(range(256), key=lambda code: abs(ULAW_TABLE[code] - sample))


def tone(frequency: float, rate: int, start: int, count: int) -> list[int]:
    return [
        round(9000 * math.sin(2 * math.pi * frequency * (start + k) / rate)) for k in range(count)
    ]


def media() -> list[tuple[float, bytes]]:
    """50 packets of PCMU (a 440 Hz tone), then 50 of G.722 (a 1 kHz tone), from the phone;
    the same codec change from the gateway, in silence."""
    frames = []
    codes = {sample: ulaw(sample) for sample in set(tone(440, 8000, 0, 8000))}
    encoder, quiet = (
        G722.G722(16000, 64000, use_numpy=False),
        G722.G722(16000, 64000, use_numpy=False),
    )
    for tick in range(100):
        at, timestamp = START + 0.3 + 0.02 * tick, 160 * tick
        if tick < 50:
            payload_type = 0
            voice = bytes(codes[s] for s in tone(440, 8000, 160 * tick, 160))
            silence = bytes([0xFF]) * 160
        else:
            payload_type = 9
            voice = encoder.encode(array("h", tone(1000, 16000, 320 * tick, 320)))
            silence = quiet.encode(array("h", [0] * 320))
        frames.append(
            (
                at,
                udp(
                    PHONE,
                    PHONE_RTP,
                    GATEWAY,
                    GATEWAY_RTP,
                    rtp(tick, timestamp, 0x1111, voice, payload_type),
                ),
            )
        )
        frames.append(
            (
                at + 0.001,
                udp(
                    GATEWAY,
                    GATEWAY_RTP,
                    PHONE,
                    PHONE_RTP,
                    rtp(tick, timestamp, 0x2222, silence, payload_type),
                ),
            )
        )
    return frames  # fmt: skip


def loudest_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def test_a_call_that_changes_to_a_wideband_codec_keeps_both_halves(
    spool_root: Path, tmp_path: Path
) -> None:
    call_id = f"pcmu-then-g722@{PHONE}"
    capture = tmp_path / "codec-change.pcap"
    write_pcap(capture, sorted(signalling(call_id, 2.0) + media(), key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert recording.duration_seconds == pytest.approx(2.0, abs=0.05)
    with wave.open(recording.file.path, "rb") as audio:
        assert audio.getframerate() == 16000
        stereo = np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2").reshape(-1, 2)
    agent = stereo[:, 0].astype(float)  # the phone is the agent: what it sends, on the left
    first, second = agent[1600:14400], agent[17600:30400]  # inside each second
    assert loudest_frequency(first, 16000) == pytest.approx(440, abs=5)
    assert loudest_frequency(second, 16000) == pytest.approx(1000, abs=5)
    assert min(np.abs(first).max(), np.abs(second).max()) > 4000
    assert np.abs(stereo[:, 1]).max() < 500  # the gateway's silence, both halves
