"""The one live capture loop, shared by `manage.py sniff` and a capture node's sniffer.

A live source yields packets as they come and None every 100 ms of silence (LiveCapture);
the loop feeds the packets to the engine, ticks it on the silences so calls still end
while nothing arrives, hands its figures to the caller every `stats_every` seconds and
stops on a flag: set by SIGINT/SIGTERM (`on_signal`, as healthchecks' sendalerts), by
`stop()` from another thread, after `duration` seconds, or once the process that started
it (`parent_pid`) is gone. Once stopped it still feeds what the kernel captured before
the stop, then ends the engine's calls.

What differs between its users is said in their arguments, not in copies of the loop:
the foreground `sniff` logs a statistics line every --stats-every seconds and may run for
a --duration; the sniffer writes its figures for the worker's heartbeat every second and
stops when its worker is gone.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Protocol

from recorder.capture.sources import InterfaceStats, Packet
from recorder.engine.engine import Engine

log = logging.getLogger("qms.capture")


class LiveSource(Protocol):
    """What the loop needs of a live capture (recorder.capture.sources.LiveCapture)."""

    queue_dropped: int

    def __iter__(self) -> Iterator[Packet | None]: ...

    def drain(self, until: float) -> Iterable[Packet]: ...

    def stop(self) -> None: ...

    def stats(self) -> list[InterfaceStats]: ...


# Called with the source, the engine and the packets per second since the last call.
StatsHook = Callable[[LiveSource, Engine, float], None]


class CaptureLoop:
    """A live source into the engine until stopped; the differences of its users are its
    arguments: how often `on_stats` is called, a `duration`, a `parent_pid` whose end stops it."""

    def __init__(
        self,
        stats_every: float,
        on_stats: StatsHook,
        duration: float = 0.0,
        parent_pid: int = 0,
    ) -> None:
        self.stats_every = stats_every
        self.on_stats = on_stats
        self.duration = duration
        self.parent_pid = parent_pid
        # An Event rather than a bool: threads beside the loop wait on it to stop with it.
        self.stopping = threading.Event()
        # Where the statistics stand: when they are next due, and the count at the last ones.
        self.next_stats, self.counted, self.counted_at = 0.0, 0, 0.0

    def handle_signals(self) -> None:
        """SIGINT and SIGTERM stop the loop cleanly (installed before the source opens, so a
        signal during start-up is not lost)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s, finishing...", signal.strsignal(signum))
        self.stop()

    def stop(self) -> None:
        self.stopping.set()

    def run(self, capture: LiveSource, engine: Engine) -> None:
        """Capture (already started) into the engine until stopped; the source is stopped and
        the engine's calls ended however the loop ends."""
        try:
            self.follow(capture, engine)
            # A stop must not lose what the kernel already captured: the last BYE or
            # REGISTER 2xx is often still in libpcap's buffer or the queue.
            for packet in capture.drain(until=time.time()):
                engine.feed(*packet)
        finally:
            capture.stop()
            engine.finish()

    def follow(self, capture: LiveSource, engine: Engine) -> None:
        started = time.monotonic()
        deadline = started + self.duration if self.duration else math.inf
        self.next_stats, self.counted, self.counted_at = started + self.stats_every, 0, started
        for packet in capture:
            self.step(engine, packet)
            now = time.monotonic()
            if now >= self.next_stats:
                self.every_stats(capture, engine, now)
            if self.stopping.is_set() or now >= deadline:
                return

    @staticmethod
    def step(engine: Engine, packet: Packet | None) -> None:
        """One packet, or a silence of the source: the engine's clock still moves on."""
        if packet is None:
            engine.tick(time.time())
        else:
            engine.feed(*packet)

    def every_stats(self, capture: LiveSource, engine: Engine, now: float) -> None:
        rate = per_second(engine.stats.packets - self.counted, now - self.counted_at)
        self.next_stats = now + self.stats_every
        self.counted, self.counted_at = engine.stats.packets, now
        self.on_stats(capture, engine, rate)
        if self.orphaned():
            log.warning("the process that started this capture (pid %d) is gone", self.parent_pid)
            self.stop()

    def orphaned(self) -> bool:
        return bool(self.parent_pid) and os.getppid() != self.parent_pid


def per_second(packets: int, seconds: float) -> float:
    return packets / seconds if seconds > 0 else 0.0
