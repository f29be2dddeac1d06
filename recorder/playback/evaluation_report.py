"""The evaluation report: average score per agent and per team over a period, for the page
(a table and a bar chart), its CSV and the API (docs/playback.md, "Evaluations").

It reads only evaluations the person may see (evaluations_visible_to), and only rows of
the agents and teams they may see (agents_visible_to, teams_visible_to): a supervisor of
team A never finds team B's agents in it, even through a call on a team A extension.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django import forms
from django.db.models import Avg, Count, Q, QuerySet
from django.utils import timezone

from extensions.access import User, agents_visible_to, teams_visible_to
from qms.lib.spreadsheet import spreadsheet_safe
from recorder.models import Evaluation, EvaluationForm
from recorder.playback.access import evaluations_visible_to
from recorder.playback.search import SEARCHABLE_DAYS

# The period shown when none is asked for: the last 30 days, today included.
DEFAULT_DAYS = 30
CSV_HEADER = ["kind", "name", "evaluations", "average score"]
# The chart's geometry, in SVG user units.
BAR_HEIGHT = 22
LABEL_WIDTH = 160
BAR_SPACE = 400


@dataclass(frozen=True)
class ReportRow:
    kind: str  # "agent" or "team"
    name: str
    evaluations: int
    average: float

    def as_dict(self) -> dict:
        return {"name": self.name, "evaluations": self.evaluations, "average": self.average}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    y: int
    length: float

    @property
    def text_y(self) -> float:
        return self.y + BAR_HEIGHT * 0.7

    @property
    def value_x(self) -> float:
        return LABEL_WIDTH + self.length + 6


@dataclass(frozen=True)
class Chart:
    """An inline SVG bar chart, drawn by the server: no script, nothing fetched."""

    bars: list[Bar]
    label_width: int = LABEL_WIDTH
    bar_height: int = BAR_HEIGHT - 4

    @property
    def width(self) -> int:
        return LABEL_WIDTH + BAR_SPACE + 60

    @property
    def height(self) -> int:
        return max(1, len(self.bars)) * BAR_HEIGHT


@dataclass(frozen=True)
class Report:
    first_day: date
    last_day: date
    form_name: str
    agents: list[ReportRow]
    teams: list[ReportRow]

    def as_dict(self) -> dict:
        return {
            "started_from": self.first_day.isoformat(),
            "started_to": self.last_day.isoformat(),
            "form": self.form_name or None,
            "agents": [row.as_dict() for row in self.agents],
            "teams": [row.as_dict() for row in self.teams],
        }


class ReportForm(forms.Form):
    """The period (the days the calls were made, both included, in TIME_ZONE) and a form
    by name: every version of it counts."""

    started_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput({"type": "date"}),
        validators=SEARCHABLE_DAYS,
    )  # fmt: skip
    started_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput({"type": "date"}),
        validators=SEARCHABLE_DAYS,
    )  # fmt: skip
    form = forms.ChoiceField(label="Form", required=False)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        names = EvaluationForm.objects.order_by("name").values_list("name", flat=True).distinct()
        self.fields["form"].choices = [("", "any"), *((name, name) for name in names)]

    def clean(self) -> dict:
        cleaned = super().clean()
        first, last = cleaned.get("started_from"), cleaned.get("started_to")
        if first and last and first > last:
            self.add_error("started_to", "The end of the period is before its start.")
        return cleaned

    def period(self, today: date) -> tuple[date, date]:
        last = self.cleaned_data.get("started_to") or today
        first = self.cleaned_data.get("started_from") or last - timedelta(days=DEFAULT_DAYS - 1)
        return first, last


def report_for(user: User, first_day: date, last_day: date, form_name: str = "") -> Report:
    counted = scored_evaluations(user, first_day, last_day, form_name)
    return Report(first_day, last_day, form_name, agent_rows(counted),
                  team_rows(user, counted))  # fmt: skip


def scored_evaluations(user: User, first_day: date, last_day: date, form_name: str) -> QuerySet:
    """The submitted evaluations with a score, of calls made in the period, of agents the
    person may see."""
    evaluations = evaluations_visible_to(user).filter(
        status=Evaluation.Status.SUBMITTED,
        score__isnull=False,
        agent__in=agents_visible_to(user).values("pk"),
        recording__started_at__gte=day_start(first_day),
        recording__started_at__lt=day_start(last_day + timedelta(days=1)),
    )
    return evaluations.filter(form__name=form_name) if form_name else evaluations


def day_start(day: date) -> datetime:
    # The viewer's days, as the recordings list's: TIME_ZONE, not UTC.
    return timezone.make_aware(datetime.combine(day, time.min))


def agent_rows(counted: QuerySet) -> list[ReportRow]:
    groups = (
        counted.values("agent__name")
        .annotate(evaluations=Count("pk"), average=Avg("score"))
        .order_by("agent__name")
    )
    return [
        ReportRow("agent", group["agent__name"], group["evaluations"], round(group["average"], 2))
        for group in groups
    ]


def team_rows(user: User, counted: QuerySet) -> list[ReportRow]:
    """Each team's evaluations are those of its agents now: an agent in two teams counts
    in both."""
    of_team = Q(agents__evaluations__in=counted.values("pk"))
    teams = (
        teams_visible_to(user)
        .annotate(
            evaluated=Count("agents__evaluations", filter=of_team),
            average=Avg("agents__evaluations__score", filter=of_team),
        )
        .filter(evaluated__gt=0)
        .order_by("name")
    )
    return [ReportRow("team", team.name, team.evaluated, round(team.average, 2)) for team in teams]


def chart(rows: list[ReportRow]) -> Chart:
    """One horizontal bar a row, its length the average out of 100."""
    return Chart([
        Bar(row.name, row.average, index * BAR_HEIGHT, round(row.average / 100 * BAR_SPACE, 1))
        for index, row in enumerate(rows)
    ])  # fmt: skip


def as_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for row in [*report.agents, *report.teams]:
        writer.writerow(
            [row.kind, spreadsheet_safe(row.name), row.evaluations, f"{row.average:.2f}"]
        )
    return buffer.getvalue()
