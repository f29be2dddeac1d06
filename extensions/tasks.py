"""Periodic directory upkeep, run by celery beat (or in-process without a broker)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from extensions.services import expire_bindings


@shared_task(name="extensions.tasks.expire_stale_bindings", acks_late=True, ignore_result=True)
def expire_stale_bindings() -> int:
    """Close bindings whose registration lifetime has passed without a refresh."""
    return expire_bindings(timezone.now())
