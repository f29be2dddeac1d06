"""LiveCapture's queue, without an interface: what a stop still hands to the engine."""

from __future__ import annotations

import time

from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.sources import LiveCapture


def test_drain_hands_over_the_packets_captured_before_the_stop_only() -> None:
    capture = LiveCapture([])
    for at in (100.0, 101.0, 102.5, 101.5):
        capture.packets.put((at, LINKTYPE_ETHERNET, b"frame"))
    drained = [packet[0] for packet in capture.drain(until=101.5, quiet=0.05)]
    assert drained == [100.0, 101.0, 101.5]


def test_drain_ends_when_the_queue_stays_quiet() -> None:
    capture = LiveCapture([])
    started = time.monotonic()
    assert list(capture.drain(until=time.time(), quiet=0.05)) == []
    assert time.monotonic() - started < 1.0
