"""Where the engine's events go (Sink), and what it counts on the way (EngineStats)."""

from __future__ import annotations

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
