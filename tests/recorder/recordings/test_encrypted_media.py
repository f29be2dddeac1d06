"""Media encrypted with keys the signalling never showed (issue 14, item 11).

ZRTP (RFC 6189) agrees SRTP keys on the media path itself, and SRTP may be keyed by DTLS,
MIKEY or the PBX: the SDP says RTP/AVP, the packets have plain RTP headers, and their G.711
payloads are ciphertext. Decoded, that is white noise; QMS used to call it a "complete"
recording. It is now kept as the RTP it was, "not decodable", saying it is encrypted media.
Written here frame by frame, through `import_pcap` into PostgreSQL.
"""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from recorder.capture.synthesis import rtp, sdp, udp, write_pcap
from recorder.media.codecs import ULAW_TABLE
from recorder.models import Recording
from recorder.recordings.finish import ENCRYPTED_SRTP, ENCRYPTED_ZRTP
from tests.recorder.recordings.sip_calls import answered_call

PHONE, GATEWAY = "10.74.0.21", "10.74.9.1"
PHONE_RTP, GATEWAY_RTP = 16700, 31300
START = 1_796_400_000.0
ZRTP_COOKIE = b"ZRTP"


def signalling(call_id: str, seconds: float) -> list[tuple[float, bytes]]:
    times = (START, START + 0.2, START + 0.4 + seconds)
    return answered_call(
        call_id, PHONE, GATEWAY, sdp(PHONE, PHONE_RTP), sdp(GATEWAY, GATEWAY_RTP), times
    )


def zrtp_packet(sequence: int, ssrc: int, message: bytes) -> bytes:
    """RFC 6189 §5: 0x1000, a sequence number, the magic cookie, the SSRC, a message (its
    preamble 0x505a, its length in words, its type block), and a CRC left as zeros here."""
    body = struct.pack("!HH8s", 0x505A, 3 + len(message) // 4, b"Hello   ") + message
    return struct.pack("!HH4sI", 0x1000, sequence, ZRTP_COOKIE, ssrc) + body + bytes(4)


def ciphertext_call(call_id: str, zrtp: bool, seconds: float = 2.0) -> list[tuple[float, bytes]]:
    """G.711 RTP headers over random payloads with an 80-bit SRTP tag (RFC 3711 §4.2),
    both ways; with `zrtp`, each side first sends its Hello on the media port."""
    rng = random.Random(call_id)
    frames = signalling(call_id, seconds)
    if zrtp:
        for n in range(3):
            at = START + 0.25 + 0.05 * n
            frames.append(
                (at, udp(PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP, zrtp_packet(n, 0x1111, bytes(16))))
            )
            frames.append(
                (
                    at + 0.01,
                    udp(GATEWAY, GATEWAY_RTP, PHONE, PHONE_RTP, zrtp_packet(n, 0x2222, bytes(16))),
                )
            )
    for tick in range(int(seconds / 0.02)):
        at = START + 0.4 + 0.02 * tick
        for src, sport, dst, dport, ssrc in (
            (PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP, 0x1111),
            (GATEWAY, GATEWAY_RTP, PHONE, PHONE_RTP, 0x2222),
        ):
            payload = rng.randbytes(160 + 10)
            frames.append((at, udp(src, sport, dst, dport, rtp(tick, 160 * tick, ssrc, payload))))
    return frames  # fmt: skip


def noisy_call(call_id: str, seconds: float = 2.0) -> list[tuple[float, bytes]]:
    """Plain G.711 whose audio is loud Gaussian noise: it must stay audio."""
    rng = np.random.default_rng(7)
    order = np.argsort(ULAW_TABLE)  # code words by the sample each expands to
    levels = np.array(ULAW_TABLE)[order]
    frames = signalling(call_id, seconds)
    for tick in range(int(seconds / 0.02)):
        samples = np.clip(rng.normal(0, 9000, 160), -32000, 32000)
        nearest = np.clip(np.searchsorted(levels, samples), 0, 255)
        codes = bytes(order[nearest].astype(np.uint8))
        at = START + 0.4 + 0.02 * tick
        frames.append((at, udp(PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP,
                               rtp(tick, 160 * tick, 0x1111, codes))))  # fmt: skip
    return frames


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def import_capture(tmp_path: Path, frames: list[tuple[float, bytes]]) -> None:
    capture = tmp_path / "capture.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())


@pytest.mark.parametrize("zrtp", [True, False], ids=["zrtp", "srtp keyed elsewhere"])
def test_media_encrypted_on_the_media_path_is_kept_as_it_came_and_said_to_be(
    spool_root: Path, tmp_path: Path, zrtp: bool
) -> None:
    call_id = f"encrypted-{zrtp}@{PHONE}"
    import_capture(tmp_path, ciphertext_call(call_id, zrtp))

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.NOT_DECODABLE
    assert recording.status_detail == (ENCRYPTED_ZRTP if zrtp else ENCRYPTED_SRTP)
    assert recording.audio_format == "rtp"  # the packets as they came, for whoever has keys
    assert recording.mos_estimate is None and recording.peaks is None


def test_random_payloads_of_whole_milliseconds_are_still_audio(
    spool_root: Path, tmp_path: Path
) -> None:
    """Random octets with no tag after them (the tests' own pseudo-random voices) are not
    taken for SRTP: the tag is half of the sign."""
    call_id = f"random-voice@{PHONE}"
    rng = random.Random(call_id)
    frames = signalling(call_id, 2.0)
    for tick in range(100):
        packet = rtp(tick, 160 * tick, 0x1111, rng.randbytes(160))
        frames.append(
            (START + 0.4 + 0.02 * tick, udp(PHONE, PHONE_RTP, GATEWAY, GATEWAY_RTP, packet))
        )
    import_capture(tmp_path, frames)
    assert Recording.objects.get(call_id=call_id).status == Recording.Status.COMPLETE


def test_loud_noise_in_plain_g711_is_still_audio(spool_root: Path, tmp_path: Path) -> None:
    call_id = f"noise@{PHONE}"
    import_capture(tmp_path, noisy_call(call_id))

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == Recording.Status.COMPLETE
    assert recording.audio_format == "wav"
