"""The one live capture loop, shared by `manage.py sniff` and a capture node's sniffer.

A live source (recorder/capture/tcpdump.py) hands over blocks of classic pcap, two streams
per interface (its media ring and its signalling ring), and None after 100 ms of silence.
The loop feeds each stream's blocks to the engine through its own PcapStream, the path a
pcap file's chunks take (recorder/engine/pcapfile.py), an interface's two in capture-time
order (recorder/nodes/rings.py); ticks the engine on the silences so calls still end while
nothing arrives, hands its figures to the caller every `stats_every` seconds and stops on
a flag: set by SIGINT/SIGTERM (`on_signal`, as healthchecks' sendalerts), by `stop()` from
another thread, after `duration` seconds, or once the process that started it
(`parent_pid`) is gone. Once stopped, it still feeds what was captured before the stop
(`catch_up`), stops the source's tcpdumps, feeds what they wrote last and everything the
merge still holds, then ends the engine's calls.

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

from recorder.capture.hepsocket import HepBlock
from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.tcpdump import Block, InterfaceStats
from recorder.engine.engine import Engine
from recorder.engine.pcapfile import PcapStream
from recorder.nodes.rings import QUIET_SECONDS, InterfaceRings

log = logging.getLogger("qms.capture")


class LiveSource(Protocol):
    """What the loop needs of a live capture (recorder.capture.tcpdump.TcpdumpCapture)."""

    def blocks(self) -> Iterator[Block | HepBlock | None]: ...

    def stop(self) -> None: ...

    def rest(self) -> Iterable[Block | HepBlock]: ...

    def close(self) -> None: ...

    def request_stats(self) -> None: ...

    def stats(self) -> list[InterfaceStats]: ...


# Called with the source, the engine and the packets per second since the last call.
StatsHook = Callable[[LiveSource, Engine, float], None]
# How often the source's drop counters are read, whatever the statistics' period: the calls
# live when a drop is read are the ones marked with it.
DROPS_EVERY = 1.0
# The longest a stop waits for a backlog captured before it, and the silence that says
# nothing captured before it is left: longer than the second after which tcpdump's ring
# hands over a block it has not filled.
CATCH_UP_SECONDS = 10.0
CATCH_UP_QUIET = QUIET_SECONDS


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
        # A source's single stream per interface, or each interface's two rings.
        self.streams: dict[str, PcapStream] = {}
        self.rings: dict[str, InterfaceRings] = {}
        # The source's losses as last read, and when they are next read.
        self.dropped, self.next_drops = 0, 0.0

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
        """Capture (already started) into the engine until stopped; the source is closed and
        the engine's calls ended however the loop ends."""
        self.streams, self.rings = {}, {}
        try:
            self.follow(capture, engine)
            self.catch_up(capture, engine, time.time())
            capture.stop()
            for block in capture.rest():
                self.feed(engine, block)
            self.note_drops(capture, engine)  # the tools' last and exact counters
        finally:
            capture.close()
            self.end_streams()
            engine.finish()

    def follow(self, capture: LiveSource, engine: Engine) -> None:
        started = time.monotonic()
        deadline = started + self.duration if self.duration else math.inf
        self.next_stats, self.counted, self.counted_at = started + self.stats_every, 0, started
        self.next_drops = started + DROPS_EVERY
        for block in capture.blocks():
            if block is None:
                # A silence of the source: the engine's clock still moves on, but not past
                # a packet the merge of two rings still holds.
                self.release()
                engine.tick(max(engine.clock, min(time.time(), self.held_from())))
            else:
                self.feed(engine, block)
            now = time.monotonic()
            if now >= self.next_drops:
                self.next_drops = now + DROPS_EVERY
                self.note_drops(capture, engine)
            if now >= self.next_stats:
                self.every_stats(capture, engine, now)
            if self.stopping.is_set() or now >= deadline:
                return

    def catch_up(self, capture: LiveSource, engine: Engine, until: float) -> None:
        """After a stop, what the kernel captured before it: the last BYE or REGISTER 2xx
        is often still in tcpdump's ring or the pipe, and a busy capture's backlog longer.
        Read on until the capture's clock reaches the moment of the stop (a tick at it or
        later), the source falls silent for CATCH_UP_QUIET (it holds nothing more), or
        CATCH_UP_SECONDS; the
        source is then stopped and its pipes read to their end."""
        deadline = time.monotonic() + CATCH_UP_SECONDS
        quiet_until = time.monotonic() + CATCH_UP_QUIET
        for block in capture.blocks():
            now = time.monotonic()
            if block is None:
                self.release()
                if now >= quiet_until:
                    return
                continue
            quiet_until = now + CATCH_UP_QUIET
            self.feed(engine, block)
            if engine.clock >= until or now >= deadline:
                return

    def feed(self, engine: Engine, block: Block | HepBlock) -> None:
        """One block of a stream to the engine's batch path: at once if it is its interface's
        only stream, else as far as the merge of its interface's rings allows. A HEP
        listener's block is frames already, each fed with its agent's capture id."""
        if isinstance(block, HepBlock):
            feed_hep(engine, block)
            return
        if not block.ring:
            stream = self.streams.get(block.interface)
            if stream is None:
                stream = self.streams[block.interface] = PcapStream(engine)
            stream.feed(block.data)
            return
        now = time.monotonic()
        rings = self.rings.get(block.interface)
        if rings is None:
            rings = self.rings[block.interface] = InterfaceRings(engine, block.interface, now)
        rings.add(block.ring, block.data, now)
        if not block.more:
            self.release()

    def release(self) -> None:
        """What every interface's rings may now feed: a ring's quiet is measured in time,
        so this is asked at every block and every silence."""
        now, wall = time.monotonic(), time.time()
        for rings in self.rings.values():
            rings.release(now, wall)

    def held_from(self) -> float:
        return min((rings.held_from() for rings in self.rings.values()), default=math.inf)

    def end_streams(self) -> None:
        """The source has ended: what the rings still hold goes to the engine, in order,
        and a packet cut by the end is said."""
        for rings in self.rings.values():
            rings.end()
        for stream in self.streams.values():
            stream.end()

    def note_drops(self, capture: LiveSource, engine: Engine) -> None:
        """Packets the source lost since the last reading go to the engine, which marks
        the calls live now with them."""
        lost = sum(found.lost for found in capture.stats())
        capture.request_stats()  # for the next reading
        if lost > self.dropped:
            engine.capture_dropped(lost - self.dropped)
            self.dropped = lost

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


def feed_hep(engine: Engine, block: HepBlock) -> None:
    """A HEP block's refused datagrams counted, its frames fed one by one: the engine
    gives each call the capture id of the agent whose packet opened it."""
    for kind, number in block.faults.items():
        engine.count(kind, number)
    try:
        for found in block.frames:
            engine.hep_capture_id = found.capture_id
            engine.feed(found.at, LINKTYPE_ETHERNET, found.frame)
    finally:
        engine.hep_capture_id = None


def per_second(packets: int, seconds: float) -> float:
    return packets / seconds if seconds > 0 else 0.0
