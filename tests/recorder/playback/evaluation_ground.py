"""The ground of the evaluation tests: the playback world with supervisors who may
evaluate, and a scorecard of three questions."""

from __future__ import annotations

from django.contrib.auth.models import Permission

from recorder.models import EvaluationForm, FormSection, Question, Recording
from tests.recorder.playback.support import PlaybackWorld, build_world

VERIFIES = "Verifies the caller's identity"


def evaluation_world() -> PlaybackWorld:
    world = build_world()
    evaluating = Permission.objects.filter(codename="add_evaluation")
    for supervisor in (world.supervisor_a, world.supervisor_b):
        supervisor.user_permissions.add(*evaluating)
    Recording.objects.filter(pk=world.recording_a.pk).update(duration_seconds=30.0)
    world.recording_a.refresh_from_db()
    return world


def make_scorecard() -> EvaluationForm:
    """Greeting (yes/no, weight 1), Empathy (scale 1-5, weight 2, N/A allowed), and a
    weightless fail-all: the caller's identity (yes/no)."""
    form = EvaluationForm.objects.create(name="Call quality")
    opening = FormSection.objects.create(form=form, order=1, title="Opening")
    handling = FormSection.objects.create(form=form, order=2, title="Handling")
    Question.objects.create(section=opening, order=1, text="Greets the customer by name")
    Question.objects.create(section=handling, order=1, text="Shows empathy", kind="scale",
                            scale_max=5, weight=2, allows_na=True)  # fmt: skip
    Question.objects.create(section=handling, order=2, text=VERIFIES, weight=0, fail_all=True)
    return form


def question(text: str) -> Question:
    return Question.objects.get(text=text)
