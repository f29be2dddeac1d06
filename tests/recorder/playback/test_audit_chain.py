"""The audit trail is hash-chained, and `manage.py verify_audit` finds every entry changed,
deleted or inserted behind the application's back (issue 16, section 3), on PostgreSQL and
on SQLite. The tampering is done as the database's owner would: triggers lifted, then plain
SQL."""

from __future__ import annotations

import importlib
import io
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from recorder.lib.audit_chain import GENESIS
from recorder.models import AuditEntry

ROOT = Path(__file__).resolve().parents[3]


def write(count: int, prefix: str = "supervisor") -> list[AuditEntry]:
    details = [{"range": "bytes=0-99"}, {"filters": {"extension": "9001", "status": ["a", "b"]}},
               {"text": "naïve ☎ \u2028"}, {}]  # fmt: skip
    ips = ["203.0.113.7", "2001:db8::1", None, "::ffff:198.51.100.2"]
    return [
        AuditEntry.objects.create(
            username=f"{prefix}-{n}", action="play", client_ip=ips[n % 4], detail=details[n % 4]
        )
        for n in range(count)
    ]


def verified() -> tuple[bool, list[str]]:
    out = io.StringIO()
    try:
        call_command("verify_audit", stdout=out)
    except CommandError:
        return False, out.getvalue().splitlines()
    return True, out.getvalue().splitlines()


@pytest.fixture
def as_owner(postgresql: None) -> Iterator[None]:
    """The audit table's triggers lifted, as its owner can; back on afterwards."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE recorder_auditentry DISABLE TRIGGER USER")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE recorder_auditentry ENABLE TRIGGER USER")


def sql(statement: str, *parameters: object) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, parameters)


def test_each_entry_carries_the_hash_of_the_one_before_and_the_chain_verifies(
    postgresql: None,
) -> None:
    entries = write(8)
    assert entries[0].previous_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.previous_hash == before.entry_hash != after.entry_hash
    ok, lines = verified()
    assert ok, lines
    assert lines[0] == "audit trail: 8 entries"
    assert lines[1].startswith(f"the chain holds; its head is entry {entries[-1].pk}, ")
    assert entries[-1].entry_hash in lines[1]


def test_an_entry_changed_in_the_database_is_named(as_owner: None) -> None:
    entries = write(5)
    sql("UPDATE recorder_auditentry SET username = 'someone-else' WHERE id = %s", entries[2].pk)
    ok, lines = verified()
    assert not ok
    assert lines[0] == f"entry {entries[2].pk}: was changed after it was written"
    assert len(lines) == 2  # that problem alone, then the count


def test_a_detail_or_a_time_changed_is_named_too(as_owner: None) -> None:
    entries = write(4)
    sql("UPDATE recorder_auditentry SET detail = '{\"range\": \"bytes=0-1\"}' WHERE id = %s",
        entries[0].pk)  # fmt: skip
    sql("UPDATE recorder_auditentry SET at = at - interval '1 hour' WHERE id = %s", entries[3].pk)
    ok, lines = verified()
    assert not ok
    assert lines[:2] == [
        f"entry {entries[0].pk}: was changed after it was written",
        f"entry {entries[3].pk}: was changed after it was written",
    ]


def test_an_entry_deleted_from_the_middle_is_found_at_the_one_after_it(as_owner: None) -> None:
    entries = write(5)
    sql("DELETE FROM recorder_auditentry WHERE id = %s", entries[1].pk)
    ok, lines = verified()
    assert not ok
    assert lines[0] == (
        f"entry {entries[2].pk}: does not follow the entry before it: an entry was deleted "
        "or inserted before it"
    )


def test_entries_cut_from_the_end_are_found_by_the_chains_head(as_owner: None) -> None:
    entries = write(5)
    sql("DELETE FROM recorder_auditentry WHERE id >= %s", entries[3].pk)
    ok, lines = verified()
    assert not ok
    assert lines[0] == (
        f"entry {entries[4].pk}: is the last entry the chain's head names, but the trail ends "
        f"at entry {entries[2].pk}: entries at the end were deleted or added"
    )


def test_an_entry_inserted_around_the_application_is_named(postgresql: None) -> None:
    """An INSERT the triggers allow (dated now), as the application's role could send."""
    entries = write(3)
    sql("INSERT INTO recorder_auditentry (at, username, action, detail) "
        "VALUES (clock_timestamp(), 'forger', 'play', '{}')")  # fmt: skip
    write(1, "later")
    forged = AuditEntry.objects.get(username="forger")
    ok, lines = verified()
    assert not ok
    assert f"entry {forged.pk}: has no hash: inserted around the application" in lines
    assert entries[-1].entry_hash  # the entries before it are untouched


def test_entries_from_before_the_chain_are_counted_and_not_blamed(postgresql: None) -> None:
    sql("INSERT INTO recorder_auditentry (at, username, action, detail) "
        "VALUES (clock_timestamp(), 'old', 'play', '{}')")  # fmt: skip
    write(2)
    ok, lines = verified()
    assert ok, lines
    assert lines[0] == "audit trail: 3 entries; 1 written before the chain began, not covered"


def test_writers_at_the_same_moment_each_take_their_turn_in_the_chain(postgresql: None) -> None:
    def writer(number: int) -> None:
        try:
            write(15, f"writer{number}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok, lines = verified()
    assert ok, lines
    assert lines[0] == "audit trail: 60 entries"


# SQLite, the embedded default: a database built by `manage.py migrate`. -------------------


def manage(database: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{database}",
                   "DJANGO_SETTINGS_MODULE": "tests.settings"}  # fmt: skip
    return subprocess.run([sys.executable, "manage.py", *arguments], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


WRITE_ENTRIES = (
    "from recorder.models import AuditEntry\n"
    "for n in range(4):\n"
    "    AuditEntry.objects.create(username=f'lead-{n}', action='play', client_ip='2001:db8::7',"
    " detail={'range': f'bytes={n}-99'})\n"
)


def test_the_chain_verifies_and_finds_a_change_on_sqlite(tmp_path: Path) -> None:
    database = tmp_path / "qms.sqlite3"
    assert manage(database, "migrate", "--noinput", "-v", "0").returncode == 0
    assert manage(database, "shell", "-c", WRITE_ENTRIES).returncode == 0
    found = manage(database, "verify_audit")
    assert found.returncode == 0, found.stdout + found.stderr
    assert found.stdout.splitlines()[0] == "audit trail: 4 entries"

    triggers = importlib.import_module("recorder.migrations.0006_audit_append_only_everywhere")
    plain = sqlite3.connect(database, isolation_level=None)
    for statement in triggers.SQLITE_DROP_TRIGGERS:
        plain.execute(statement)
    plain.execute("UPDATE recorder_auditentry SET username = 'nobody' WHERE username = 'lead-1'")
    (changed,) = plain.execute("SELECT id FROM recorder_auditentry WHERE username = 'nobody'")
    plain.close()
    found = manage(database, "verify_audit")
    assert found.returncode == 1
    assert found.stdout.splitlines()[0] == f"entry {changed[0]}: was changed after it was written"
    assert "the audit trail does not verify: 1 problem(s) above" in found.stderr
