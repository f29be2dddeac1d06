"""What capture could not keep: caps that tripped (CaptureAlert, counted per node and
kind) and events the database would not take (ParkedEvent, one row each)."""

from __future__ import annotations

import logging
from dataclasses import fields, is_dataclass
from datetime import datetime

from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from integrations.bounds import clean_text
from recorder.nodes.models import CaptureAlert, ParkedEvent

log = logging.getLogger(__name__)


def note_alert(
    node: str, kind: str, message: str, count: int = 1, at: datetime | None = None
) -> None:
    """Add `count` trips of the cap `kind` on `node`; the newest message is kept."""
    if count <= 0:
        return
    at = at or timezone.now()
    with transaction.atomic():
        updated = CaptureAlert.objects.filter(node=node, kind=kind).update(
            count=F("count") + count, last_at=at, message=message[:500]
        )
        if not updated:
            _, created = CaptureAlert.objects.get_or_create(
                node=node,
                kind=kind,
                defaults={"message": message[:500], "count": count, "first_at": at, "last_at": at},
            )
            if not created:
                CaptureAlert.objects.filter(node=node, kind=kind).update(
                    count=F("count") + count, last_at=at, message=message[:500]
                )


def park(kind: str, subject: str, reason: object, event: object = None, node: str = "") -> None:
    """Keep an event the database would not take, with why (ParkedEvent).

    Called after the event's own savepoint was rolled back, inside the caller's
    transaction: a savepoint of its own, so that parking never spoils what goes on."""
    try:
        with transaction.atomic():
            ParkedEvent.objects.create(
                kind=kind,
                subject=clean_text(subject, 255),
                reason=clean_text(_reason_text(reason), 500),
                event=storable(event),
                node=clean_text(node, 100),
            )
    except DatabaseError as error:
        log.error("could not park %s %s (%s): %s", kind, subject, reason, error)


def _reason_text(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}".strip().rstrip(":")
    return str(reason)


def storable(value: object, depth: int = 0) -> object:
    """`value` as JSON every database stores: dataclasses and mappings as objects, text
    cleaned and cut (jsonb refuses NUL), anything else as its text."""
    if depth > 6:
        return "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return clean_text(value, 2000)
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        value = {item.name: getattr(value, item.name) for item in fields(value)}
    if isinstance(value, dict):
        return {clean_text(key, 100): storable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [storable(item, depth + 1) for item in list(value)[:100]]
    return clean_text(value, 2000)
