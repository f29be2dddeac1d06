"""An agent's own evaluations on a page of their own (issue 17, section 3: "the agent may see
their own evaluations when allowed"): with recorder.view_own_evaluations, whether or not
they may hear the calls; submitted ones only, with the answers, the comment and the average;
nobody else's; each look written to the audit trail."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from recorder.models import AuditEntry, Evaluation, EvaluationForm
from tests.recorder.playback.evaluation_ground import evaluation_world, make_scorecard
from tests.recorder.playback.support import PlaybackWorld
from tests.recorder.playback.test_access import pages_as
from tests.recorder.playback.test_evaluations import answers, post_evaluation


@pytest.fixture
def world(postgresql: None) -> PlaybackWorld:
    return evaluation_world()


@pytest.fixture
def scorecard(world: PlaybackWorld) -> EvaluationForm:
    return make_scorecard()


def allow_own(world: PlaybackWorld) -> None:
    world.agent.user_permissions.add(Permission.objects.get(codename="view_own_evaluations"))


def test_an_allowed_agent_reads_their_submitted_evaluations_and_average(
    world: PlaybackWorld, scorecard: EvaluationForm, settings
) -> None:
    settings.QMS_AGENTS_HEAR_OWN = False  # reading one's evaluations needs no hearing
    lead = pages_as(world.supervisor_a)
    post_evaluation(lead, world.recording_a, scorecard, status="submitted",
                    comment="Warm greeting", **answers("yes", "5", "yes"))  # fmt: skip
    post_evaluation(lead, world.recording_on_marys_line, scorecard, status="submitted",
                    comment="Mary's call", **answers("no", "1", "yes"))  # fmt: skip
    allow_own(world)
    page = pages_as(world.agent).get("/evaluations/mine/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "1 evaluation of John" in text and "on average <strong>100.0 %</strong>" in text
    assert "Warm greeting" in text and "Greets the customer by name" in text
    assert "Mary's call" not in text
    assert 'href="/evaluations/mine/"' in text  # the menu offers it
    [looked] = AuditEntry.objects.filter(user=world.agent, action=AuditEntry.Action.SEARCH)
    assert looked.detail == {"filters": {}, "listing": "my evaluations"}


def test_drafts_are_not_shown_to_the_agent(world: PlaybackWorld, scorecard: EvaluationForm) -> None:
    post_evaluation(pages_as(world.supervisor_a), world.recording_a, scorecard,
                    status="draft", comment="Half done", **answers("yes", "5", "yes"))  # fmt: skip
    assert Evaluation.objects.get().status == Evaluation.Status.DRAFT
    allow_own(world)
    text = pages_as(world.agent).get("/evaluations/mine/").content.decode()
    assert "0 evaluations of John" in text and "Half done" not in text


def test_without_the_permission_or_an_agent_it_says_why_and_shows_nothing(
    world: PlaybackWorld, scorecard: EvaluationForm
) -> None:
    lead = pages_as(world.supervisor_a)
    post_evaluation(lead, world.recording_a, scorecard, status="submitted",
                    comment="Warm greeting", **answers("yes", "5", "yes"))  # fmt: skip
    refused = pages_as(world.agent).get("/evaluations/mine/").content.decode()
    assert "Your evaluations are not shown to you" in refused and "Warm greeting" not in refused
    assert 'href="/evaluations/mine/"' not in refused
    no_agent = pages_as(world.supervisor_b).get("/evaluations/mine/").content.decode()
    assert "Your login is no agent's" in no_agent and "Warm greeting" not in no_agent
    assert not AuditEntry.objects.filter(detail__listing="my evaluations").exists()
