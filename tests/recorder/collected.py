"""A sink for the engine's tests: it keeps everything the engine hands it, in order."""

from __future__ import annotations

from integrations.observations import BindingSeen, CallEvent, EncryptedSignallingSeen
from recorder.engine.calls import CallSnapshot


class Collected:
    def __init__(self) -> None:
        self.bindings: list[BindingSeen] = []
        self.calls: list[CallSnapshot] = []
        self.encrypted_seen: list[EncryptedSignallingSeen] = []

    def binding(self, seen: BindingSeen) -> None:
        self.bindings.append(seen)

    def call(self, snapshot: CallSnapshot) -> None:
        self.calls.append(snapshot)

    def encrypted(self, seen: EncryptedSignallingSeen) -> None:
        self.encrypted_seen.append(seen)

    def events_of(self, call_id: str) -> list[CallEvent]:
        """What happened to one call, in order."""
        return [snapshot.event for snapshot in self.calls if snapshot.call_id == call_id]

    def snapshots(self, event: CallEvent) -> list[CallSnapshot]:
        """Every call's snapshot of one kind, in order."""
        return [snapshot for snapshot in self.calls if snapshot.event == event]
