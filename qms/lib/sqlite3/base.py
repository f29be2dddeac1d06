"""Django's SQLite backend, with the placeholders of each short statement converted once,
and UTC times written without Django's round of time zone conversions.

Django writes SQL with %s placeholders, and its SQLite backend turns them into SQLite's ?
with a regular expression at every execute. The capture sink runs the same few statements
thousands of times (qms/lib/prepared.py), and importing 1,000 short calls, that conversion
was a tenth of the database process's CPU. The converted text of a statement up to
CACHED_UP_TO characters is kept; a longer one (a bulk INSERT of hundreds of rows, whose
text changes with its row count) is converted each time, as Django does.

SQLite keeps a time as text in the connection's time zone, and Django writes an aware one
by converting it there (make_naive) first: another tenth of the database process's CPU in
the same import, where the value is nearly always in UTC already and so is the
connection. Such a time is written as text at once; any other goes Django's way. DATABASE_URL's
sqlite:// scheme names this backend (qms/lib/env.py); everything else is Django's.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from django.db.backends.sqlite3 import base, operations
from django.utils.asyncio import async_unsafe

# Statements this long or shorter keep their converted text: every statement the sink and
# the finishing processes repeat, and no bulk INSERT of many rows.
CACHED_UP_TO = 4096
CACHED_STATEMENTS = 1024


@functools.lru_cache(maxsize=CACHED_STATEMENTS)
def qmark_style(query: str) -> str:
    """The statement with SQLite's placeholders, as Django's backend converts it."""
    return base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class SQLiteCursorWrapper(base.SQLiteCursorWrapper):
    def convert_query(self, query, *, param_names=None):
        if param_names is None and len(query) <= CACHED_UP_TO:
            return qmark_style(query)
        return super().convert_query(query, param_names=param_names)


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_datetimefield_value(self, value):
        # What make_naive(value, UTC) then str() give, for a UTC time and a UTC connection.
        if type(value) is datetime and value.tzinfo is UTC and self.connection.timezone is UTC:
            return str(value.replace(tzinfo=None))
        return super().adapt_datetimefield_value(value)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    @async_unsafe
    def create_cursor(self, name=None):
        return self.connection.cursor(factory=SQLiteCursorWrapper)
