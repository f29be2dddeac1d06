"""Retention: recordings past their retention are deleted, file and row, each audited.

How long a recording is kept (docs/retention.md):

- QMS_RETENTION_DAYS for every recording; 0 keeps recordings forever;
- a team's retention_days, when set, for the recordings of its agents instead (0: forever);
  an agent in several teams keeps a recording for the longest of its teams' periods, as a
  deletion cannot be undone;
- a recording on legal hold is never deleted, whatever its age.

Each recording is deleted in a transaction of its own: its row is locked (and its hold
read again), an AuditEntry "purge" by QMS itself is written and the row deleted; once that
has committed, the file is deleted from storage. A crash in between leaves a file that no
row points to (the audit entry names it), never a row whose file is gone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet

from extensions.models import Agent
from recorder.models import AuditEntry, Recording, recordings_storage

log = logging.getLogger(__name__)

RETENTION_USERNAME = "qms retention"


@dataclass(frozen=True)
class RetentionRules:
    """Days recordings are kept (None: forever): by default, and for each agent in a team."""

    default_days: int | None
    agent_days: dict[int, int | None]

    def days_for(self, agent_id: int | None) -> int | None:
        return self.agent_days.get(agent_id, self.default_days)


def longest(first: int | None, second: int | None) -> int | None:
    return None if first is None or second is None else max(first, second)


def retention_rules() -> RetentionRules:
    default = settings.QMS_RETENTION_DAYS or None
    agent_days: dict[int, int | None] = {}
    memberships = Agent.teams.through.objects.values_list("agent_id", "team__retention_days")
    for agent_id, team_days in memberships:
        days = default if team_days is None else (team_days or None)
        agent_days[agent_id] = longest(agent_days.get(agent_id, 0), days)
    return RetentionRules(default, agent_days)


def expired_recordings(now: datetime, rules: RetentionRules | None = None) -> QuerySet:
    """Recordings past their retention at `now`, legal holds excluded."""
    rules = rules or retention_rules()
    by_days: dict[int | None, list[int]] = defaultdict(list)
    for agent_id, days in rules.agent_days.items():
        by_days[days].append(agent_id)
    expired = Q(pk__in=[])
    for days, agents in by_days.items():
        if days is not None:
            expired |= Q(agent_id__in=agents, started_at__lt=now - timedelta(days=days))
    if rules.default_days is not None:
        cutoff = now - timedelta(days=rules.default_days)
        expired |= Q(started_at__lt=cutoff) & ~Q(agent_id__in=list(rules.agent_days))
    return Recording.objects.filter(expired, legal_hold=False).order_by("started_at", "pk")


@dataclass(frozen=True)
class Purged:
    recording_id: int
    started_at: datetime
    extension: str
    file_name: str
    retention_days: int


def purge_expired(now: datetime, dry_run: bool = False) -> list[Purged]:
    """Delete every expired recording (or, with dry_run, only say which)."""
    rules = retention_rules()
    purged = []
    for recording in expired_recordings(now, rules).iterator(chunk_size=500):
        days = rules.days_for(recording.agent_id)
        found = Purged(
            recording.pk, recording.started_at, recording.extension, recording.file.name, days
        )
        if dry_run or purge_one(found):
            purged.append(found)
    return purged


def purge_one(found: Purged) -> bool:
    """Delete one recording, row then file; False when it was held or deleted meanwhile."""
    with transaction.atomic():
        recording = (
            Recording.objects.select_for_update()
            .filter(pk=found.recording_id, legal_hold=False)
            .first()
        )
        if recording is None:
            return False
        name = recording.file.name
        AuditEntry.objects.create(
            user=None,
            username=RETENTION_USERNAME,
            action=AuditEntry.Action.PURGE,
            recording_id=recording.pk,
            detail={
                "file": name,
                "sha256": recording.sha256,
                "started_at": recording.started_at.isoformat(),
                "extension": recording.extension,
                "agent_id": recording.agent_id,
                "retention_days": found.retention_days,
            },
        )
        recording.delete()
    if name:
        delete_file(name)
    return True


def delete_file(name: str) -> None:
    try:
        recordings_storage().delete(name)
    except OSError as error:
        log.error("recording file %s outlived its row (%s): delete it by hand", name, error)
