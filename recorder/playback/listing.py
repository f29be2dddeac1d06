"""Counting and paging a supervisor's search over a large archive from its indexes.

A supervisor's recordings are an OR: attributed to their agents, or on their agents'
extensions. PostgreSQL answers an OR with a bitmap scan that reads every matching row from
the table, scattered over it (a team's 20,000 recordings of a million sit on 17,000 of
its pages), once to count and again to sort. ScopedListing instead splits the scope into
its disjoint parts (recorder/playback/access.py, recording_scope_parts) and answers each from the
index that leads with its column, which carries every column the list filters and sorts
on (Recording.Meta.indexes): the count is a sum of index-only counts, a page's ids come
from index-only scans, and only the rows of the page are read from the table.

It stands in for the queryset wherever Django pages one (Paginator, DRF's pagination):
count(), len() and slicing. It never widens what it is given: every part is a further
filter of the caller's own queryset, already scoped by recordings_visible_to().
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import F, OrderBy, QuerySet

from recorder.models import Recording
from recorder.playback.access import User, recording_scope_parts


class ScopedListing:
    """`recordings` (visible to `user`, filtered and ordered) as Django's Paginator
    pages it, counted and sliced part by part on PostgreSQL."""

    ordered = True  # Paginator warns about unordered lists; this one keeps its order.

    def __init__(self, user: User, recordings: QuerySet) -> None:
        self.recordings = recordings
        parts = recording_scope_parts(user)
        split = parts is not None and connections[recordings.db].vendor == "postgresql"
        self.parts = parts if split else None
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            if self.parts is None:
                self._count = self.recordings.count()
            else:
                self._count = sum(self.recordings.filter(part).count() for part in self.parts)
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, window: slice) -> list[Recording]:
        if not isinstance(window, slice) or window.step is not None:
            raise TypeError("A listing is read one page (a plain slice) at a time.")
        if self.parts is None:
            return list(self.recordings[window])
        if not self.parts:
            return []
        start, stop = window.start or 0, window.stop
        if stop is None:
            stop = self.count()
        ids = self._page_ids(start, stop)
        rows = {row.pk: row for row in self.recordings.filter(pk__in=ids).order_by()}
        return [rows[pk] for pk in ids if pk in rows]

    def _page_ids(self, start: int, stop: int) -> list[int]:
        """The ids of rows start..stop in the queryset's order: the first `stop` of each
        part, merged. Each part is fenced with OFFSET 0 so that PostgreSQL filters it on
        its own index before sorting, rather than walking the started_at index of the
        whole archive hoping to meet the part's rows early (it meets a rare one late)."""
        keys, id_descending = sort_keys(self.recordings)
        columns = ", ".join(["id", *(f"k{n}" for n in range(len(keys)))])
        order = ", ".join(
            [
                *(clause(f"k{n}", key) for n, key in enumerate(keys)),
                "id DESC" if id_descending else "id ASC",
            ]
        )
        # Only SQL that Django compiled (its values stay parameters) and names made here
        # (k0, id, ASC, NULLS LAST) are put together below: nothing from the request.
        selects, params = [], []
        for part in self.parts:
            fields = [name for name, _, _ in keys]
            inner = self.recordings.filter(part).order_by().values_list("pk", *fields)
            try:
                sql, part_params = inner.query.sql_with_params()
            except EmptyResultSet:  # .none(), or a filter on an empty list: no rows here
                continue
            selects.append(
                f"(SELECT * FROM ({sql} OFFSET 0) AS part ({columns}) "  # noqa: S608
                f"ORDER BY {order} LIMIT %s)"
            )
            params += [*part_params, stop]
        if not selects:
            return []
        query = (
            f"SELECT id FROM ({' UNION ALL '.join(selects)}) AS page ({columns}) "  # noqa: S608
            f"ORDER BY {order} LIMIT %s OFFSET %s"
        )
        with connections[self.recordings.db].cursor() as cursor:
            cursor.execute(query, [*params, stop - start, start])
            return [pk for (pk,) in cursor.fetchall()]


SortKey = tuple[str, bool, str]  # (field path, descending, "NULLS FIRST" / "NULLS LAST" / "")


def sort_keys(recordings: QuerySet) -> tuple[list[SortKey], bool]:
    """The queryset's ordering as keys up to its id, and whether the id, the final
    tie-break, descends (an ordering without the id gets an ascending one)."""
    query = recordings.query
    ordering = query.order_by or (query.default_ordering and query.get_meta().ordering) or []
    keys = []
    for item in ordering:
        name, descending, nulls = _sort_key(item)
        if name in ("pk", "id"):
            return keys, descending
        keys.append((name, descending, nulls))
    return keys, False


def _sort_key(item: str | OrderBy) -> SortKey:
    if isinstance(item, str):
        if item == "?":
            raise ValueError("A random order cannot be paged from the indexes.")
        return (item.removeprefix("-"), item.startswith("-"), "")
    if isinstance(item, OrderBy) and isinstance(item.expression, F):
        nulls = "NULLS LAST" if item.nulls_last else "NULLS FIRST" if item.nulls_first else ""
        return (item.expression.name, item.descending, nulls)
    raise ValueError(f"Cannot page by {item!r}.")


def clause(column: str, key: SortKey) -> str:
    _, descending, nulls = key
    return " ".join(part for part in (column, "DESC" if descending else "ASC", nulls) if part)
