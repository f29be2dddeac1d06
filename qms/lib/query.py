"""The API's query parameters, read in one place.

Each reader gives back a value the database can take, or refuses it with a 400 whose
sentence names the parameter. Values that look right but are not (February 30th, hour 25,
an id of 23 digits, a NUL that PostgreSQL refuses in any string) are refused here rather
than reaching a query and answering 500. The pages' search form applies the same bounds
with Django form fields (recorder/playback/search.py).
"""

from __future__ import annotations

import ipaddress
import math
from datetime import UTC, datetime

from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

# The largest id a row can have: PostgreSQL's bigint and SQLite's integer are 64-bit.
LARGEST_ID = 2**63 - 1


class CheckedQuery:
    """A viewset mixin: every query parameter is checked for what no column can hold
    before any reader sees it, so a parameter added later is covered too."""

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        # Authentication and permissions first: an anonymous caller learns nothing more.
        super().initial(request, *args, **kwargs)
        refuse_nul(request.query_params)


def refuse_nul(query: QueryDict) -> None:
    for name, values in query.lists():
        if "\x00" in name:
            raise ValidationError({"detail": ["A query parameter's name holds a NUL character."]})
        if any("\x00" in value for value in values):
            raise ValidationError({name: ["The value holds a NUL character."]})


def moment(name: str, text: str) -> datetime:
    """An ISO 8601 date and time that exists; without an offset, in TIME_ZONE."""
    try:
        parsed = parse_datetime(text)
    except ValueError:  # Well formed but impossible: 2024-02-30, hour 25.
        raise ValidationError({name: [f"{text!r} is not a date and time that exists."]}) from None
    if parsed is None:
        raise ValidationError({name: [f"{text!r} is not an ISO 8601 date and time."]})
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    try:
        # The database stores UTC: a moment whose UTC is past year 9999 cannot be compared.
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError({name: [f"{text!r} is outside the years 1 to 9999."]}) from None
    return parsed


def number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValidationError({name: [f"{text!r} is not a number."]})
    return value


def row_id(name: str, text: str, what: str) -> int:
    """A row's id: digits only, no larger than a 64-bit integer."""
    if not (text.isascii() and text.isdigit()) or int(text) > LARGEST_ID:
        raise ValidationError({name: [f"{text!r} is not {what} id."]})
    return int(text)


def choice(name: str, text: str, choices: list[str]) -> str:
    if text not in choices:
        known = ", ".join(value for value in choices if value)
        raise ValidationError({name: [f"{text!r} is not one of {known}."]})
    return text


def by_id_or_name(relation: str, value: str) -> dict:
    """A filter on a related row given by its id (digits) or its name."""
    if not (value.isascii() and value.isdigit()):
        return {f"{relation}__name": value}
    pk = int(value)
    # An id no row can have finds nothing, exactly as an unknown name does.
    return {f"{relation}__pk": pk} if pk <= LARGEST_ID else {f"{relation}__pk__in": []}


def ip_address(name: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValidationError({name: [f"{text!r} is not an IP address."]}) from None
