"""Where the engine's events go (Sink), and what it counts on the way (EngineStats)."""

from __future__ import annotations

import queue
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from integrations.observations import BindingSeen, EncryptedSignallingSeen
from recorder.engine.calls import CallSnapshot


class Sink(Protocol):
    """Where per-binding and per-call events leave the capture loop."""

    def binding(self, seen: BindingSeen) -> None: ...

    def call(self, snapshot: CallSnapshot) -> None: ...

    def encrypted(self, seen: EncryptedSignallingSeen) -> None: ...


class NullSink:
    """A sink that keeps nothing: for measuring the engine alone, and for fuzzing it."""

    def binding(self, seen: BindingSeen) -> None:
        pass

    def call(self, snapshot: CallSnapshot) -> None:
        pass

    def encrypted(self, seen: EncryptedSignallingSeen) -> None:
        pass


# What a QueuedSink's queue ends with when its sink is closed (None: it crosses pipes too).
STOP = None


class QueuedSink:
    """A Sink that queues what the engine hands it, for a thread of its own to take in
    batches: the engine never waits on what the events cost, only, when `capacity` events
    are waiting, for room (rather than lose a binding or a call)."""

    def __init__(self, capacity: int) -> None:
        self.events: queue.Queue = queue.Queue(maxsize=capacity)

    def binding(self, seen: BindingSeen) -> None:
        self.events.put(seen)

    def call(self, snapshot: CallSnapshot) -> None:
        self.events.put(snapshot)

    def encrypted(self, seen: EncryptedSignallingSeen) -> None:
        self.events.put(seen)

    def next_batch(self, limit: int) -> list:
        """What is queued now, in order, up to `limit` events (waiting for the first); STOP
        ends a batch."""
        batch = [self.events.get()]
        while len(batch) < limit and batch[-1] is not STOP:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        return batch


@dataclass
class EngineStats:
    packets: int = 0
    octets: int = 0
    rtp_packets: int = 0
    rtp_unmatched: int = 0
    sip_messages: int = 0
    sccp_messages: int = 0
    bindings: int = 0
    not_recorded: int = 0
    unsignalled_calls: int = 0
    rtp_relayed: int = 0
    # Copies a phone sends to a recorder for an SCCP recording fork (not a call's RTP).
    rtp_forked: int = 0
    rtp_after_end: int = 0
    # Packets a live capture's kernel ring dropped, as its tool counted them.
    capture_dropped: int = 0
    encrypted_signalling: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    # Trips of each flood cap (recorder/engine/floods.py), shown as alerts and in the stats lines.
    caps: Counter = field(default_factory=Counter)
