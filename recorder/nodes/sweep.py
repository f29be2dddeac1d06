"""The stale-call sweep (celery beat): calls that no capture follows any more are ended.

A sniffer ends the calls it follows itself: a call whose media and signalling fall silent
past the engine's timeouts ends as "media-timeout", and every call still live when the
sniffer stops ends as "capture-ended". A call row can still be left open when its sniffer
died, or its whole node did, before the end reached the database. Such a row is stale when:

- its node's interfaces all heartbeat, their outboxes are empty (every event captured is
  applied, including the spools the restarted sniffer recovered) and no sniffer of the
  node has run since before the call started: no engine knows the call; or
- it started longer ago than any call can last (QMS_MAX_CALL_SECONDS splits longer ones),
  whatever its node, including nodes of `manage.py sniff` that no capture worker runs.

Stale calls are ended as "stale" at their last signalling moment (answered, else started).
Their audio, if any was spooled, was finished by the recovery of the restarted sniffer.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Coalesce

from recorder.models import Call
from recorder.nodes.models import CaptureInterface

log = logging.getLogger(__name__)

# Added to QMS_MAX_CALL_SECONDS: the engine's longest silence before it ends a call.
LONGEST_SILENCE = timedelta(minutes=10)


def interfaces_by_node() -> dict[str, list[CaptureInterface]]:
    found = defaultdict(list)
    for row in CaptureInterface.objects.all():
        found[row.node].append(row)
    return found


def reports_everything(rows: list[CaptureInterface], now: datetime) -> bool:
    """Every enabled interface heartbeats and runs, and no outbox holds events back."""
    fresh = now - timedelta(seconds=settings.QMS_CAPTURE_LEASE_SECONDS)
    for row in rows:
        if row.outbox_backlog:
            return False
        if row.enabled and not (row.running and row.heartbeat_at and row.heartbeat_at >= fresh):
            return False
    return True


def stale_before(rows: list[CaptureInterface], now: datetime) -> datetime | None:
    """Open calls of the node that started before this are followed by no sniffer; None
    when that cannot be told now."""
    longest = now - timedelta(seconds=settings.QMS_MAX_CALL_SECONDS) - LONGEST_SILENCE
    if not rows:
        return longest
    if not reports_everything(rows, now):
        return longest
    running = [row.running_since for row in rows if row.running and row.running_since]
    return max(min(running, default=now), longest)


def end_stale_calls(now: datetime) -> int:
    """End the stale calls; returns how many."""
    open_calls = Call.objects.exclude(state=Call.State.ENDED)
    nodes = set(open_calls.values_list("node", flat=True).distinct())
    interfaces = interfaces_by_node()
    stale = Q(pk__in=[])
    for node in nodes:
        before = stale_before(interfaces.get(node, []), now)
        stale |= Q(node=node, started_at__lt=before)
    ended = open_calls.filter(stale).update(
        state=Call.State.ENDED,
        end_reason="stale",
        ended_at=Coalesce(F("answered_at"), F("started_at")),
    )
    if ended:
        log.warning("%d call(s) no capture follows any more ended as stale", ended)
    return ended
