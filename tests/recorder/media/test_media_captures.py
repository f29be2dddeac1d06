"""The media decoders on real traffic from ../shared/captures/public, read in place."""

from __future__ import annotations

import itertools
import math
import struct
from array import array
from pathlib import Path

import dpkt
import pytest

from recorder.media.stream import PcmChunk, StreamDecoder
from tests.conftest import PUBLIC_CAPTURES, need
from tests.recorder.media.rtp_build import audioop
from tests.recorder.media.rtp_captures import rtp_packets

FORENSIC_MAP = [(0, "PCMU/8000"), (101, "telephone-event/8000")]


def capture(name: str) -> Path:
    path = PUBLIC_CAPTURES / name
    need(path.is_file(), f"needs the public capture {path}")
    return path


def decode(packets, payload_types=()) -> tuple[StreamDecoder, list[PcmChunk]]:
    decoder = StreamDecoder(payload_types)
    chunks = []
    for at, packet in packets:
        chunks += decoder.feed(at, packet)
    return decoder, chunks + decoder.flush()


def contiguous(chunks: list[PcmChunk]) -> bytes:
    end = 0
    for chunk in chunks:
        assert chunk.offset == end
        end += chunk.samples
    return b"".join(chunk.pcm for chunk in chunks)


def padded(chunks: list[PcmChunk]) -> bytes:
    """The chunks with the gaps a writer pads (pauses longer than max_fill) filled in."""
    pcm = bytearray()
    for offset, data in chunks:
        assert 2 * offset >= len(pcm)
        pcm += bytes(2 * offset - len(pcm)) + data
    return bytes(pcm)


def rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def independent_payload(packet: bytes) -> tuple[int, int, bytes]:
    """(sequence, timestamp, payload) read by dpkt, not by QMS's parser."""
    rtp = dpkt.rtp.RTP(packet)
    return rtp.seq, rtp.ts, bytes(rtp.data)


def test_sipp_g711a_is_sample_exact_against_audioop():
    packets = rtp_packets(capture("sipp-g711a.pcap"), dport=2006)
    decoder, chunks = decode(packets)
    pcm = contiguous(chunks)
    ordered = sorted(independent_payload(packet) for _, packet in packets)
    reference = b"".join(audioop.alaw2lin(payload, 2) for *_, payload in ordered)
    assert len(packets) == 236
    assert len(pcm) == len(reference) == 2 * 236 * 240  # 30 ms packets, 7.08 s
    assert pcm == reference
    assert decoder.sample_rate == 8000
    assert (decoder.quality.expected, decoder.quality.lost) == (236, 0)


@pytest.mark.parametrize("port", [18150, 63184])
def test_forensic_mu_law_sits_sample_exact_at_its_timestamps(port):
    packets = rtp_packets(capture("rtpparsing-forensic.pcap"), dport=port)
    decoder, chunks = decode(packets, FORENSIC_MAP)
    # X-Lite (port 63184) suppresses silence without CN: pauses of up to 6.2 s.
    pcm = padded(chunks)
    audio = [independent_payload(p) for _, p in packets if p[1] & 0x7F == 0]
    first_timestamp = audio[0][1]
    for _, timestamp, payload in audio:
        offset = 2 * (timestamp - first_timestamp)
        assert pcm[offset : offset + 2 * len(payload)] == audioop.ulaw2lin(payload, 2)
    assert decoder.quality.timestamp_jumps == 0
    assert rms(pcm) > 200


def test_forensic_carries_the_dtmf_digits_2255_hash_4125_hash_4321_hash():
    # A manual decode of the PT 101 packets (event, E bit, duration at each timestamp)
    # gives 15 events: 2 2 5 5 # / 4 1 2 5 # / 4 3 2 1 #, each end packet sent 3 times.
    packets = rtp_packets(capture("rtpparsing-forensic.pcap"), dport=18150)
    decoder, _ = decode(packets, FORENSIC_MAP)
    events = decoder.take_dtmf()
    assert "".join(event.digit for event in events) == "2255#4125#4321#"
    assert [event.duration for event in events[:3]] == [0.14, 0.1, 0.08]
    # The stream's first packet has timestamp 126160; the first event starts at 184560.
    assert events[0].start == pytest.approx((184560 - 126160) / 8000)
    assert all(b.start > a.start + a.duration for a, b in itertools.pairwise(events))
    assert decoder.quality.duplicated == 60  # 15 events x (2 extra starts + 2 extra ends)
    assert decoder.quality.telephone_events == 125 - 60


def test_g722_capture_gives_8_5_seconds_of_16_khz_speech():
    decoder, chunks = decode(rtp_packets(capture("rtppcap-sip-rtp-g722.pcap"), dport=6000))
    pcm = contiguous(chunks)
    assert decoder.sample_rate == 16000
    assert len(pcm) == 2 * 136_000  # 425 packets x 20 ms at 16 kHz
    assert rms(pcm) > 300


def test_g729_capture_gives_8_5_seconds_of_8_khz_speech():
    decoder, chunks = decode(rtp_packets(capture("rtppcap-sip-rtp-g729a.pcap"), dport=6000))
    pcm = contiguous(chunks)
    assert decoder.sample_rate == 8000
    assert len(pcm) == 2 * 68_000  # 425 packets x 2 frames x 80 samples
    assert rms(pcm) > 300
    assert decoder.quality.malformed == 0


def loudness(pcm: bytes, frame: int) -> list[float]:
    samples = array("h", pcm)
    return [
        rms(samples[i : i + frame].tobytes()) for i in range(0, len(samples) - frame + 1, frame)
    ]


def correlation(a: list[float], b: list[float]) -> float:
    n = min(len(a), len(b))
    mean_a, mean_b = sum(a[:n]) / n, sum(b[:n]) / n
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(a[:n], b[:n], strict=True))
    spread = math.sqrt(
        sum((x - mean_a) ** 2 for x in a[:n]) * sum((y - mean_b) ** 2 for y in b[:n])
    )
    return covariance / spread


def test_g722_and_g729_decode_the_same_prompt_alike():
    """Both captures play the same FreeSWITCH prompt: if either decoder (or the bcg729 call
    signature) were wrong, their 20 ms loudness envelopes would not follow each other."""
    _, wideband = decode(rtp_packets(capture("rtppcap-sip-rtp-g722.pcap"), dport=6000))
    _, narrowband = decode(rtp_packets(capture("rtppcap-sip-rtp-g729a.pcap"), dport=6000))
    envelope_722 = loudness(contiguous(wideband), 320)
    envelope_729 = loudness(contiguous(narrowband), 160)
    assert correlation(envelope_722, envelope_729) > 0.9


def test_comfort_noise_in_a_real_call_is_silence():
    packets = rtp_packets(capture("heplify-sip_ipv4_tcp.pcap"), dport=6050)
    decoder, chunks = decode(packets)
    pcm = contiguous(chunks)
    audio = [independent_payload(p) for _, p in packets if p[1] & 0x7F == 8]
    first_timestamp = audio[0][1]
    for _, timestamp, payload in audio:
        offset = 2 * (timestamp - first_timestamp)
        assert pcm[offset : offset + 2 * len(payload)] == audioop.alaw2lin(payload, 2)
    assert decoder.quality.comfort_noise == 4
    assert len(pcm) == 2 * (audio[-1][1] - first_timestamp + 160)


def test_the_capture_helper_reads_rtp_headers_as_dpkt_does():
    packets = rtp_packets(capture("sipp-g711a.pcap"), dport=2006)
    sequence, timestamp, payload = independent_payload(packets[0][1])
    assert struct.unpack("!HI", packets[0][1][2:8]) == (sequence, timestamp)
    assert len(payload) == 240
