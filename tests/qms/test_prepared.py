"""Prepared querysets (qms/lib/prepared.py) give what the plain queryset gives, and are
really prepared where the capture sink relies on them, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Exists, OuterRef, Q

from extensions import services
from extensions.models import Agent, Binding, Extension, LineAppearance, Phone, SeenExtension
from integrations.observations import BindingSource
from qms.lib.prepared import prepared, prepared_create, prepared_update

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 2, 9, 0, 0, 123456, tzinfo=UTC)


def directory() -> None:
    """Two people, two phones (one static), bindings open and closed at two addresses."""
    ann = Agent.objects.create(name="Ann")
    bob = Agent.objects.create(name="Bob")
    first = Extension.objects.create(number="2001", agent=ann)
    second = Extension.objects.create(number="2002", agent=bob)
    desk = Phone.objects.create(device_name="SEP0001", current_ip="10.0.0.1")
    Phone.objects.create(device_name="SEP0002", static_ip=True, configured_ip="10.0.0.2")
    LineAppearance.objects.create(phone=desk, extension=first, line_number=1)
    LineAppearance.objects.create(phone=desk, extension=second, line_number=2)
    common = {"source": BindingSource.SIP_REGISTER, "last_seen": T0}
    Binding.objects.create(
        extension_number="2001", extension=first, ip="10.0.0.1", phone=desk,
        first_seen=T0 - timedelta(hours=1), **common,
    )  # fmt: skip
    Binding.objects.create(
        extension_number="2002", extension=second, ip="10.0.0.1", line_number=2,
        first_seen=T0, **common,
    )  # fmt: skip
    Binding.objects.create(
        extension_number="2002", ip="10.0.0.2", first_seen=T0 - timedelta(hours=2),
        ended_at=T0 - timedelta(minutes=30), **common,
    )  # fmt: skip


def described(binding: Binding) -> tuple:
    """What a caller reads of a binding, its related rows and its annotation."""
    extension = binding.extension
    return (
        binding.pk,
        binding.extension_number,
        binding.ip,
        binding.first_seen,
        binding.ended_at,
        binding.line_number,
        binding.static_phone_here,
        extension.number if extension else None,
        extension.agent.name if extension and extension.agent else None,
        binding.phone.device_name if binding.phone else None,
    )


def test_a_prepared_select_gives_the_rows_of_the_queryset() -> None:
    directory()
    asked = [
        ("10.0.0.1", T0),
        ("10.0.0.1", T0 - timedelta(microseconds=1)),  # the line-2 binding starts at T0
        ("10.0.0.2", T0 - timedelta(hours=1)),
        ("10.0.0.2", T0),  # closed by then; a static phone is there
        ("10.9.9.9", T0),
    ]
    for ip, at in asked:
        expected = [described(row) for row in services._valid_bindings.build(ip, at)]
        assert [described(row) for row in services._valid_bindings(ip, at)] == expected, (ip, at)
    assert [len(services._valid_bindings(ip, at)) for ip, at in asked] == [2, 1, 1, 0, 0]
    assert services._valid_bindings.prepared_sql("10.0.0.1", T0) is not None


@prepared(addresses=("ip",))
def phones_at(ip):
    return Phone.objects.filter(current_ip=ip).values_list("device_name")


def test_a_none_is_compiled_as_a_shape_of_its_own() -> None:
    """Django writes None as IS NULL: the query for None is not the query for a value."""
    directory()
    assert phones_at("10.0.0.1") == [("SEP0001",)]
    assert phones_at(None) == [("SEP0002",)]
    assert phones_at("10.0.0.1") == [("SEP0001",)]
    assert "IS NULL" in phones_at.prepared_sql(None)
    assert "IS NULL" not in phones_at.prepared_sql("10.0.0.1")


@prepared
def lines_of(number: str, phone_id: int, *, on_phone: bool):
    lines = LineAppearance.objects.filter(extension__number=number)
    if on_phone:
        lines = lines.filter(phone_id=phone_id)
    return lines.values_list("line_number").order_by("line_number")


def test_a_keyword_only_argument_is_a_shape_of_its_own() -> None:
    directory()
    desk = Phone.objects.get(device_name="SEP0001")
    assert lines_of("2002", desk.pk, on_phone=True) == [(2,)]
    assert lines_of("2002", desk.pk + 1000, on_phone=True) == []
    # The phone is not asked in this shape: its argument is simply not used.
    assert lines_of("2002", desk.pk + 1000, on_phone=False) == [(2,)]
    assert lines_of.prepared_sql("2002", 1, on_phone=False) is not None
    assert lines_of.prepared_sql("2002", 1, on_phone=True) is not None


@prepared
def written_in(number: str):
    # A value Django is made to write into the SQL text: it cannot be prepared.
    return Extension.objects.extra(where=[f"number = '{number}'"]).values_list("number")


def test_a_value_written_into_the_sql_is_never_reused() -> None:
    directory()
    assert written_in.prepared_sql("2001") is None
    assert written_in("2001") == [("2001",)]
    assert written_in("2002") == [("2002",)]


@prepared_update(addresses=("ip", "moved_to"))
def heard(ip: str, at: datetime, moved_to: str):
    return Phone.objects.filter(Q(current_ip=ip) | Q(configured_ip=ip)), {
        "last_heard_at": at,
        "current_ip": moved_to,
    }


def test_a_prepared_update_changes_what_the_queryset_would() -> None:
    directory()
    assert heard("10.0.0.1", T0, "10.0.0.7") == 1
    assert heard("10.0.0.1", T0, "10.0.0.8") == 0  # it moved
    assert heard("10.0.0.7", T0 + timedelta(seconds=1), "10.0.0.1") == 1
    assert heard.prepared_sql("10.0.0.1", T0, "10.0.0.1") is not None
    desk = Phone.objects.get(device_name="SEP0001")
    assert (desk.current_ip, desk.last_heard_at) == ("10.0.0.1", T0 + timedelta(seconds=1))


def test_a_none_in_an_update_sets_null() -> None:
    directory()
    desk = Phone.objects.get(device_name="SEP0001")
    assert heard("10.0.0.1", T0, None) == 1
    assert Phone.objects.get(pk=desk.pk).current_ip is None
    assert heard("10.0.0.2", T0, "10.0.0.9") == 1  # the static phone, by its configured IP
    assert Phone.objects.get(device_name="SEP0002").current_ip == "10.0.0.9"
    assert "NULL" in heard.prepared_sql("10.0.0.1", T0, None)


@prepared_update
def advance(number: str, at: datetime):
    return SeenExtension.objects.filter(number=number, last_seen__lte=at), {"last_seen": at}


def test_a_datetime_compares_to_the_microsecond() -> None:
    """SQLite keeps datetimes as text: the value is adapted as Django's field does."""
    SeenExtension.objects.create(
        number="2001", first_seen=T0, last_seen=T0, last_ip="10.0.0.1",
        last_source=BindingSource.SIP_REGISTER,
    )  # fmt: skip
    assert advance("2001", T0 - timedelta(microseconds=1)) == 0
    assert advance("2001", T0) == 1
    assert advance("2001", T0 + timedelta(microseconds=1)) == 1
    assert advance("2001", T0) == 0
    assert SeenExtension.objects.get().last_seen == T0 + timedelta(microseconds=1)


def test_a_choice_is_passed_as_its_value() -> None:
    """A StrEnum (a binding's source) is a str to a prepared query."""
    SeenExtension.objects.create(
        number="2001", first_seen=T0, last_seen=T0, last_ip="10.0.0.1",
        last_source=BindingSource.SIP_REGISTER,
    )  # fmt: skip
    later = T0 + timedelta(seconds=5)
    assert services._advance_seen("2001", later, "10.0.0.3", BindingSource.SCCP) == 1
    assert services._advance_seen.prepared_sql("2001", later, "10.0.0.3", BindingSource.SCCP)
    row = SeenExtension.objects.get()
    assert (row.last_ip, row.last_source, row.last_seen) == ("10.0.0.3", "sccp", later)


def test_the_directorys_hot_queries_are_prepared() -> None:
    """Each query the sink runs per binding and per call compiles once: none of them falls
    back to the plain queryset on this database (an address column, a datetime, a union,
    a subquery, a row lock)."""
    directory()
    desk = Phone.objects.get(device_name="SEP0001")
    queries = [
        (services._configured_extension, ("2001",), {}),
        (services._speaks_for_a_phone, ("2001", "10.0.0.1"), {}),
        (services._advance_seen, ("2001", T0, "10.0.0.1", BindingSource.SIP_REGISTER), {}),
        (services._seen_locked, ("2001",), {}),
        (services._extension_numbered, ("2001",), {}),
        (services._open_bindings_locked, ("2001",), {}),
        (services._valid_bindings, ("10.0.0.1", T0), {}),
        (services._static_phone, ("10.0.0.2",), {}),
        (services._line_one_of, (desk.pk,), {}),
        (services._place_agent, (1, T0, "10.0.0.1"), {}),
        (services._heard_from, (desk.pk, T0, "10.0.0.1"), {"moves": True}),
        (services._heard_from, (desk.pk, T0, "10.0.0.1"), {"moves": False}),
        (services._refreshed, (1, T0, T0, desk.pk, 1, "SEP0001"), {}),
        (services._first_seen, ("2001", T0, "10.0.0.1", BindingSource.SIP_REGISTER), {}),
        (services._new_binding, ("2001", 1, "10.0.0.1", "sip-register", 1, "", 1, T0, T0), {}),
        (
            services._new_binding,
            ("2001", None, "10.0.0.1", "sip-call", None, "", None, T0, None),
            {},
        ),
        (services._refreshed, (1, T0, None, None, None, ""), {}),
    ]
    for by_device in (False, True):
        for by_extension in (False, True):
            for with_line in (False, True) if by_extension else (False,):
                shape = {"by_device": by_device, "by_extension": by_extension}
                shape["with_line"] = with_line
                queries.append((services._phones_for, ("10.0.0.1", "SEP0001", 1), shape))
    from django.db import transaction

    with transaction.atomic():  # the row locks need a transaction on PostgreSQL
        unprepared = [
            (query.__name__, kwargs)
            for query, args, kwargs in queries
            if query.prepared_sql(*args, **kwargs) is None
        ]
    assert unprepared == []


def test_the_sinks_lookups_find_what_the_directory_holds() -> None:
    """The prepared forms answer as the directory's rules expect (who_was_at, _locate)."""
    directory()
    found = services.who_was_at("10.0.0.1", T0)
    assert (found.extension_number, found.agent.name, found.phone.device_name) == (
        "2001",
        "Ann",
        "SEP0001",
    )
    static = services.who_was_at("10.0.0.2", T0)
    assert (static.phone.device_name, static.source) == ("SEP0002", BindingSource.STATIC)
    desk = Phone.objects.get(device_name="SEP0001")
    assert services._holder(desk).name == "Ann"
    by_line = services._phones_for(
        "10.9.9.9", "", Extension.objects.get(number="2002").pk,
        by_device=False, by_extension=True, with_line=True,
    )  # fmt: skip
    assert by_line == []  # 2002 is line 2 on the desk phone: not line 1 anywhere
    here = services._phones_for(
        "10.0.0.1", "", Extension.objects.get(number="2002").pk,
        by_device=False, by_extension=True, with_line=True,
    )  # fmt: skip
    assert [(phone.device_name, phone.line_here) for phone in here] == [("SEP0001", 2)]


def test_an_outer_reference_keeps_its_place() -> None:
    """A subquery on the outer row (OuterRef) among prepared parameters."""

    @prepared
    def line_counts(number: str):
        lines = LineAppearance.objects.filter(phone=OuterRef("pk"), extension__number=number)
        return Phone.objects.annotate(has=Exists(lines)).values_list("device_name", "has")

    directory()
    assert sorted(line_counts("2002")) == [("SEP0001", True), ("SEP0002", False)]
    assert sorted(line_counts("2999")) == [("SEP0001", False), ("SEP0002", False)]


@prepared_create(addresses=("ip",))
def seen_first(number: str, at: datetime, ip: str):
    return SeenExtension(
        number=number, first_seen=at, last_seen=at, last_ip=ip, last_source="sip-register"
    )


@prepared_create(addresses=("ip",), ignore_conflicts=True)
def seen_unless_known(number: str, at: datetime, ip: str):
    return SeenExtension(
        number=number, first_seen=at, last_seen=at, last_ip=ip, last_source="sip-register"
    )


def test_a_prepared_create_saves_the_row_and_gives_its_id() -> None:
    first = seen_first("2001", T0, "10.0.0.1")
    second = seen_first("2002", T0 + timedelta(seconds=1), "2001:DB8::0001")
    assert seen_first.prepared_sql("2003", T0, "10.0.0.3") is not None
    stored = {row.pk: row for row in SeenExtension.objects.all()}
    assert set(stored) == {first.pk, second.pk}
    assert (stored[first.pk].number, stored[first.pk].last_seen) == ("2001", T0)
    # The address as Django's field writes it (an IPv6 address compressed).
    assert stored[second.pk].last_ip == "2001:db8::1"
    assert not first._state.adding


def test_a_conflicting_create_leaves_the_stored_row() -> None:
    seen_unless_known("2001", T0, "10.0.0.1")
    seen_unless_known("2001", T0 + timedelta(hours=1), "10.0.0.9")
    row = SeenExtension.objects.get()
    assert (row.last_ip, row.last_seen) == ("10.0.0.1", T0)


def test_a_callable_default_is_not_frozen_into_a_create() -> None:
    """A default computed at each save (timezone.now) would be compiled in once."""
    from recorder.nodes.models import PendingFinalisation

    @prepared_create
    def pending_for(call_id: int, spool: str):
        return PendingFinalisation(call_id=call_id, node="here", spool=spool)

    with pytest.raises(TypeError, match="give created_at as an argument"):
        pending_for.prepared_sql(1, "/spool/1")


def test_an_ipv6_address_is_compared_as_the_column_holds_it() -> None:
    """SQLite compares addresses as text: the argument is written as the field writes it."""
    Binding.objects.create(
        extension_number="2001", ip="2001:db8::1", source=BindingSource.SIP_REGISTER,
        first_seen=T0, last_seen=T0,
    )  # fmt: skip
    assert len(services._valid_bindings("2001:DB8:0::0001", T0)) == 1
    assert len(services._valid_bindings("2001:db8::1", T0)) == 1


def test_an_undeclared_address_argument_is_refused(postgresql) -> None:
    """PostgreSQL is where Django wraps an address as inet: a query that compares one
    without naming it in addresses= (so its IPv6 form would not be normalised) is refused
    when it is compiled. SQLite keeps addresses as text, and cannot tell."""

    @prepared
    def at_address(ip: str):
        return Phone.objects.filter(current_ip=ip)

    with pytest.raises(TypeError, match="ip go to an address column"):
        at_address("10.0.0.1")
