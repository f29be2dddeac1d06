"""Querysets compiled to SQL once, then run again with other values.

Django turns a queryset into SQL every time it runs: for the few statements the capture
sink runs per binding and per call, that is 0.4-2.5 ms of Python each on this project's
machines, against 0.03 ms for the database to answer. A prepared query keeps the rule
written as a queryset, in one place, and pays for the compilation once:

    @prepared
    def open_bindings(number: str) -> QuerySet[Binding]:
        return Binding.objects.filter(extension_number=number, ended_at__isnull=True)

    rows = open_bindings(number="2001")  # a list of Binding, as list(queryset) gives

The function is called once per database (and per shape) with a marker for each argument (a value no
caller passes). Where each marker lands among the compiled SQL's parameters is noted, and
each later call runs that SQL with its own values there, through the same converters and
model loading as Django's own iteration.

The shape of the SQL must not depend on the values beyond what the cache knows of:

- the type of each argument (str, int, datetime; a bool or a list runs as the plain
  queryset);
- which arguments are None (Django writes IS NULL, or NULL in an UPDATE): the query is
  compiled once for each such combination, with the None in it;
- keyword-only arguments (`*, by_device: bool`), which are passed as they are and
  compiled once for each value.

A query whose markers Django wrote into the SQL text instead of its parameters is never
reused: it runs as the plain queryset.

@prepared_update does the same for an UPDATE: its function returns the queryset and the
values to set, and the call returns the number of rows changed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.db.models import QuerySet
from django.db.models.constants import OnConflict
from django.db.models.query import (
    FlatValuesListIterable,
    ModelIterable,
    ValuesListIterable,
    get_related_populators,
)
from django.db.models.sql import InsertQuery, UpdateQuery
from django.utils.ipv6 import clean_ipv6_address

log = logging.getLogger(__name__)

# Markers by type. None of them is a value from the wire or the directory: strings carry
# control characters, datetimes are in 1901, integers are far below any key.
MARKER_TYPES = (str, datetime, int)
# The querysets a prepared select can be: of model instances, values_list, flat or not.
ROW_KINDS = (ModelIterable, ValuesListIterable, FlatValuesListIterable)


def _marker(kind: type, index: int) -> object:
    if kind is str:
        return f"\x1eqms-prepared-{index}\x1e"
    if kind is datetime:
        return datetime(1901, 1, 1, 0, 0, 0, 1000 + index, tzinfo=UTC)
    return -7_000_000_000_000 - index


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where an argument goes among the parameters, and how the database takes it."""

    position: int
    name: str
    wrap: Callable[[object], object] | None  # psycopg's Inet for an address column


@dataclass(slots=True)
class _Compiled:
    sql: str
    params: list
    slots: tuple[_Slot, ...]
    compiler: Any  # the compiler of the marker query: its select, converters and models
    load: _Loader | None = None


def _slots(
    sql: str, params: list, markers: dict[str, object], connection
) -> tuple[_Slot, ...] | None:
    """Each parameter that is a marker, as the backend adapted it; None when Django wrote
    a marker into the SQL text instead of passing it. (An argument this shape of the query
    does not use is in neither.)"""
    adapted = {name: _database_value(marker, connection) for name, marker in markers.items()}
    slots = []
    for position, param in enumerate(params):
        for name, database_form in adapted.items():
            if param == database_form and type(param) is type(database_form):
                slots.append(_Slot(position, name, None))
            elif getattr(param, "addr", None) == database_form:  # psycopg2's Inet
                slots.append(_Slot(position, name, type(param)))
    passed = {slot.name for slot in slots}
    for name, database_form in adapted.items():
        if name not in passed and _trace(database_form) in sql:
            return None
    return tuple(slots)


def _trace(database_form: object) -> str:
    """What of a marker would show in SQL text that had it written in."""
    if isinstance(database_form, datetime):
        return "1901-01-01"
    return str(database_form).split(" ")[0]


NONE = type(None)


def _address(value: str) -> str:
    """An IPv6 address as GenericIPAddressField.get_prep_value writes it."""
    try:
        return clean_ipv6_address(value)
    except ValidationError:
        return value


def _all_rows(cursor) -> list:
    return cursor.fetchall()


def _row_count(cursor) -> int:
    return cursor.rowcount


def _kind(value: object) -> type | None:
    """Which marker stands for a value: a choice (a StrEnum) is a str; a bool, which
    Django may write as SQL text, has none. None is a shape of its own (Django writes it
    as IS NULL, or NULL in an UPDATE): it has no marker, and is passed as it is."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return None
    return next((kind for kind in MARKER_TYPES if isinstance(value, kind)), None)


def _database_value(value: object, connection) -> object:
    """A value as Django's fields hand it to the backend: a datetime adapted (SQLite
    stores it as UTC text), a choice as its plain value."""
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(value, str):
        return str(value)
    return int(value)


class _Prepared:
    """The shared part: markers, compilation once per database and argument types."""

    def __init__(self, build: Callable[..., Any], addresses: tuple[str, ...] = ()) -> None:
        self.build = build
        # Arguments that go to an address column (GenericIPAddressField), whose IPv6 form
        # Django normalises before it compares or stores.
        self.addresses = frozenset(addresses)
        parameters = inspect.signature(build).parameters.values()
        self.names = tuple(p.name for p in parameters if p.kind != p.KEYWORD_ONLY)
        self.shapes = tuple(p.name for p in parameters if p.kind == p.KEYWORD_ONLY)
        # Per thread, as Django's connections are: a compiler keeps the connection of the
        # thread that compiled it, which another thread may not use.
        self.local = threading.local()
        functools.update_wrapper(self, build)

    def _values(self, args: tuple, kwargs: dict) -> dict[str, object]:
        values = dict(zip(self.names, args, strict=False))
        values.update(kwargs)
        return values

    def _ready(self, values: dict[str, object]) -> _Compiled | None:
        """The compiled SQL for values of these types, compiled now if it is the first
        call with them; None when they cannot be run prepared."""
        kinds = tuple(_kind(values[name]) for name in self.names)
        if None in kinds:
            return None
        shape = {name: values[name] for name in self.shapes}
        key = (kinds, *shape.values())
        compiled = self.local.__dict__.setdefault("compiled", {})
        found = compiled.get(key, False)
        if found is not False:
            return found
        markers = {
            name: _marker(kind, index)
            for index, (name, kind) in enumerate(zip(self.names, kinds, strict=True))
            if kind is not NONE
        }
        nones = {name: None for name, kind in zip(self.names, kinds, strict=True) if kind is NONE}
        compiler = self._compiler({**markers, **nones, **shape})
        sql, params = self._sql(compiler)
        slots = _slots(sql, list(params), markers, compiler.connection)
        undeclared = {slot.name for slot in slots or () if slot.wrap} - self.addresses
        if undeclared:
            raise TypeError(f"{self.__name__}: {', '.join(undeclared)} go to an address column: "
                            "name them in addresses=")  # fmt: skip
        if slots is None:
            log.warning("%s cannot be prepared: it runs unprepared", self.__name__)
            compiled[key] = None
        else:
            compiled[key] = _Compiled(sql, list(params), slots, compiler)
        return compiled[key]

    def _compiler(self, markers: dict[str, object]):
        raise NotImplementedError

    def _sql(self, compiler) -> tuple[str, tuple]:
        return compiler.as_sql()

    def _execute(self, compiled: _Compiled, values: dict[str, object], fetch: Callable):
        """Runs the SQL with `values` in the markers' places; returns what `fetch` reads
        of the cursor."""
        compiler = compiled.compiler
        params = list(compiled.params)
        for slot in compiled.slots:
            value = values[slot.name]
            if slot.name in self.addresses and ":" in value:
                value = _address(value)
            value = _database_value(value, compiler.connection)
            params[slot.position] = slot.wrap(value) if slot.wrap else value
        rolling_back = transaction.mark_for_rollback_on_error(compiler.using)
        with rolling_back, compiler.connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            return fetch(cursor)

    def prepared_sql(self, *args: object, **kwargs: object) -> str | None:
        """The SQL that a call with these values runs prepared; None when it would run
        as the plain queryset. (Compiles it, as the call would.)"""
        compiled = self._ready(self._values(args, kwargs))
        return compiled.sql if compiled is not None else None


class _PreparedSelect(_Prepared):
    def __call__(self, *args: object, **kwargs: object) -> list:
        values = self._values(args, kwargs)
        compiled = self._ready(values)
        if compiled is None:
            return list(self.build(**values))
        if compiled.load is None:
            compiled.load = _Loader(compiled.compiler)
        return compiled.load(self._execute(compiled, values, _all_rows))

    def _compiler(self, markers: dict[str, object]):
        queryset = self.build(**markers)
        compiler = queryset.query.get_compiler(using=queryset.db)
        # How the rows come back: instances, tuples (values_list) or one value (flat).
        compiler.prepared_rows = queryset._iterable_class
        if compiler.prepared_rows not in (
            ModelIterable,
            ValuesListIterable,
            FlatValuesListIterable,
        ):
            raise TypeError(f"{self.__name__}: only instances and values_list can be prepared")
        return compiler


class _PreparedUpdate(_Prepared):
    def __call__(self, *args: object, **kwargs: object) -> int:
        values = self._values(args, kwargs)
        compiled = self._ready(values)
        if compiled is None:
            queryset, changes = self.build(**values)
            return queryset.update(**changes)
        return self._execute(compiled, values, _row_count)

    def _compiler(self, markers: dict[str, object]):
        # As QuerySet.update builds its query.
        queryset, changes = self.build(**markers)
        query = queryset.query.chain(UpdateQuery)
        query.add_update_values(changes)
        return query.get_compiler(using=queryset.db)


class _Loader:
    """Rows as Django's iteration gives them (SQLCompiler.results_iter, ModelIterable):
    model instances with what select_related and annotate add, or tuples for a
    values_list queryset. What that needs of the compiler is worked out once."""

    def __init__(self, compiler) -> None:
        self.compiler = compiler
        self.converters = compiler.get_converters(
            [column[0] for column in compiler.select[0 : compiler.col_count]]
        )
        self.rows = compiler.prepared_rows
        if self.rows is not ModelIterable:
            return
        self.klass_info = compiler.klass_info
        select = compiler.select
        fields = self.klass_info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        self.attnames = [column[0].target.attname for column in select[self.start : self.end]]
        self.populators = get_related_populators(self.klass_info, select, compiler.using)
        self.annotations = tuple((compiler.annotation_col_map or {}).items())

    def __call__(self, rows: list) -> list:
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        if self.rows is ValuesListIterable:
            return [tuple(row) for row in rows]
        if self.rows is FlatValuesListIterable:
            return [row[0] for row in rows]
        model, using, start, end = (
            self.klass_info["model"],
            self.compiler.using,
            self.start,
            self.end,
        )
        loaded = []
        for row in rows:
            instance = model.from_db(using, self.attnames, row[start:end])
            for populator in self.populators:
                populator.populate(row, instance)
            for name, position in self.annotations:
                setattr(instance, name, row[position])
            loaded.append(instance)
        return loaded


class _PreparedCreate(_Prepared):
    """An INSERT of one row: the model instance `build` returns, every field's value
    from the arguments or a constant (a callable default would be frozen: refused)."""

    def __init__(self, build, addresses=(), ignore_conflicts: bool = False) -> None:
        super().__init__(build, addresses)
        self.ignore_conflicts = ignore_conflicts

    def __call__(self, *args: object, **kwargs: object):
        values = self._values(args, kwargs)
        instance = self.build(**values)
        compiled = self._ready(values)
        if compiled is None:
            manager = type(instance)._base_manager
            manager.bulk_create([instance], ignore_conflicts=self.ignore_conflicts)
            return instance
        returned = self._execute(compiled, values, _one_row)
        for field, value in zip(
            compiled.compiler.returning_fields or (), returned or (), strict=False
        ):
            setattr(instance, field.attname, value)
        instance._state.adding = False
        instance._state.db = compiled.compiler.using
        return instance

    def _compiler(self, markers: dict[str, object]):
        instance = self.build(**markers)
        meta = instance._meta
        fields = [
            f for f in meta.local_concrete_fields if not f.generated and f is not meta.auto_field
        ]
        for field in fields:
            frozen = field.has_default() and callable(field.default)
            frozen = (
                frozen or getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
            )
            value = getattr(instance, field.attname)
            if frozen and not any(value is given for given in markers.values()):
                raise TypeError(f"{self.__name__}: give {field.name} as an argument")
        on_conflict = OnConflict.IGNORE if self.ignore_conflicts else None
        query = InsertQuery(type(instance), on_conflict=on_conflict)
        query.insert_values(fields, [instance])
        compiler = query.get_compiler(using=router.db_for_write(type(instance)))
        returns = compiler.connection.features.can_return_columns_from_insert
        compiler.returning_fields = (
            meta.db_returning_fields if returns and not on_conflict else None
        )
        return compiler

    def _sql(self, compiler) -> tuple[str, tuple]:
        (statement,) = compiler.as_sql()
        return statement


def _one_row(cursor) -> tuple | None:
    return cursor.fetchone() if cursor.description else None


def prepared(build: Callable[..., QuerySet] | None = None, *, addresses: tuple[str, ...] = ()):
    """A select whose SQL is compiled once: the call returns a list of its rows.
    `addresses` names the arguments that are compared to an address column."""
    if build is None:
        return functools.partial(_PreparedSelect, addresses=addresses)
    return _PreparedSelect(build, addresses)


def prepared_update(build=None, *, addresses: tuple[str, ...] = ()):
    """An UPDATE compiled once: `build` returns (queryset, values to set); the call
    returns the number of rows changed."""
    if build is None:
        return functools.partial(_PreparedUpdate, addresses=addresses)
    return _PreparedUpdate(build, addresses)


def prepared_create(build=None, *, addresses: tuple[str, ...] = (), ignore_conflicts=False):
    """An INSERT of the one instance `build` returns, compiled once; the call returns the
    instance, saved, with its id (none with ignore_conflicts: a conflicting row is left
    as it is, as bulk_create(ignore_conflicts=True) leaves it)."""
    if build is None:
        return functools.partial(
            _PreparedCreate, addresses=addresses, ignore_conflicts=ignore_conflicts
        )
    return _PreparedCreate(build, addresses, ignore_conflicts)
