"""RTP packets with known ground truth for the media tests: the product's packet writer
(recorder/capture/synthesis.py) with the media tests' defaults, and audioop's G.711 decode."""

from __future__ import annotations

import warnings

from recorder.capture import synthesis

with warnings.catch_warnings():
    # audioop is deprecated (PEP 594) but present in 3.11: the independent G.711 reference.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCMA = 8
PCMU = 0
CN = 13
SSRC = 0x5EED0001
FRAME = 160  # 20 ms at 8 kHz


def rtp(
    sequence: int,
    timestamp: int,
    payload: bytes | None = None,
    *,
    ssrc: int = SSRC,
    payload_type: int = PCMA,
    marker: bool = False,
) -> bytes:
    """An RTP packet; by default 20 ms of A-law whose byte is the sequence number's low byte."""
    if payload is None:
        payload = bytes([sequence & 0xFF]) * FRAME
    return synthesis.rtp(sequence, timestamp, ssrc, payload, payload_type, marker=marker)


def telephone_event(
    sequence: int,
    timestamp: int,
    event: int,
    duration: int,
    *,
    end: bool = False,
    volume: int = 10,
    payload_type: int = 101,
    ssrc: int = SSRC,
) -> bytes:
    """An RTP packet carrying an RFC 4733 §2.3 event."""
    payload = synthesis.telephone_event(event, duration, end=end, volume=volume)
    return rtp(sequence, timestamp, payload, ssrc=ssrc, payload_type=payload_type)


def alaw_pcm(sequence: int) -> bytes:
    """The independent (audioop) decode of the default payload of `rtp(sequence, ...)`."""
    return audioop.alaw2lin(bytes([sequence & 0xFF]) * FRAME, 2)


def stream(
    count: int, first_sequence: int = 1000, first_timestamp: int = 50_000, start: float = 100.0
):
    """(arrival, packet, sequence) for `count` packets of 20 ms, sent and received on time."""
    return [
        (start + 0.02 * i, rtp(first_sequence + i, first_timestamp + FRAME * i), first_sequence + i)
        for i in range(count)
    ]
