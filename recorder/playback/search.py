"""The recordings list's search: its filters, their choices, and the sort orders.

Filters only narrow recordings_visible_to(), so no filter, count or page reveals a
recording outside the person's scope. The choices offered (agents, teams, extension
suggestions) are the directory as recorder/playback/access.py lets the person see it, so no other
team's people or numbers appear in a list either.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from extensions.access import (
    User,
    agents_visible_to,
    extensions_visible_to,
    teams_visible_to,
)
from extensions.models import Agent, Team
from recorder.models import Call, Flag, Recording

PAGE_SIZE = 50
# The columns the list sorts by, as ?sort=<name> (ascending) or ?sort=-<name>.
SORTS = {
    "started": "started_at",
    "duration": "duration_seconds",
    "agent": "agent__name",
    "extension": "extension",
    "far_party": "remote_party",
    "direction": "direction",
    "status": "status",
    "mos": "mos_estimate",
}
DEFAULT_SORT = "-started"
NULLABLE_SORTS = frozenset({"agent", "mos"})
# The days a search may name: their midnights and the next day's exist in UTC from any
# time zone (the database compares UTC), so 9999-12-31 is refused with a sentence
# rather than overflowing.
SEARCHABLE_DAYS = [MinValueValidator(date(1, 1, 2)), MaxValueValidator(date(9999, 12, 30))]
# Parameters that page or order the list rather than choose recordings.
NOT_FILTERS = ("page", "sort")


def sort_choices() -> list[tuple[str, str]]:
    return [(f"{sign}{name}", f"{sign}{name}") for name in SORTS for sign in ("", "-")]


class RecordingSearchForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=Agent.objects.none(), required=False, empty_label="any")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False, empty_label="any")
    extension = forms.CharField(
        required=False, max_length=128, help_text="Exactly as the PBX writes it."
    )
    far_party = forms.CharField(
        label="Far-party number",
        required=False,
        max_length=128,
        help_text="Any part of the number.",
    )
    started_from = forms.DateField(
        label="From",
        required=False,
        widget=forms.DateInput({"type": "date"}),
        validators=SEARCHABLE_DAYS,
    )
    started_to = forms.DateField(
        label="To",
        required=False,
        widget=forms.DateInput({"type": "date"}),
        validators=SEARCHABLE_DAYS,
    )
    longer_than = forms.IntegerField(label="At least (s)", required=False, min_value=0)
    shorter_than = forms.IntegerField(label="At most (s)", required=False, min_value=0)
    direction = forms.ChoiceField(
        choices=[
            ("", "any"),
            *((value, label) for value, label in Call.Direction.choices if value),
        ],
        required=False,
    )
    status = forms.ChoiceField(choices=[("", "any"), *Recording.Status.choices], required=False)
    mos_below = forms.FloatField(
        label="MOS below", required=False, min_value=1.0, max_value=5.0, help_text="1 to 5."
    )
    flag = forms.ModelChoiceField(
        queryset=Flag.objects.order_by("name"), required=False, empty_label="any",
        to_field_name="name",
    )  # fmt: skip
    sort = forms.ChoiceField(choices=sort_choices, required=False, widget=forms.HiddenInput)

    def __init__(self, user: User, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = agents_visible_to(user).order_by("name")
        self.fields["team"].queryset = teams_visible_to(user).order_by("name")
        # Suggestions only: any number may be typed, and only narrows what one may see.
        numbers = extensions_visible_to(user).order_by("number").values_list("number", flat=True)
        self.extension_suggestions = list(numbers)

    def clean(self) -> dict:
        cleaned = super().clean()
        first, last = cleaned.get("started_from"), cleaned.get("started_to")
        if first and last and first > last:
            self.add_error("started_to", "The end of the date range is before its start.")
        low, high = cleaned.get("longer_than"), cleaned.get("shorter_than")
        if low is not None and high is not None and low > high:
            self.add_error("shorter_than", "The longest duration is below the shortest.")
        return cleaned

    def used_filters(self) -> dict[str, str]:
        """The filters this search asked for, as typed, for the audit trail."""
        return {
            name: value
            for name, value in self.data.items()
            if name not in NOT_FILTERS and name in self.fields and value
        }

    def search(self, recordings: QuerySet) -> QuerySet:
        """The recordings of `recordings` (already scoped) that match, in the chosen order."""
        data = self.cleaned_data
        recordings = recordings.filter(_conditions(data))
        return ordered(recordings, data.get("sort") or DEFAULT_SORT)


def ordered(recordings: QuerySet, sort: str) -> QuerySet:
    """Sorted by one column, the id breaking ties so that pages never overlap.

    Rows with no agent or no MOS estimate come last either way. Only those two columns say
    NULLS LAST: on a column that is never null PostgreSQL would still refuse the index for
    `ORDER BY started_at DESC NULLS LAST` (the index's descending order puts nulls first)
    and sort the whole archive instead of reading its newest rows.
    """
    name = sort.removeprefix("-")
    descending = sort.startswith("-")
    column = F(SORTS[name])
    nulls_last = True if name in NULLABLE_SORTS else None
    first = column.desc(nulls_last=nulls_last) if descending else column.asc(nulls_last=nulls_last)
    return recordings.order_by(first, "-pk" if descending else "pk")


def _conditions(data: dict) -> Q:
    conditions = Q()
    for name, lookup in (
        ("agent", "agent"),
        ("team", "agent__teams"),
        ("extension", "extension"),
        ("far_party", "remote_party__contains"),
        ("direction", "direction"),
        ("status", "status"),
        ("longer_than", "duration_seconds__gte"),
        ("shorter_than", "duration_seconds__lte"),
        ("mos_below", "mos_estimate__lt"),
        ("flag", "flaggings__flag"),
    ):
        value = data.get(name)
        if value not in (None, ""):
            conditions &= Q(**{lookup: value})
    if data.get("started_from"):
        conditions &= Q(started_at__gte=_midnight(data["started_from"]))
    if data.get("started_to"):
        conditions &= Q(started_at__lt=_midnight(data["started_to"] + timedelta(days=1)))
    return conditions


def _midnight(day: date) -> datetime:
    # Days are the viewer's days: TIME_ZONE, not UTC.
    return timezone.make_aware(datetime.combine(day, time.min))
