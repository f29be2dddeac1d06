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
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet

from extensions.models import Agent, Team
from recorder.models import AuditEntry, Recording, recordings_storage
from recorder.recordings.archive import STORAGE_ERRORS

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


@dataclass(frozen=True)
class RetentionScope:
    """The recordings one retention period applies to: those of `agent_ids`, or, when it
    is None, those of no agent or of an agent in no team (QMS_RETENTION_DAYS)."""

    label: str
    days: int
    agent_ids: tuple[int, ...] | None


def retention_scopes(rules: RetentionRules) -> list[RetentionScope]:
    """One scope per period: each is purged on its own, so one team's trouble never
    stops another team's deletions."""
    by_days: dict[int, list[int]] = defaultdict(list)
    for agent_id, days in rules.agent_days.items():
        if days is not None:
            by_days[days].append(agent_id)
    scopes = [
        RetentionScope(_teams_label(agents, days), days, tuple(sorted(agents)))
        for days, agents in sorted(by_days.items())
    ]
    if rules.default_days is not None:
        scopes.append(RetentionScope("recordings of no team", rules.default_days, None))
    return scopes


def _teams_label(agent_ids: list[int], days: int) -> str:
    names = Team.objects.filter(agents__in=agent_ids, retention_days=days).values_list(
        "name", flat=True
    )
    teams = ", ".join(sorted(set(names))) or "teams on QMS_RETENTION_DAYS"
    return f"team {teams}"


def cutoff(now: datetime, days: int) -> datetime | None:
    """The moment before which a recording kept `days` days has expired; None when that
    moment is before the first one a datetime can hold, so no recording is old enough
    (a period of millions of days keeps everything, it does not crash the purge)."""
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return None


def scope_recordings(scope: RetentionScope, now: datetime, rules: RetentionRules) -> QuerySet:
    """The recordings of `scope` past its period at `now`, legal holds excluded."""
    moment = cutoff(now, scope.days)
    if moment is None:
        return Recording.objects.none()
    if scope.agent_ids is None:
        mine = ~Q(agent_id__in=list(rules.agent_days))
    else:
        mine = Q(agent_id__in=scope.agent_ids)
    return Recording.objects.filter(mine, started_at__lt=moment, legal_hold=False).order_by(
        "started_at", "pk"
    )


def expired_recordings(now: datetime, rules: RetentionRules | None = None) -> QuerySet:
    """Recordings past their retention at `now`, legal holds excluded."""
    rules = rules or retention_rules()
    expired = Recording.objects.none()
    for scope in retention_scopes(rules):
        expired |= scope_recordings(scope, now, rules)
    return expired.order_by("started_at", "pk")


@dataclass(frozen=True)
class Purged:
    recording_id: int
    started_at: datetime
    extension: str
    file_name: str
    retention_days: int


@dataclass
class PurgeReport:
    """What a purge deleted (or, dry, would delete), and the scopes it could not finish."""

    purged: list[Purged] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def purge_expired(now: datetime, dry_run: bool = False) -> PurgeReport:
    """Delete every expired recording (or, with dry_run, only say which), scope by scope."""
    rules = retention_rules()
    report = PurgeReport()
    for scope in retention_scopes(rules):
        # The loop's edge: one scope's error is logged and counted, the others still run.
        try:
            purge_scope(scope, now, rules, dry_run, report.purged)
        except Exception as error:
            log.exception("retention of %s (%d days) failed", scope.label, scope.days)
            report.failures.append(f"{scope.label} ({scope.days} days): {error}")
    return report


def purge_scope(
    scope: RetentionScope,
    now: datetime,
    rules: RetentionRules,
    dry_run: bool,
    purged: list[Purged],
) -> None:
    for recording in scope_recordings(scope, now, rules).iterator(chunk_size=500):
        found = Purged(
            recording.pk, recording.started_at, recording.extension, recording.file.name,
            scope.days,
        )  # fmt: skip
        if dry_run or purge_one(found):
            purged.append(found)


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
    # A storage that fails here (a disk, a bucket out of reach) leaves the file behind its
    # row, logged, and the purge goes on with the next recording.
    try:
        recordings_storage().delete(name)
    except STORAGE_ERRORS as error:
        log.error("recording file %s outlived its row (%s): delete it by hand", name, error)
