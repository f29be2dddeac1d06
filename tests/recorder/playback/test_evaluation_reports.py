"""The evaluation report (issue 17, section 3): average score per agent and per team over a
period, on a page as a table and a chart, as CSV and as JSON, each scoped to the agents and
teams one may see. Known evaluations on PostgreSQL, known numbers out."""

from __future__ import annotations

import csv
import io

import pytest
from django.utils import timezone

from recorder.models import AuditEntry, Evaluation, EvaluationForm, Recording
from tests.recorder.playback.support import PlaybackWorld, build_world, recording, tone_wav
from tests.recorder.playback.test_access import api_as, pages_as

MARCH = {"started_from": "2026-03-01", "started_to": "2026-03-31"}
DAY = 24 * 60


@pytest.fixture
def world(postgresql: None) -> PlaybackWorld:
    return build_world()


def scored(recording: Recording, form: EvaluationForm, score: float | None,
           submitted: bool = True) -> Evaluation:  # fmt: skip
    now = timezone.now()
    return Evaluation.objects.create(
        recording=recording, form=form, agent=recording.agent, evaluator_name="someone",
        status="submitted" if submitted else "draft", submitted_at=now if submitted else None,
        score=score,
    )  # fmt: skip


@pytest.fixture
def evaluated(world: PlaybackWorld) -> EvaluationForm:
    """In March: John 80 and 60, Mary 90, Carl 50 and 30 (one of them on Mary's line).
    Left out: John's 0 in April, a draft, a score of none, Mary's 20 with another form."""
    form = EvaluationForm.objects.create(name="Call quality")
    other = EvaluationForm.objects.create(name="Sales call")
    audio = tone_wav(frames=100)
    john_again = recording("john-2", world.john, "9001", audio, minutes=30)
    marys = recording("mary-1", world.mary, "9002", audio, minutes=40)
    johns_april = recording("john-april", world.john, "9001", audio, minutes=40 * DAY)
    scored(world.recording_a, form, 80)
    scored(john_again, form, 60)
    scored(marys, form, 90)
    scored(world.recording_b, form, 50)
    scored(world.recording_on_marys_line, form, 30)
    scored(johns_april, form, 0)
    scored(john_again, other, 10, submitted=False)
    scored(marys, other, None)
    scored(marys, other, 20)
    return form


def report_json(user, **query) -> dict:
    response = api_as(user).get("/api/evaluations/report/", {**MARCH, **query})
    assert response.status_code == 200, response.content
    return response.json()


def rows(part: list[dict]) -> list[tuple]:
    return [(row["name"], row["evaluations"], row["average"]) for row in part]


def test_an_admin_reads_every_agent_and_team_average_over_the_period(
    world: PlaybackWorld, evaluated: EvaluationForm
) -> None:
    report = report_json(world.admin, form="Call quality")
    assert rows(report["agents"]) == [("Carl", 2, 40.0), ("John", 2, 70.0), ("Mary", 1, 90.0)]
    assert rows(report["teams"]) == [("Sales", 3, 76.67), ("Support", 2, 40.0)]
    assert (report["started_from"], report["started_to"]) == ("2026-03-01", "2026-03-31")
    # Every form: Mary's 20 with the sales form counts too.
    assert rows(report_json(world.admin)["agents"])[2] == ("Mary", 2, 55.0)


def test_a_supervisor_reads_only_the_agents_and_teams_they_may_see(
    world: PlaybackWorld, evaluated: EvaluationForm
) -> None:
    # Team A's supervisor may hear Carl's call on Mary's line, but Carl is not theirs.
    report = report_json(world.supervisor_a, form="Call quality")
    assert rows(report["agents"]) == [("John", 2, 70.0), ("Mary", 1, 90.0)]
    assert rows(report["teams"]) == [("Sales", 3, 76.67)]
    report = report_json(world.supervisor_b, form="Call quality")
    # Carl took the call on Mary's line: his supervisor sees it too.
    assert rows(report["agents"]) == [("Carl", 2, 40.0)]
    assert rows(report["teams"]) == [("Support", 2, 40.0)]
    assert report_json(world.outsider) == {**report_json(world.outsider), "agents": [],
                                           "teams": []}  # fmt: skip


def test_the_period_is_the_days_the_calls_were_made(
    world: PlaybackWorld, evaluated: EvaluationForm
) -> None:
    april = {"started_from": "2026-04-01", "started_to": "2026-04-30"}
    assert rows(report_json(world.admin, **april)["agents"]) == [("John", 1, 0.0)]
    backwards = {"started_from": "2026-04-02", "started_to": "2026-04-01"}
    bad = api_as(world.admin).get("/api/evaluations/report/", backwards)
    assert bad.status_code == 400
    assert "before its start" in str(bad.json())


def test_the_page_shows_the_table_and_a_chart_and_the_csv_the_same_numbers(
    world: PlaybackWorld, evaluated: EvaluationForm
) -> None:
    client = pages_as(world.supervisor_a)
    page = client.get("/evaluations/report/", {**MARCH, "form": "Call quality"})
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="report-agents"' in html and 'id="chart-agents"' in html
    assert html.count("<rect") == 3  # John, Mary; the team Sales
    assert ">70.0<" in html and ">90.0<" in html and ">76.7<" in html
    assert "Carl" not in html
    # John's bar is 70 % of the chart's 400 units.
    assert 'width="280"' in html

    download = client.get("/evaluations/report.csv", {**MARCH, "form": "Call quality"})
    assert download["Content-Type"] == "text/csv"
    assert 'filename="evaluations-2026-03-01-2026-03-31.csv"' in download["Content-Disposition"]
    assert list(csv.reader(io.StringIO(download.content.decode()))) == [
        ["kind", "name", "evaluations", "average score"],
        ["agent", "John", "2", "70.00"],
        ["agent", "Mary", "1", "90.00"],
        ["team", "Sales", "3", "76.67"],
    ]
    searches = AuditEntry.objects.filter(action="search", detail__listing="evaluation report")
    assert searches.count() == 2


def test_the_csv_keeps_a_name_that_looks_like_a_formula_as_text(
    world: PlaybackWorld, evaluated: EvaluationForm
) -> None:
    world.mary.name = "=Mary"
    world.mary.save()
    download = pages_as(world.admin).get("/evaluations/report.csv", MARCH)
    assert "'=Mary" in download.content.decode()


def test_without_a_period_the_page_shows_the_last_thirty_days(world: PlaybackWorld) -> None:
    page = pages_as(world.supervisor_a).get("/evaluations/report/").content.decode()
    today = timezone.localdate()
    assert f"to {today:%-d %b %Y}" in page
    assert "No submitted evaluations in this period." in page
