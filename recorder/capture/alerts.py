"""Capture alerts: a cap that tripped, counted per node and kind (CaptureAlert)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from recorder.capture.models import CaptureAlert


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
