"""The SQLite backend DATABASE_URL's sqlite:// names (qms/lib/sqlite3): Django's, with each
short statement's placeholders converted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db.utils import ConnectionHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from qms.lib.sqlite3.base import CACHED_UP_TO, qmark_style


@pytest.fixture(autouse=True)
def own_connections(django_db_blocker):
    """These tests open SQLite connections of their own, apart from the test database."""
    with django_db_blocker.unblock():
        yield


def sqlite_in_memory():
    handler = ConnectionHandler({"default": {"ENGINE": "qms.lib.sqlite3", "NAME": ":memory:"}})
    return handler["default"]


def test_a_statement_run_again_is_converted_once_and_answers_the_same() -> None:
    connection = sqlite_in_memory()
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE seen (number TEXT, note TEXT)")
            statement = "INSERT INTO seen VALUES (%s, '100%%')"
            before = qmark_style.cache_info()
            for number in ("2001", "2002", "2003"):
                cursor.execute(statement, [number])
            after = qmark_style.cache_info()
            cursor.execute("SELECT number, note FROM seen WHERE number >= %s ORDER BY 1", ["2002"])
            rows = cursor.fetchall()
    finally:
        connection.close()
    # Converted at the first run, found at the two after: "%%" is a literal "%" still.
    assert after.hits - before.hits >= 2
    assert rows == [("2002", "100%"), ("2003", "100%")]


def test_a_long_statement_is_converted_each_time_as_django_does() -> None:
    connection = sqlite_in_memory()
    rows = 1000
    statement = "INSERT INTO seen VALUES " + ", ".join(["(%s)"] * rows)
    assert len(statement) > CACHED_UP_TO
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE seen (number INTEGER)")
            before = qmark_style.cache_info()
            cursor.execute(statement, list(range(rows)))
            cursor.execute(statement, list(range(rows, 2 * rows)))
            after = qmark_style.cache_info()
            cursor.execute("SELECT COUNT(*), SUM(number) FROM seen")
            found = cursor.fetchone()
    finally:
        connection.close()
    assert after.currsize == before.currsize  # nothing kept of it
    assert found == (2 * rows, sum(range(2 * rows)))


def test_named_placeholders_still_work() -> None:
    connection = sqlite_in_memory()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT %(number)s || %(suffix)s", {"number": "2001", "suffix": "-a"})
            found = cursor.fetchone()
    finally:
        connection.close()
    assert found == ("2001-a",)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1901, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), ZoneInfo("Europe/Paris")]),
    )
    | st.datetimes()
    | st.none()
)
def test_a_time_is_written_as_djangos_own_backend_writes_it(value: datetime | None) -> None:
    ours = sqlite_in_memory()
    djangos = ConnectionHandler(
        {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    )["default"]
    assert type(ours.ops) is not type(djangos.ops)  # the fast path is there to be tested
    assert ours.ops.adapt_datetimefield_value(value) == djangos.ops.adapt_datetimefield_value(value)
