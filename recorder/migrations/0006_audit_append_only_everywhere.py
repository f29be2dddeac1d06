"""Audit entries are append-only in the database on SQLite too, and written as they happen.

Migration 0002 gave PostgreSQL a trigger refusing UPDATE and DELETE; SQLite (the embedded
default) had none, so raw SQL or Django's internal paths could change the trail (security
audit, finding M4). Here:

- SQLite: triggers refusing UPDATE, DELETE, an INSERT over an existing entry (INSERT OR
  REPLACE deletes the old row without firing DELETE triggers), and an INSERT whose `at` is
  not now;
- PostgreSQL: a trigger refusing an INSERT whose `at` is not now (clock_timestamp(), not
  the transaction's start);
- the model's base manager becomes the append-only one.

"Now" is within WRITTEN_NOW_SECONDS of the database's clock: the application's hosts may
keep a slightly different time. The model itself allows 5 seconds of its own clock.

A trigger is only as strong as the role's rights: a table's owner can drop it (and, on
PostgreSQL, disable it). docs/deployment.md sets up an application role with INSERT and
SELECT only on the audit table. The SQL is kept here, not imported, so this migration
stays what it was; tests/recorder/playback/test_audit_tamper.py and tests/conftest.py read it.
"""

from django.db import migrations

WRITTEN_NOW_SECONDS = 60

# One statement a string: Django's SQLite cursor runs one at a time.
SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER recorder_auditentry_no_update BEFORE UPDATE ON recorder_auditentry
    BEGIN
        SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE of recorder_auditentry refused');
    END
    """,
    """
    CREATE TRIGGER recorder_auditentry_no_delete BEFORE DELETE ON recorder_auditentry
    BEGIN
        SELECT RAISE(ABORT, 'audit entries are append-only: DELETE of recorder_auditentry refused');
    END
    """,
    """
    CREATE TRIGGER recorder_auditentry_no_replace BEFORE INSERT ON recorder_auditentry
    WHEN EXISTS (SELECT 1 FROM recorder_auditentry WHERE id = NEW.id)
    BEGIN
        SELECT RAISE(ABORT, 'audit entries are append-only: INSERT over an existing entry refused');
    END
    """,
    f"""
    CREATE TRIGGER recorder_auditentry_written_now BEFORE INSERT ON recorder_auditentry
    WHEN julianday(NEW.at) IS NULL
        OR abs(julianday(NEW.at) - julianday('now')) * 86400 > {WRITTEN_NOW_SECONDS}
    BEGIN
        SELECT RAISE(ABORT, 'audit entries are written as they happen: at is not now');
    END
    """,
]
SQLITE_DROP_TRIGGERS = [
    f"DROP TRIGGER IF EXISTS {name}"
    for name in (
        "recorder_auditentry_no_update",
        "recorder_auditentry_no_delete",
        "recorder_auditentry_no_replace",
        "recorder_auditentry_written_now",
    )
]

# No percent sign here: schema_editor.execute() interpolates parameters.
POSTGRESQL_WRITTEN_NOW = [
    f"""
    CREATE OR REPLACE FUNCTION recorder_auditentry_written_now() RETURNS trigger AS $$
    BEGIN
        IF NEW.at IS NULL
            OR abs(extract(epoch FROM NEW.at - clock_timestamp())) > {WRITTEN_NOW_SECONDS} THEN
            RAISE EXCEPTION USING
                MESSAGE = 'audit entries are written as they happen: an entry dated '
                    || coalesce(NEW.at::text, 'NULL') || ' is not now',
                ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER recorder_auditentry_written_now
        BEFORE INSERT ON recorder_auditentry
        FOR EACH ROW EXECUTE FUNCTION recorder_auditentry_written_now()
    """,
]
POSTGRESQL_DROP_WRITTEN_NOW = [
    "DROP TRIGGER IF EXISTS recorder_auditentry_written_now ON recorder_auditentry",
    "DROP FUNCTION IF EXISTS recorder_auditentry_written_now()",
]

FORWARD = {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_WRITTEN_NOW}
BACKWARD = {"sqlite": SQLITE_DROP_TRIGGERS, "postgresql": POSTGRESQL_DROP_WRITTEN_NOW}


def add_triggers(apps, schema_editor):
    for statement in FORWARD.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    for statement in BACKWARD.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("recorder", "0005_audit_view_action"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="auditentry",
            options={
                "base_manager_name": "objects",
                "ordering": ["-at", "-pk"],
                "verbose_name_plural": "audit entries",
            },
        ),
        migrations.RunPython(add_triggers, drop_triggers),
    ]
