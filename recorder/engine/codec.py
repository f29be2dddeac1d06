"""The engine's observations as JSON, and back: written once for every place they are kept.

A sniffer writes them to its outbox (recorder/sinks/outbox.py) and the node's worker reads
them back to apply them (recorder/tasks.py); a Call row keeps its media offers in
`Call.media` (recorder/sinks/database.py), from which a recording is finished
(recorder/recordings/finish.py). Each shape is a TypedDict, so what crosses the outbox,
the broker and the database is written down. Pure: no Django.

Readers take what older writers wrote: a key added since (a binding's `authority`, an
offer's `mode`) may be missing and takes the observation's default.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import NotRequired, TypedDict

from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallEvent,
    EncryptedSignallingSeen,
    Endpoint,
    MediaOffer,
    Side,
)
from recorder.engine.calls import CallSnapshot


class BindingJson(TypedDict):
    """A BindingSeen: an extension seen at a phone IP."""

    extension: str
    ip: str
    source: str  # a BindingSource value
    seen_at: str  # ISO 8601, with its offset
    expires_in: NotRequired[int | None]
    unregister: NotRequired[bool]
    device: NotRequired[str]
    line_number: NotRequired[int | None]
    aliases: NotRequired[list[str]]
    authority: NotRequired[str]


class MediaJson(TypedDict):
    """A MediaOffer: where one side of a call receives RTP. An item of `Call.media`."""

    side: str  # a Side value
    ip: str
    port: int
    payload_types: NotRequired[list[list[int | str]]]  # [[0, "PCMU/8000"], ...]
    mode: NotRequired[str]
    encrypted: NotRequired[bool]


class SnapshotJson(TypedDict):
    """A CallSnapshot: a live call as it stands after one event."""

    call_id: str
    protocol: str  # a CallProtocol value
    event: str  # a CallEvent value
    started_at: float
    answered_at: float | None
    ended_at: float | None
    end_reason: str
    state: str  # a CallState value
    direction: str  # a CallDirection value ("" when unknown)
    caller: str
    caller_name: str
    callee: str
    callee_name: str
    caller_ip: str
    callee_ip: str
    local_ip: str
    local_number: str
    media: list[MediaJson]
    spool: NotRequired[str]
    local_side: NotRequired[str | None]  # a Side value
    conversation_id: NotRequired[str]
    capture_dropped: NotRequired[int]
    hep_capture_id: NotRequired[int | None]


class EncryptedJson(TypedDict):
    """An EncryptedSignallingSeen: a phone talking to its call system over TLS."""

    ip: str
    protocol: str
    seen_at: str  # ISO 8601, with its offset


def binding_json(seen: BindingSeen) -> BindingJson:
    found = {field.name: getattr(seen, field.name) for field in fields(seen)}
    found["source"] = str(seen.source)
    found["seen_at"] = seen.seen_at.isoformat()
    found["aliases"] = list(seen.aliases)
    return BindingJson(**found)


def binding_from_json(found: BindingJson) -> BindingSeen:
    values = dict(found)
    values["source"] = BindingSource(found["source"])
    values["seen_at"] = datetime.fromisoformat(found["seen_at"])
    values["aliases"] = tuple(found.get("aliases", ()))
    return BindingSeen(**values)


def media_json(offer: MediaOffer) -> MediaJson:
    return {
        "side": str(offer.side),
        "ip": offer.receive_at.ip,
        "port": offer.receive_at.port,
        "payload_types": [list(pair) for pair in offer.payload_types],
        "mode": offer.mode,
        "encrypted": offer.encrypted,
    }


def media_from_json(media: list[MediaJson]) -> tuple[MediaOffer, ...]:
    """The media offers a Call row or an outbox event kept, back as observations."""
    return tuple(
        MediaOffer(
            Side(item["side"]),
            Endpoint(item["ip"], item["port"]),
            tuple((int(pt), str(name)) for pt, name in item.get("payload_types", [])),
            item.get("mode", "sendrecv"),
            item.get("encrypted", False),
        )
        for item in media
    )


def snapshot_json(snapshot: CallSnapshot) -> SnapshotJson:
    found = {field.name: getattr(snapshot, field.name) for field in fields(snapshot)}
    for name in ("protocol", "event", "state", "direction"):
        found[name] = str(getattr(snapshot, name))
    found["media"] = [media_json(offer) for offer in snapshot.media]
    found["local_side"] = str(snapshot.local_side) if snapshot.local_side else None
    return SnapshotJson(**found)


def snapshot_from_json(found: SnapshotJson) -> CallSnapshot:
    values = dict(found)
    # The protocol, state and direction stay the text they were written as: a StrEnum member
    # equals its string, so the snapshot is the same, and a word some other writer used still
    # reads and reaches its row as it came.
    values["event"] = CallEvent(found["event"])
    values["media"] = media_from_json(found["media"])
    values["local_side"] = Side(found["local_side"]) if found.get("local_side") else None
    return CallSnapshot(**values)


def encrypted_json(seen: EncryptedSignallingSeen) -> EncryptedJson:
    return {"ip": seen.ip, "protocol": seen.protocol, "seen_at": seen.seen_at.isoformat()}


def encrypted_from_json(found: EncryptedJson) -> EncryptedSignallingSeen:
    return EncryptedSignallingSeen(
        found["ip"], found["protocol"], datetime.fromisoformat(found["seen_at"])
    )
