"""Evaluations (issue 17, section 3): administrators build forms, supervisors score the
recordings they may see while listening, the server computes the score, agents see their
own when allowed; every change is an audit entry. On PostgreSQL, through the pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from recorder.models import (
    Answer,
    AuditEntry,
    Evaluation,
    EvaluationForm,
    FormSection,
    Question,
    Recording,
)
from recorder.playback.access import evaluations_visible_to
from recorder.playback.scoring import ScoredAnswer, normalised, score_of
from tests.recorder.playback.evaluation_ground import (
    VERIFIES,
    evaluation_world,
    make_scorecard,
    question,
)
from tests.recorder.playback.support import PlaybackWorld
from tests.recorder.playback.test_access import pages_as

# The arithmetic alone (recorder/playback/scoring.py).


def test_the_score_is_the_weighted_share_of_the_best_answers() -> None:
    answers = [ScoredAnswer(3, 1.0), ScoredAnswer(1, 0.0), ScoredAnswer(2, 0.5)]
    assert score_of(answers) == pytest.approx(100 * (3 + 0 + 1) / 6, abs=0.005)


def test_a_scale_normalises_its_lowest_point_to_0_and_its_top_to_1() -> None:
    assert [normalised("scale", 5, point) for point in (1, 2, 3, 5)] == [0.0, 0.25, 0.5, 1.0]
    assert (normalised("yes_no", 5, 1), normalised("yes_no", 5, 0)) == (1.0, 0.0)


def test_na_answers_drop_out_of_both_sums() -> None:
    assert score_of([ScoredAnswer(5, None), ScoredAnswer(1, 1.0), ScoredAnswer(1, 0.0)]) == 50.0


def test_every_answer_na_or_every_weight_zero_gives_no_score_not_zero() -> None:
    assert score_of([ScoredAnswer(1, None), ScoredAnswer(4, None)]) is None
    assert score_of([ScoredAnswer(0, 1.0), ScoredAnswer(0, 0.0)]) is None
    assert score_of([]) is None


def test_a_zero_weight_counts_for_nothing() -> None:
    assert score_of([ScoredAnswer(0, 0.0), ScoredAnswer(2, 1.0)]) == 100.0


def test_a_failed_fail_all_question_makes_the_score_zero_even_weightless() -> None:
    answers = [ScoredAnswer(10, 1.0), ScoredAnswer(0, 0.0, fails_all=True)]
    assert score_of(answers) == 0.0
    assert score_of([ScoredAnswer(1, None), ScoredAnswer(0, 0.0, fails_all=True)]) == 0.0


def test_the_score_is_kept_to_two_decimals() -> None:
    assert score_of([ScoredAnswer(1, 1.0), ScoredAnswer(2, 0.0)]) == 33.33


# The forms, the pages and the rules, on PostgreSQL.


@pytest.fixture
def world(postgresql: None) -> PlaybackWorld:
    return evaluation_world()


@pytest.fixture
def scorecard(world: PlaybackWorld) -> EvaluationForm:
    return make_scorecard()


def answers(greets: str, empathy: str, verifies: str) -> dict[str, str]:
    return {
        f"answer-{question('Greets the customer by name').pk}": greets,
        f"answer-{question('Shows empathy').pk}": empathy,
        f"answer-{question(VERIFIES).pk}": verifies,
    }


def post_evaluation(client, recording: Recording, form: EvaluationForm, **fields) -> object:
    return client.post(
        f"/recordings/{recording.pk}/evaluations", {"form": form.pk, **fields}, follow=True
    )


def test_a_supervisor_evaluates_a_recording_on_its_page_and_sees_the_score(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = pages_as(world.supervisor_a)
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert f'id="evaluate-{scorecard.pk}"' in page and "Shows empathy" in page

    fields = answers("yes", "4", "yes")
    response = post_evaluation(client, world.recording_a, scorecard, status="submitted",
                               comment="Good call", **fields)  # fmt: skip
    evaluation = Evaluation.objects.get()
    # (1 * 1 + 2 * 0.75) / 3: the fail-all question weighs nothing when passed.
    assert evaluation.score == 83.33
    assert (evaluation.status, evaluation.agent, evaluation.evaluator_name) == (
        "submitted", world.john, "sales-lead")  # fmt: skip
    assert evaluation.submitted_at is not None
    page = response.content.decode()
    assert 'id="evaluation-list"' in page and "83.3 %" in page and "Good call" in page


def test_a_failed_fail_all_question_scores_the_evaluation_zero(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = pages_as(world.supervisor_a)
    post_evaluation(client, world.recording_a, scorecard, status="submitted",
                    **answers("yes", "5", "no"))  # fmt: skip
    assert Evaluation.objects.get().score == 0.0


def test_a_draft_is_saved_incomplete_then_submitted_in_place(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = pages_as(world.supervisor_a)
    greets = f"answer-{question('Greets the customer by name').pk}"
    post_evaluation(client, world.recording_a, scorecard, status="draft", **{greets: "no"})
    draft = Evaluation.objects.get()
    assert (draft.status, draft.score, draft.submitted_at) == ("draft", 0.0, None)
    # Submitting needs every question answered.
    response = post_evaluation(client, world.recording_a, scorecard, status="submitted",
                               **{greets: "no"})  # fmt: skip
    assert "Answer every question before submitting" in response.content.decode()
    assert Evaluation.objects.get().status == "draft"
    # N/A drops empathy out: only the greeting counts, and it is a Yes now.
    post_evaluation(client, world.recording_a, scorecard, status="submitted",
                    **answers("yes", "na", "yes"))  # fmt: skip
    evaluation = Evaluation.objects.get()
    assert (evaluation.pk, evaluation.status, evaluation.score) == (draft.pk, "submitted", 100.0)
    assert Answer.objects.filter(evaluation=evaluation, not_applicable=True).count() == 1
    actions = list(AuditEntry.objects.filter(action__startswith="evaluation")
                   .order_by("pk").values_list("action", flat=True))  # fmt: skip
    assert actions == ["evaluation", "evaluation_edit"]
    edit = AuditEntry.objects.get(action="evaluation_edit")
    assert (edit.detail["before"]["status"], edit.detail["status"]) == ("draft", "submitted")
    assert (edit.detail["before"]["score"], edit.detail["score"]) == (0.0, 100.0)


def test_answers_out_of_their_question_are_refused_with_a_sentence(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = pages_as(world.supervisor_a)
    greets = question("Greets the customer by name").pk
    empathy = question("Shows empathy").pk
    for fields, said in (
        ({f"answer-{empathy}": "6"}, "“Shows empathy” is answered from 1 to 5."),
        ({f"answer-{empathy}": "0"}, "“Shows empathy” is answered from 1 to 5."),
        ({f"answer-{greets}": "na"}, "“Greets the customer by name” cannot be answered N/A."),
        ({f"answer-{greets}": "3"}, "is answered Yes or No."),
        ({f"answer-{greets}": "maybe"}, "An answer is Yes, No, N/A or a point of its scale."),
    ):
        response = post_evaluation(client, world.recording_a, scorecard, status="draft", **fields)
        assert said in response.content.decode(), fields
    assert not Evaluation.objects.exists() and not AuditEntry.objects.filter(
        action__startswith="evaluation").exists()  # fmt: skip


def test_the_database_holds_the_contract(world: PlaybackWorld, scorecard: EvaluationForm) -> None:
    section = scorecard.sections.first()
    for bad in (
        Question(section=section, text="negative", weight=-1),
        Question(section=section, text="scale of one", kind="scale", scale_max=1),
        Question(section=section, text="scale of eleven", kind="scale", scale_max=11),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            bad.save()
    evaluation = Evaluation.objects.create(recording=world.recording_a, form=scorecard,
                                           evaluator=world.supervisor_a)  # fmt: skip
    greets = question("Greets the customer by name")
    Answer.objects.create(evaluation=evaluation, question=greets, value=1)
    for bad in (
        Answer(evaluation=evaluation, question=greets, value=0),  # a second answer
        Answer(evaluation=evaluation, question=question("Shows empathy")),  # neither value nor N/A
        Answer(
            evaluation=evaluation, question=question("Shows empathy"), value=2, not_applicable=True
        ),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            bad.save()
    for bad_fields in ({"score": 100.5}, {"status": "submitted"}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Evaluation.objects.filter(pk=evaluation.pk).update(**bad_fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Evaluation.objects.create(recording=world.recording_a, form=scorecard,
                                  evaluator=world.supervisor_a)  # fmt: skip
    # The sentences the admin shows for the same rules.
    with pytest.raises(ValidationError, match=r"A weight is a number from 0 to 1000\."):
        Question(section=section, text="heavy", weight=1001).validate_constraints()


def test_a_used_form_cannot_change_under_its_evaluations_a_new_version_can(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = pages_as(world.supervisor_a)
    post_evaluation(client, world.recording_a, scorecard, status="submitted",
                    **answers("yes", "3", "yes"))  # fmt: skip
    greets = question("Greets the customer by name")
    greets.weight = 5
    with pytest.raises(ValidationError, match="has been used by evaluations"):
        greets.save()
    with pytest.raises(ValidationError, match="Make a new version"):
        FormSection.objects.create(form=scorecard, title="Closing")
    with pytest.raises(ValidationError):
        scorecard.sections.first().delete()

    copy = scorecard.new_version()
    scorecard.refresh_from_db()
    assert (copy.name, copy.version, copy.active, scorecard.active) == (
        "Call quality", 2, True, False)  # fmt: skip
    copied = Question.objects.filter(section__form=copy).order_by("section__order", "order")
    assert [q.text for q in copied] == [q.text for q in Question.objects.filter(
        section__form=scorecard).order_by("section__order", "order")]  # fmt: skip
    changed = copied.first()
    changed.weight = 5
    changed.save()  # the new version is not used yet
    assert question_weight(scorecard) == 1.0


def question_weight(form: EvaluationForm) -> float:
    return Question.objects.get(section__form=form, text="Greets the customer by name").weight


def test_the_admin_builds_a_form_and_locks_it_once_used(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    client = pages_as(world.admin)
    response = client.post("/admin/recorder/evaluationform/add/", {
        "name": "Sales call", "description": "", "active": "on",
        "sections-TOTAL_FORMS": "1", "sections-INITIAL_FORMS": "0",
        "sections-0-order": "1", "sections-0-title": "Pitch",
    })  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:3000]
    section = FormSection.objects.get(title="Pitch")
    section_page = client.get(f"/admin/recorder/formsection/{section.pk}/change/")
    assert "questions-TOTAL_FORMS" in section_page.content.decode()

    post_evaluation(pages_as(world.supervisor_a), world.recording_a, scorecard,
                    status="submitted", **answers("yes", "3", "yes"))  # fmt: skip
    page = client.get(f"/admin/recorder/evaluationform/{scorecard.pk}/change/").content.decode()
    assert "has been used by evaluations" in page
    assert "sections-TOTAL_FORMS" in page and 'name="sections-0-title"' not in page
    used_section = scorecard.sections.first()
    page = client.get(f"/admin/recorder/formsection/{used_section.pk}/change/").content.decode()
    assert 'name="questions-0-weight"' not in page

    client.post("/admin/recorder/evaluationform/", {
        "action": "make_new_version", "_selected_action": [scorecard.pk],
    })  # fmt: skip
    assert EvaluationForm.objects.filter(name="Call quality", version=2, active=True).exists()


def test_a_supervisor_evaluates_only_recordings_they_may_see(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    # Team B's supervisor: team A's recording does not exist for them.
    response = pages_as(world.supervisor_b).post(
        f"/recordings/{world.recording_a.pk}/evaluations",
        {"form": scorecard.pk, "status": "draft", **answers("yes", "3", "yes")},
    )
    assert response.status_code == 404
    # Without the permission: no panel, and a refusal.
    world.supervisor_a.user_permissions.clear()
    client = pages_as(world.supervisor_a)
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert f'id="evaluate-{scorecard.pk}"' not in page
    response = client.post(f"/recordings/{world.recording_a.pk}/evaluations",
                           {"form": scorecard.pk, **answers("yes", "3", "yes")})  # fmt: skip
    assert response.status_code == 403
    assert not Evaluation.objects.exists()


def test_nobody_evaluates_their_own_calls(
    world: PlaybackWorld, scorecard: EvaluationForm, settings
) -> None:
    settings.QMS_AGENTS_HEAR_OWN = True
    world.agent.user_permissions.add(Permission.objects.get(codename="add_evaluation"))
    client = pages_as(world.agent)
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert f'id="evaluate-{scorecard.pk}"' not in page
    response = client.post(f"/recordings/{world.recording_a.pk}/evaluations",
                           {"form": scorecard.pk, **answers("yes", "5", "yes")})  # fmt: skip
    assert response.status_code == 403


def submitted_by_a(world: PlaybackWorld, form: EvaluationForm) -> Evaluation:
    post_evaluation(pages_as(world.supervisor_a), world.recording_a, form, status="submitted",
                    comment="Keep it up", **answers("yes", "5", "yes"))  # fmt: skip
    return Evaluation.objects.get()


def test_an_agent_sees_their_own_submitted_evaluations_only_when_allowed(
    world: PlaybackWorld, scorecard: EvaluationForm, settings
) -> None:
    settings.QMS_AGENTS_HEAR_OWN = True
    evaluation = submitted_by_a(world, scorecard)
    page = pages_as(world.agent).get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert "Keep it up" not in page and "No evaluations." in page
    assert not evaluations_visible_to(world.agent).exists()

    world.agent.user_permissions.add(Permission.objects.get(codename="view_own_evaluations"))
    world.agent = type(world.agent).objects.get(pk=world.agent.pk)  # permissions re-read
    page = pages_as(world.agent).get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert "Keep it up" in page and "100.0 %" in page
    assert list(evaluations_visible_to(world.agent)) == [evaluation]
    # Even without hearing the call, the agent reads the evaluation of it.
    settings.QMS_AGENTS_HEAR_OWN = False
    assert list(evaluations_visible_to(world.agent)) == [evaluation]
    # A draft of theirs is nobody's business but its evaluator's.
    Evaluation.objects.filter(pk=evaluation.pk).update(status="draft", submitted_at=None)
    assert not evaluations_visible_to(world.agent).exists()
    assert not evaluations_visible_to(world.supervisor_b).exists()


def test_other_supervisors_see_submitted_evaluations_of_their_recordings_not_drafts(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    evaluation = submitted_by_a(world, scorecard)
    colleague = world.supervisor_b
    assert not evaluations_visible_to(colleague).exists()  # team B's supervisor
    world.sales.supervisors.add(colleague)
    assert list(evaluations_visible_to(colleague)) == [evaluation]
    # Only the evaluator deletes it.
    url = f"/recordings/{world.recording_a.pk}/evaluations"
    assert pages_as(colleague).post(url, {"delete": evaluation.pk}).status_code == 403
    Evaluation.objects.filter(pk=evaluation.pk).update(status="draft", submitted_at=None)
    assert not evaluations_visible_to(colleague).exists()
    assert list(evaluations_visible_to(world.supervisor_a)) == [evaluation]
    assert list(evaluations_visible_to(world.admin)) == [evaluation]
    assert not evaluations_visible_to(world.outsider).exists()


def test_its_evaluator_deletes_an_evaluation_and_the_trail_keeps_what_it_said(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    evaluation = submitted_by_a(world, scorecard)
    client = pages_as(world.supervisor_a)
    client.post(f"/recordings/{world.recording_a.pk}/evaluations", {"delete": evaluation.pk})
    assert not Evaluation.objects.exists() and not Answer.objects.exists()
    deleted = AuditEntry.objects.get(action="evaluation_del")
    assert (deleted.username, deleted.recording_id) == ("sales-lead", world.recording_a.pk)
    assert deleted.detail["score"] == 100.0 and deleted.detail["comment"] == "Keep it up"
    assert len(deleted.detail["answers"]) == 3


def test_a_retired_form_is_not_offered_nor_used_for_new_evaluations(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    EvaluationForm.objects.filter(pk=scorecard.pk).update(active=False)
    client = pages_as(world.supervisor_a)
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert f'id="evaluate-{scorecard.pk}"' not in page
    response = post_evaluation(client, world.recording_a, scorecard, status="draft",
                               **answers("yes", "3", "yes"))  # fmt: skip
    assert "This form is retired" in response.content.decode()
    assert not Evaluation.objects.exists()
