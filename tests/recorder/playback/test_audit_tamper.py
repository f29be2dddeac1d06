"""Nobody alters the audit trail (security audit, finding M4): not through Django's own
back doors (_base_manager, _raw_delete, _update), not with raw SQL on SQLite, not by
back-dating an entry, and on PostgreSQL not as the application's role of the two-role
set-up in docs/deployment.md, which may only INSERT and SELECT on the audit table.

The SQLite triggers are proved twice: through Django on a SQLite run, and, so that CI's
PostgreSQL run covers them too, with plain sqlite3 on a database `migrate` just built."""

from __future__ import annotations

import importlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, ProgrammingError, connection, transaction
from django.utils import timezone

from recorder.models import AppendOnlyError, AuditEntry

pytestmark = pytest.mark.django_db

ROOT = Path(settings.BASE_DIR)
MIGRATION = "recorder.migrations.0006_audit_append_only_everywhere"
INSERT = (
    "INSERT INTO recorder_auditentry (at, username, action, detail) VALUES (%s, %s, 'play', '{}')"
)


@pytest.fixture
def entry() -> AuditEntry:
    return AuditEntry.objects.create(username="sales-lead", action=AuditEntry.Action.PLAY)


def unchanged(entry: AuditEntry) -> bool:
    again = AuditEntry.objects.get(pk=entry.pk)
    return (again.username, again.action, again.at) == (entry.username, entry.action, entry.at)


# Django's back doors refuse, whatever the database. -------------------------------------------


def test_the_base_manager_refuses_to_update_or_delete(entry: AuditEntry) -> None:
    rows = AuditEntry._base_manager.filter(pk=entry.pk)
    with pytest.raises(AppendOnlyError):
        rows.update(username="nobody")
    with pytest.raises(AppendOnlyError):
        rows._update({AuditEntry._meta.get_field("username"): "nobody"})
    with pytest.raises(AppendOnlyError):
        rows._raw_delete(rows.db)
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(pk=entry.pk)._raw_delete("default")
    assert unchanged(entry)


def test_an_entry_saved_over_an_existing_id_is_refused(entry: AuditEntry) -> None:
    # Without force_insert Django would UPDATE the row that has this id.
    forged = AuditEntry(pk=entry.pk, username="nobody", action=AuditEntry.Action.SEARCH)
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert unchanged(entry)


def test_an_upsert_through_bulk_create_is_refused(entry: AuditEntry) -> None:
    forged = AuditEntry(pk=entry.pk, username="nobody", action=AuditEntry.Action.SEARCH)
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.bulk_create(
            [forged], update_conflicts=True, unique_fields=["id"], update_fields=["username"]
        )
    assert unchanged(entry)


@pytest.mark.parametrize(
    "at",
    [
        "2001-01-01",
        datetime(2001, 1, 1, tzinfo=UTC),
        timezone.now() - timedelta(hours=1),
        timezone.now() + timedelta(days=1),
    ],
    ids=["a date string", "2001", "an hour ago", "tomorrow"],
)
def test_a_back_dated_or_forward_dated_entry_is_refused(at: object) -> None:
    with pytest.raises(AppendOnlyError, match="as they happen"):
        AuditEntry.objects.create(username="forger", action=AuditEntry.Action.PLAY, at=at)
    with pytest.raises(AppendOnlyError, match="as they happen"):
        AuditEntry.objects.bulk_create([AuditEntry(username="forger", action="play", at=at)])
    assert not AuditEntry.objects.exists()
    # An entry dated now, by default or given, is written either way.
    AuditEntry.objects.bulk_create([AuditEntry(username="boss", action="search")])
    AuditEntry.objects.create(username="boss", action="search", at=timezone.now())
    assert AuditEntry.objects.filter(username="boss").count() == 2


# The database refuses too. ------------------------------------------------------------------


def test_postgresql_refuses_a_back_dated_insert_in_raw_sql(postgresql) -> None:
    back_dated = timezone.now() - timedelta(days=1)
    with (
        pytest.raises(IntegrityError, match="as they happen"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(INSERT, [back_dated, "forger"])
    with connection.cursor() as cursor:
        cursor.execute(INSERT, [timezone.now(), "boss"])
    assert list(AuditEntry.objects.values_list("username", flat=True)) == ["boss"]


@pytest.fixture
def on_sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip(
            "the SQLite triggers through Django need a SQLite run (no DATABASE_URL); "
            "test_a_migrated_sqlite_database_* cover them on every run"
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE recorder_auditentry SET username = 'nobody'",
        "UPDATE recorder_auditentry SET at = datetime(at, '-1 day') WHERE id = %s",
        "DELETE FROM recorder_auditentry WHERE id = %s",
        "DELETE FROM recorder_auditentry",
        "INSERT OR REPLACE INTO recorder_auditentry (id, at, username, action, detail) "
        "SELECT id, at, 'nobody', action, detail FROM recorder_auditentry WHERE id = %s",
    ],
)
def test_sqlite_refuses_changes_in_raw_sql(on_sqlite, entry: AuditEntry, statement: str) -> None:
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [entry.pk] if "%s" in statement else None)
    assert unchanged(entry)


def test_sqlite_refuses_a_back_dated_insert_in_raw_sql(on_sqlite) -> None:
    back_dated = timezone.now() - timedelta(days=1)
    with (
        pytest.raises(IntegrityError, match="as they happen"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(INSERT, [back_dated, "forger"])
    assert not AuditEntry.objects.exists()


# The SQLite triggers as migrate installs them, with plain sqlite3 (runs in CI too). ---------


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database built by `manage.py migrate`, as the embedded default is."""
    database = tmp_path_factory.mktemp("sqlite") / "qms.sqlite3"
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    environment["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=environment,
        check=True,
        timeout=300,
    )
    return database


@pytest.fixture
def plain_sqlite(migrated_sqlite: Path) -> Iterator[sqlite3.Connection]:
    database = sqlite3.connect(migrated_sqlite, isolation_level=None)
    database.execute("BEGIN")
    database.execute(
        "INSERT INTO recorder_auditentry (at, username, action, detail) "
        "VALUES (strftime('%Y-%m-%d %H:%M:%f', 'now'), 'sales-lead', 'play', '{}')"
    )
    try:
        yield database
    finally:
        database.execute("ROLLBACK")  # Each test starts from the one entry above.
        database.close()


def trail(database: sqlite3.Connection) -> list[tuple]:
    return database.execute("SELECT id, at, username, action FROM recorder_auditentry").fetchall()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE recorder_auditentry SET username = 'nobody'",
        "UPDATE recorder_auditentry SET at = '2001-01-01 00:00:00'",
        "DELETE FROM recorder_auditentry WHERE username = 'sales-lead'",
        "DELETE FROM recorder_auditentry",
        "REPLACE INTO recorder_auditentry (id, at, username, action, detail) "
        "SELECT id, at, 'nobody', action, detail FROM recorder_auditentry",
        "INSERT INTO recorder_auditentry (id, at, username, action, detail) "
        "SELECT id, at, 'nobody', action, detail FROM recorder_auditentry WHERE true "
        "ON CONFLICT (id) DO UPDATE SET username = excluded.username",
    ],
    ids=["update", "back-date", "delete one", "delete all", "replace", "upsert"],
)
def test_a_migrated_sqlite_database_refuses_changes(
    plain_sqlite: sqlite3.Connection, statement: str
) -> None:
    before = trail(plain_sqlite)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        plain_sqlite.execute(statement)
    assert trail(plain_sqlite) == before


@pytest.mark.parametrize(
    "at", ["2001-01-01 00:00:00", "+1 hour", "-2 minutes", "not a time"], ids=str
)
def test_a_migrated_sqlite_database_refuses_an_entry_not_dated_now(
    plain_sqlite: sqlite3.Connection, at: str
) -> None:
    value = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '{at}')" if at[0] in "+-" else f"'{at}'"
    before = trail(plain_sqlite)
    with pytest.raises(sqlite3.IntegrityError, match="as they happen"):
        plain_sqlite.execute(
            "INSERT INTO recorder_auditentry (at, username, action, detail) "
            f"VALUES ({value}, 'forger', 'play', '{{}}')"
        )
    assert trail(plain_sqlite) == before
    # One dated now, as Django writes it (UTC, without a zone, with microseconds), is taken.
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    plain_sqlite.execute(
        "INSERT INTO recorder_auditentry (at, username, action, detail) "
        "VALUES (?, 'boss', 'search', '{}')",
        [now],
    )
    assert [row[2] for row in trail(plain_sqlite)] == ["sales-lead", "boss"]


def test_the_triggers_can_be_lifted_and_restored_as_the_test_flush_does(
    plain_sqlite: sqlite3.Connection,
) -> None:
    # tests/conftest.py lifts them around Django's flush between transactional tests.
    triggers = importlib.import_module(MIGRATION)
    for statement in triggers.SQLITE_DROP_TRIGGERS:
        plain_sqlite.execute(statement)
    plain_sqlite.execute("DELETE FROM recorder_auditentry")
    for statement in triggers.SQLITE_TRIGGERS:
        plain_sqlite.execute(statement)
    plain_sqlite.execute(
        "INSERT INTO recorder_auditentry (at, username, action, detail) "
        "VALUES (strftime('%Y-%m-%d %H:%M:%f', 'now'), 'boss', 'search', '{}')"
    )
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        plain_sqlite.execute("DELETE FROM recorder_auditentry")
    assert [row[2] for row in trail(plain_sqlite)] == ["boss"]


# PostgreSQL, two roles: the application's may only INSERT and SELECT. ----------------------


def application_grants() -> str:
    """The grants block of docs/deployment.md, exactly as an operator runs it."""
    guide = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", guide, flags=re.DOTALL)
    grants = [block for block in blocks if "Run as qms_owner after every migrate" in block]
    assert len(grants) == 1, "docs/deployment.md must hold the application role's grants"
    return grants[0]


@pytest.fixture
def application_role(postgresql) -> Iterator[str]:
    """A fresh role given the guide's grants, by the tables' owner (this test's login)."""
    role = f"qms_app_test_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
        try:
            cursor.execute(re.sub(r"\bqms\b", role, application_grants()))
            yield role
        finally:
            cursor.execute("RESET ROLE")
            # Roles are the cluster's, not the test database's: leave none behind.
            cursor.execute(f"DROP OWNED BY {role}")
            cursor.execute(f"DROP ROLE {role}")


REFUSED_TO_THE_APPLICATION = [
    "UPDATE recorder_auditentry SET username = 'nobody'",
    "DELETE FROM recorder_auditentry",
    "TRUNCATE recorder_auditentry",
    "ALTER TABLE recorder_auditentry DISABLE TRIGGER USER",
    "ALTER TABLE recorder_auditentry DISABLE TRIGGER recorder_auditentry_append_only",
    "DROP TRIGGER recorder_auditentry_append_only ON recorder_auditentry",
    "DROP TABLE recorder_auditentry",
]


def test_the_application_role_inserts_and_reads_the_trail_and_nothing_more(
    application_role: str,
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {application_role}")
        written = AuditEntry.objects.create(username="sales-lead", action="play")
        assert AuditEntry.objects.get(pk=written.pk).username == "sales-lead"
        for statement in REFUSED_TO_THE_APPLICATION:
            with pytest.raises(ProgrammingError) as refused:
                cursor.execute(statement)
            assert refused.value.__cause__.pgcode == "42501", statement  # insufficient_privilege
        # Everything else is as usual for it.
        cursor.execute("UPDATE recorder_recording SET legal_hold = legal_hold")
        cursor.execute("DELETE FROM django_session WHERE expire_date < now()")
        cursor.execute("RESET ROLE")
    assert unchanged(written)
    assert AuditEntry.objects.count() == 1
