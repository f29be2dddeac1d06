"""Evaluations of recordings: the one place that writes them, for the pages and the API
alike (docs/playback.md, "Evaluations").

A supervisor evaluates only recordings they may see (recorder/playback/access.py decides
that before these are called), with recorder.add_evaluation, and never their own calls. An
evaluation is changed or deleted by its evaluator, or by a holder of
recorder.change_evaluation / delete_evaluation. The score is computed here, from the answers
(recorder/playback/scoring.py), never taken from the client. Every change is an audit entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from integrations.bounds import clean_text
from recorder.models import (
    NOTE_TEXT_LIMIT,
    Answer,
    AuditEntry,
    Evaluation,
    EvaluationForm,
    Question,
    Recording,
)
from recorder.playback.audit import audit
from recorder.playback.scoring import ScoredAnswer, normalised, score_of

ANSWER_COMMENT_LIMIT = 500
# The words of the page's answers; a scale's points are their digits.
PAGE_WORDS = {"yes": 1, "no": 0}
NOT_APPLICABLE = "na"


@dataclass(frozen=True)
class AnswerGiven:
    """An answer as the person gave it, before it is checked against its question."""

    value: int | None = None
    not_applicable: bool = False
    comment: str = ""
    position_seconds: float | None = None


@dataclass
class EvaluationGiven:
    answers: dict[int, AnswerGiven] = field(default_factory=dict)
    comment: str = ""
    submit: bool = False


def may_evaluate(user) -> bool:
    return bool(user.is_active and user.has_perm("recorder.add_evaluation"))


def may_change_evaluation(user, evaluation: Evaluation, action: str = "change") -> bool:
    own = evaluation.evaluator_id is not None and evaluation.evaluator_id == user.pk
    return bool(user.is_active and (own or user.has_perm(f"recorder.{action}_evaluation")))


def questions_of(form: EvaluationForm) -> list[Question]:
    return list(Question.objects.filter(section__form=form).select_related("section"))


def checked_answers(
    form: EvaluationForm, recording: Recording, given: EvaluationGiven
) -> list[tuple[Question, AnswerGiven]]:
    """The answers against their questions, or ValidationError with every sentence."""
    questions = questions_of(form)
    if not questions:
        raise ValidationError("This form has no questions yet.")
    by_id = {question.pk: question for question in questions}
    errors = [f"Question {pk} is not on this form." for pk in given.answers if pk not in by_id]
    pairs = []
    for question in questions:
        answer = given.answers.get(question.pk)
        if answer is None:
            if given.submit:
                errors.append(f"Answer every question before submitting: “{question.text}”.")
            continue
        errors.extend(answer_errors(question, answer, recording))
        pairs.append((question, answer))
    if len(given.comment) > NOTE_TEXT_LIMIT:
        errors.append(f"A comment holds at most {NOTE_TEXT_LIMIT} characters.")
    if errors:
        raise ValidationError(errors)
    return pairs


def answer_errors(question: Question, answer: AnswerGiven, recording: Recording) -> list[str]:
    if answer.not_applicable:
        wrong = not question.allows_na and f"“{question.text}” cannot be answered N/A."
    elif question.kind == Question.Kind.YES_NO:
        wrong = answer.value not in (0, 1) and f"“{question.text}” is answered Yes or No."
    else:
        top = question.scale_max
        in_scale = answer.value is not None and 1 <= answer.value <= top
        wrong = not in_scale and f"“{question.text}” is answered from 1 to {top}."
    errors = [wrong] if wrong else []
    if len(answer.comment) > ANSWER_COMMENT_LIMIT:
        errors.append(f"An answer's comment holds at most {ANSWER_COMMENT_LIMIT} characters.")
    length = recording.duration_seconds or 0.0
    at = answer.position_seconds
    if at is not None and not 0.0 <= at <= length + 0.5:
        errors.append(f"An answer's position is a time in the recording: 0 to {length:.1f} s.")
    return errors


def scored(question: Question, answer: AnswerGiven) -> ScoredAnswer:
    if answer.not_applicable:
        return ScoredAnswer(question.weight, None)
    fraction = normalised(question.kind, question.scale_max, answer.value)
    fails = question.fail_all and answer.value == question.bottom_value()
    return ScoredAnswer(question.weight, fraction, fails)


def evaluate(
    request: HttpRequest, recording: Recording, form: EvaluationForm, given: EvaluationGiven
) -> Evaluation:
    """A new evaluation of `recording` with `form` by the person asking."""
    user = request.user
    if not may_evaluate(user):
        raise PermissionDenied("You may not evaluate recordings.")
    if recording.agent_id is not None and recording.agent.user_id == user.pk:
        raise PermissionDenied("You may not evaluate your own calls.")
    if not form.active:
        raise ValidationError("This form is retired: it is no longer used for new evaluations.")
    pairs = checked_answers(form, recording, given)
    evaluation = Evaluation(
        recording=recording, form=form, agent_id=recording.agent_id, evaluator=user,
        evaluator_name=user.get_username(),
    )  # fmt: skip
    try:
        with transaction.atomic():
            write(evaluation, pairs, given)
            audit(request, AuditEntry.Action.EVALUATION, recording, summary(evaluation))
    except IntegrityError:
        raise ValidationError(
            "You have evaluated this recording with this form already: change that evaluation."
        ) from None
    return evaluation


def change_evaluation(
    request: HttpRequest, evaluation: Evaluation, given: EvaluationGiven
) -> Evaluation:
    if not may_change_evaluation(request.user, evaluation):
        raise PermissionDenied("Only its evaluator may change this evaluation.")
    submitted = evaluation.status == Evaluation.Status.SUBMITTED
    given.submit = given.submit or submitted  # a submitted evaluation stays submitted
    pairs = checked_answers(evaluation.form, evaluation.recording, given)
    with transaction.atomic():
        before = summary(evaluation)
        write(evaluation, pairs, given)
        detail = {**summary(evaluation), "before": before}
        audit(request, AuditEntry.Action.EVALUATION_EDIT, evaluation.recording, detail)
    return evaluation


def delete_evaluation(request: HttpRequest, evaluation: Evaluation) -> None:
    if not may_change_evaluation(request.user, evaluation, "delete"):
        raise PermissionDenied("Only its evaluator may delete this evaluation.")
    with transaction.atomic():
        audit(request, AuditEntry.Action.EVALUATION_DELETE, evaluation.recording,
              summary(evaluation))  # fmt: skip
        evaluation.delete()


def write(
    evaluation: Evaluation, pairs: list[tuple[Question, AnswerGiven]], given: EvaluationGiven
) -> None:
    """The evaluation, its answers and its score, in the caller's transaction."""
    now = timezone.now()
    evaluation.score = score_of([scored(question, answer) for question, answer in pairs])
    evaluation.comment = clean_text(given.comment.strip(), NOTE_TEXT_LIMIT)
    evaluation.updated_at = now
    if given.submit and evaluation.submitted_at is None:
        evaluation.status, evaluation.submitted_at = Evaluation.Status.SUBMITTED, now
    evaluation.save()
    evaluation.answers.all().delete()
    Answer.objects.bulk_create(
        Answer(evaluation=evaluation, question=question,
               value=None if answer.not_applicable else answer.value,
               not_applicable=answer.not_applicable,
               comment=clean_text(answer.comment.strip(), ANSWER_COMMENT_LIMIT),
               position_seconds=answer.position_seconds)
        for question, answer in pairs
    )  # fmt: skip


def summary(evaluation: Evaluation) -> dict:
    """What an audit entry keeps of an evaluation: enough to tell what it said."""
    answers = {
        str(answer.question_id): "N/A" if answer.not_applicable else answer.value
        for answer in evaluation.answers.all()
    }
    return {
        "evaluation": evaluation.pk,
        "form": evaluation.form.name,
        "version": evaluation.form.version,
        "status": evaluation.status,
        "score": evaluation.score,
        "comment": evaluation.comment,
        "answers": answers,
    }


def given_from_page(form: EvaluationForm, post: Mapping[str, str]) -> EvaluationGiven:
    """The recording page's form: answer-<question id> is yes, no, na or a scale's point;
    comment-<question id> a comment on it; status=submitted submits."""
    answers = {}
    for question in questions_of(form):
        word = str(post.get(f"answer-{question.pk}", "")).strip().lower()
        if not word:
            continue
        comment = str(post.get(f"comment-{question.pk}", ""))
        if word == NOT_APPLICABLE:
            answers[question.pk] = AnswerGiven(not_applicable=True, comment=comment)
        else:
            answers[question.pk] = AnswerGiven(value=page_value(word), comment=comment)
    return EvaluationGiven(answers, str(post.get("comment", "")), post.get("status") == "submitted")


def page_value(word: str) -> int:
    if word in PAGE_WORDS:
        return PAGE_WORDS[word]
    if word.isdigit() and len(word) <= 2:
        return int(word)
    raise ValidationError("An answer is Yes, No, N/A or a point of its scale.")


def given_from_api(answers: Iterable[Mapping], comment: str, submit: bool) -> EvaluationGiven:
    """The API's answers, already typed by its serializer."""
    given = EvaluationGiven(comment=comment, submit=submit)
    for answer in answers:
        pk = answer["question"]
        if pk in given.answers:
            raise ValidationError(f"Question {pk} is answered twice.")
        given.answers[pk] = AnswerGiven(
            value=answer.get("value"),
            not_applicable=bool(answer.get("not_applicable", False)),
            comment=answer.get("comment", ""),
            position_seconds=answer.get("position_seconds"),
        )
    return given


# The recording page's evaluate panel: each active form as the person's sheet, filled in
# with what their own evaluation of the recording says so far.


@dataclass(frozen=True)
class Choice:
    word: str
    label: str
    chosen: bool


@dataclass(frozen=True)
class QuestionSheet:
    question: Question
    choices: list[Choice]
    comment: str


@dataclass(frozen=True)
class FormSheet:
    form: EvaluationForm
    mine: Evaluation | None
    sections: list[tuple[str, list[QuestionSheet]]]


def sheets_for(user, recording: Recording) -> list[FormSheet]:
    """The active forms the person may evaluate `recording` with (none when they may not)."""
    own_call = recording.agent_id is not None and recording.agent.user_id == user.pk
    if not may_evaluate(user) or own_call:
        return []
    mine = {
        evaluation.form_id: evaluation
        for evaluation in Evaluation.objects.filter(recording=recording, evaluator=user)
        .prefetch_related("answers")
    }  # fmt: skip
    sheets = []
    for form in EvaluationForm.objects.filter(active=True).prefetch_related("sections__questions"):
        evaluation = mine.get(form.pk)
        answers = (
            {answer.question_id: answer for answer in evaluation.answers.all()}
            if evaluation
            else {}
        )
        sections = [
            (section.title, [question_sheet(question, answers.get(question.pk))
                             for question in section.questions.all()])
            for section in form.sections.all()
        ]  # fmt: skip
        if any(questions for _, questions in sections):
            sheets.append(FormSheet(form, evaluation, sections))
    return sheets


def question_sheet(question: Question, answer: Answer | None) -> QuestionSheet:
    if question.kind == Question.Kind.YES_NO:
        options = [("yes", "Yes", 1), ("no", "No", 0)]
    else:
        options = [(str(point), str(point), point) for point in range(1, question.scale_max + 1)]
    value = answer.value if answer is not None and not answer.not_applicable else None
    choices = [Choice(word, label, value == point) for word, label, point in options]
    if question.allows_na:
        choices.append(Choice(NOT_APPLICABLE, "N/A", answer is not None and answer.not_applicable))
    return QuestionSheet(question, choices, answer.comment if answer is not None else "")
