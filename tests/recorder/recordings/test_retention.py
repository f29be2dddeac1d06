"""Retention: recordings past their days are deleted, file and row, each with an audit
entry by QMS itself; teams override the global days; a legal hold is never deleted."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from extensions.models import Agent, Team
from qms.celery import app as celery_app
from recorder.models import AuditEntry, Recording, recordings_storage
from recorder.recordings.retention import RETENTION_USERNAME
from recorder.tasks import purge_expired_recordings

pytestmark = pytest.mark.django_db


def recording(days_old: float, agent: Agent | None = None, **fields: object) -> Recording:
    started = timezone.now() - timedelta(days=days_old)
    made = Recording.objects.create(
        call_id=f"call-{Recording.objects.count()}", started_at=started, agent=agent,
        extension="9001", status=Recording.Status.COMPLETE, sha256="ab" * 32, **fields,
    )  # fmt: skip
    made.file.save(f"{started:%Y/%m/%d}/{made.pk:08d}.wav", ContentFile(b"RIFF audio"))
    return made


def agent_in(*teams: Team, name: str = "John") -> Agent:
    agent = Agent.objects.create(name=name)
    agent.teams.set(teams)
    return agent


def purge(dry_run: bool = False) -> str:
    out = io.StringIO()
    call_command("purge_recordings", *(["--dry-run"] if dry_run else []), stdout=out)
    return out.getvalue()


def kept() -> set[int]:
    return set(Recording.objects.values_list("pk", flat=True))


def test_a_recording_past_the_global_retention_goes_with_its_file_and_leaves_an_audit_entry(
    settings,
) -> None:
    settings.QMS_RETENTION_DAYS = 30
    old, young = recording(31), recording(29)
    name = old.file.name
    assert recordings_storage().exists(name)

    output = purge()

    assert kept() == {young.pk}
    assert not recordings_storage().exists(name)
    assert recordings_storage().exists(young.file.name)
    (entry,) = AuditEntry.objects.all()
    assert (entry.user, entry.username, entry.action) == (None, RETENTION_USERNAME, "purge")
    assert entry.recording_id == old.pk
    assert (entry.detail["file"], entry.detail["retention_days"]) == (name, 30)
    assert f"deleted recording {old.pk} " in output
    assert "1 recording(s) deleted." in output


def test_zero_days_keeps_recordings_forever(settings) -> None:
    settings.QMS_RETENTION_DAYS = 0
    ancient = recording(3650)
    assert "0 recording(s) deleted." in purge()
    assert kept() == {ancient.pk}


def test_a_team_keeps_its_agents_recordings_for_its_own_days_either_way(settings) -> None:
    settings.QMS_RETENTION_DAYS = 30
    sales = agent_in(Team.objects.create(name="Sales", retention_days=7), name="Sally")
    legal = agent_in(Team.objects.create(name="Legal", retention_days=365), name="Lee")
    loner = agent_in(name="Lou")
    sales_old, sales_young = recording(8, sales), recording(6, sales)
    legal_old = recording(100, legal)
    loner_old = recording(31, loner)
    nobody_old = recording(31)

    purge()

    assert kept() == {sales_young.pk, legal_old.pk}
    assert {entry.recording_id for entry in AuditEntry.objects.all()} == {
        sales_old.pk,
        loner_old.pk,
        nobody_old.pk,
    }


def test_a_team_with_zero_days_keeps_its_recordings_whatever_the_global_days(settings) -> None:
    settings.QMS_RETENTION_DAYS = 30
    archive = agent_in(Team.objects.create(name="Archive", retention_days=0))
    forever = recording(400, archive)
    purge()
    assert kept() == {forever.pk}


def test_an_agent_in_two_teams_keeps_recordings_for_the_longer_period(settings) -> None:
    settings.QMS_RETENTION_DAYS = 365
    both = agent_in(
        Team.objects.create(name="Short", retention_days=7),
        Team.objects.create(name="Long", retention_days=90),
    )
    past_both, within_long = recording(91, both), recording(30, both)
    purge()
    assert kept() == {within_long.pk}
    assert AuditEntry.objects.get().recording_id == past_both.pk


def test_a_recording_on_legal_hold_is_never_deleted(settings) -> None:
    settings.QMS_RETENTION_DAYS = 1
    held = recording(3650, legal_hold=True)
    name = held.file.name

    purge()

    assert kept() == {held.pk}
    assert recordings_storage().exists(name)
    assert not AuditEntry.objects.exists()


def test_a_dry_run_lists_what_would_go_and_deletes_nothing(settings) -> None:
    settings.QMS_RETENTION_DAYS = 30
    old = recording(31)

    output = purge(dry_run=True)

    assert f"would delete recording {old.pk} " in output
    assert "1 recording(s) would be deleted." in output
    assert kept() == {old.pk}
    assert recordings_storage().exists(old.file.name)
    assert not AuditEntry.objects.exists()


def test_a_file_that_cannot_be_deleted_outlives_its_row_never_the_reverse(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.QMS_RETENTION_DAYS = 30
    old = recording(31)
    name = old.file.name
    storage = recordings_storage()

    def refuses(path: str) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(storage, "delete", refuses)
    purge()

    assert not Recording.objects.filter(pk=old.pk).exists()
    assert storage.exists(name)  # an orphan file, named by the audit entry
    assert AuditEntry.objects.get().detail["file"] == name


def test_the_beat_task_purges_as_the_command_does(settings) -> None:
    settings.QMS_RETENTION_DAYS = 30
    recording(31)
    recording(45)
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        assert purge_expired_recordings.delay().get() == 2
    finally:
        celery_app.conf.task_always_eager = before
    assert not Recording.objects.exists()
    assert AuditEntry.objects.filter(action="purge").count() == 2


# One team's trouble never stops another team's deletions (audit M5) -----------------------


def test_a_team_kept_millions_of_days_keeps_everything_and_other_teams_are_still_purged(
    settings,
) -> None:
    settings.QMS_RETENTION_DAYS = 30
    support = Team.objects.create(name="Support", retention_days=365)
    sally = agent_in(Team.objects.create(name="Sales", retention_days=1), name="Sally")
    sue = agent_in(support, name="Sue")
    # Stored before the model had a bound: an UPDATE, as an old database may hold it.
    Team.objects.filter(pk=support.pk).update(retention_days=3_000_000)
    sales_old, support_ancient = recording(2, sally), recording(36_500, sue)

    output = purge()

    assert kept() == {support_ancient.pk}
    assert f"deleted recording {sales_old.pk} " in output
    assert "1 recording(s) deleted." in output


@pytest.mark.parametrize("days", [3_000_000, 10**21])
def test_a_global_retention_of_millions_of_days_keeps_everything_and_teams_are_still_purged(
    settings, days: int
) -> None:
    settings.QMS_RETENTION_DAYS = days
    sally = agent_in(Team.objects.create(name="Sales", retention_days=1), name="Sally")
    sales_old, nobody_ancient = recording(2, sally), recording(36_500)

    purge()

    assert kept() == {nobody_ancient.pk}
    assert AuditEntry.objects.get().recording_id == sales_old.pk


def refuse_deleting(recording_id: int) -> None:
    """A real database error for one recording's deletion: a trigger that refuses it."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION qms_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'held by the test'; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER qms_test_refuse BEFORE DELETE ON recorder_recording FOR EACH ROW "
                f"WHEN (OLD.id = {int(recording_id)}) EXECUTE FUNCTION qms_test_refuse()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER qms_test_refuse BEFORE DELETE ON recorder_recording "
                f"WHEN OLD.id = {int(recording_id)} BEGIN SELECT RAISE(ABORT, 'held by the test'); "
                "END"
            )


def test_a_team_whose_purge_fails_is_reported_and_every_other_team_is_still_purged(
    settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.QMS_RETENTION_DAYS = 30
    support = agent_in(Team.objects.create(name="Support", retention_days=7), name="Sue")
    sally = agent_in(Team.objects.create(name="Sales", retention_days=1), name="Sally")
    stuck = recording(8, support)
    sales_old, nobody_old = recording(2, sally), recording(31)
    refuse_deleting(stuck.pk)

    with pytest.raises(CommandError, match=r"retention failed for team Support \(7 days\)"):
        purge()

    assert kept() == {stuck.pk}
    assert {entry.recording_id for entry in AuditEntry.objects.all()} == {
        sales_old.pk,
        nobody_old.pk,
    }
    assert "retention of team Support (7 days) failed" in caplog.text
