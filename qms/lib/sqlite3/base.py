"""Django's SQLite backend, with the placeholders of each short statement converted once.

Django writes SQL with %s placeholders, and its SQLite backend turns them into SQLite's ?
with a regular expression at every execute. The capture sink runs the same few statements
thousands of times (qms/lib/prepared.py), and importing 1,000 short calls, that conversion
was a tenth of the database process's CPU. The converted text of a statement up to
CACHED_UP_TO characters is kept; a longer one (a bulk INSERT of hundreds of rows, whose
text changes with its row count) is converted each time, as Django does. DATABASE_URL's
sqlite:// scheme names this backend (qms/lib/env.py); everything else is Django's.
"""

from __future__ import annotations

import functools

from django.db.backends.sqlite3 import base
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


class DatabaseWrapper(base.DatabaseWrapper):
    @async_unsafe
    def create_cursor(self, name=None):
        return self.connection.cursor(factory=SQLiteCursorWrapper)
