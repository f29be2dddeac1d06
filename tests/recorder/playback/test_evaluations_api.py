"""Evaluations through the API (issue 17, section 3): the forms to read, evaluations to
list, create, read, change and delete, scoped like the recordings, the score the server's."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from recorder.models import AuditEntry, Evaluation, EvaluationForm
from tests.recorder.playback.evaluation_ground import (
    VERIFIES,
    evaluation_world,
    make_scorecard,
    question,
)
from tests.recorder.playback.support import PlaybackWorld
from tests.recorder.playback.test_access import api_as


@pytest.fixture
def world(postgresql: None) -> PlaybackWorld:
    return evaluation_world()


@pytest.fixture
def scorecard(world: PlaybackWorld) -> EvaluationForm:
    return make_scorecard()


def body(world: PlaybackWorld, form: EvaluationForm, greets: int, empathy: int | None,
         verifies: int, **extra) -> dict:  # fmt: skip
    empathy_answer = {"value": empathy} if empathy is not None else {"not_applicable": True}
    return {
        "recording": world.recording_a.pk,
        "form": form.pk,
        "answers": [
            {"question": question("Greets the customer by name").pk, "value": greets},
            {"question": question("Shows empathy").pk, **empathy_answer},
            {"question": question(VERIFIES).pk, "value": verifies, "comment": "asked the PIN"},
        ],
        **extra,
    }


def test_the_forms_are_read_with_their_sections_and_questions(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    forms = api_as(world.supervisor_a).get("/api/evaluation-forms/").json()["results"]
    (form,) = forms
    assert (form["name"], form["version"], form["active"]) == ("Call quality", 1, True)
    assert [section["title"] for section in form["sections"]] == ["Opening", "Handling"]
    empathy = form["sections"][1]["questions"][0]
    assert (empathy["kind"], empathy["scale_max"], empathy["weight"], empathy["allows_na"]) == (
        "scale", 5, 2.0, True)  # fmt: skip
    assert api_as(None).get("/api/evaluation-forms/").status_code == 403


def test_a_supervisor_evaluates_through_the_api_and_the_server_scores_it(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = api_as(world.supervisor_a)
    sent = body(world, scorecard, 1, 3, 1, status="submitted", score=100, comment="fine")
    created = client.post("/api/evaluations/", sent, format="json")
    assert created.status_code == 201, created.content
    evaluation = created.json()
    # (1 + 2 * 0.5) / 3: the score sent is not taken.
    assert (evaluation["score"], evaluation["status"], evaluation["agent"]) == (
        66.67, "submitted", "John")  # fmt: skip
    assert evaluation["evaluator"] == "sales-lead" and len(evaluation["answers"]) == 3
    assert client.post("/api/evaluations/", sent, format="json").status_code == 400  # twice

    # PATCH one answer: the others stay, the score is computed again.
    url = f"/api/evaluations/{evaluation['id']}/"
    change = {"answers": [{"question": question("Shows empathy").pk, "not_applicable": True}]}
    changed = client.patch(url, change, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["score"] == 100.0 and len(changed.json()["answers"]) == 3
    failing = {"answers": [{"question": question(VERIFIES).pk, "value": 0}]}
    assert client.patch(url, failing, format="json").json()["score"] == 0.0
    listed = client.get("/api/evaluations/", {"recording": world.recording_a.pk}).json()
    assert [item["id"] for item in listed["results"]] == [evaluation["id"]]
    assert client.delete(url).status_code == 204
    actions = list(AuditEntry.objects.filter(action__startswith="evaluation")
                   .order_by("pk").values_list("action", flat=True))  # fmt: skip
    assert actions == ["evaluation", "evaluation_edit", "evaluation_edit", "evaluation_del"]


def test_the_api_refuses_answers_that_do_not_fit_with_the_sentence(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = api_as(world.supervisor_a)
    response = client.post("/api/evaluations/", body(world, scorecard, 1, 9, 1), format="json")
    assert response.status_code == 400
    assert "“Shows empathy” is answered from 1 to 5." in response.json()["detail"]
    incomplete = {**body(world, scorecard, 1, 3, 1, status="submitted")}
    incomplete["answers"] = incomplete["answers"][:1]
    response = client.post("/api/evaluations/", incomplete, format="json")
    assert "Answer every question before submitting" in str(response.json())
    assert not Evaluation.objects.exists()


def test_another_team_s_supervisor_can_neither_evaluate_nor_see_it(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    api_as(world.supervisor_a).post("/api/evaluations/",
                                    body(world, scorecard, 1, 3, 1, status="submitted"),
                                    format="json")  # fmt: skip
    evaluation = Evaluation.objects.get()
    stranger = api_as(world.supervisor_b)
    response = stranger.post("/api/evaluations/", body(world, scorecard, 1, 3, 1), format="json")
    assert response.status_code == 400
    assert response.json() == {"recording": ["No recording you may see has this id."]}
    assert stranger.get("/api/evaluations/").json()["count"] == 0
    url = f"/api/evaluations/{evaluation.pk}/"
    assert stranger.get(url).status_code == 404
    assert stranger.patch(url, {"comment": "x"}, format="json").status_code == 404
    assert stranger.delete(url).status_code == 404
    # A colleague on the same team reads it but may not change it.
    world.sales.supervisors.add(world.supervisor_b)
    assert stranger.get(url).status_code == 200
    assert stranger.patch(url, {"comment": "x"}, format="json").status_code == 403


def test_an_agent_reads_their_own_evaluations_only_with_the_permission(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    api_as(world.supervisor_a).post("/api/evaluations/",
                                    body(world, scorecard, 1, None, 1, status="submitted"),
                                    format="json")  # fmt: skip
    assert api_as(world.agent).get("/api/evaluations/").json()["count"] == 0
    world.agent.user_permissions.add(Permission.objects.get(codename="view_own_evaluations"))
    john = User.objects.get(pk=world.agent.pk)
    (own,) = api_as(john).get("/api/evaluations/").json()["results"]
    assert (own["score"], own["agent"]) == (100.0, "John")
    # Reading is all: John may not evaluate, nor change his evaluation.
    assert api_as(john).patch(f"/api/evaluations/{own['id']}/", {"comment": "unfair"},
                              format="json").status_code == 403  # fmt: skip


def test_the_score_cannot_be_written(world: PlaybackWorld, scorecard: EvaluationForm) -> None:
    client = api_as(world.supervisor_a)
    created = client.post("/api/evaluations/", body(world, scorecard, 0, 1, 1), format="json")
    url = f"/api/evaluations/{created.json()['id']}/"
    assert client.patch(url, {"score": 99}, format="json").json()["score"] == 0.0
