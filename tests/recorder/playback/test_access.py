"""Who sees which recording (issue 6, section 1): one rule, the same through every door."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from rest_framework.test import APIClient

from recorder.models import Call
from recorder.playback.access import recordings_visible_to
from tests.recorder.playback.support import (
    STARTED,
    WHO_SEES_TEAM_A,
    PlaybackWorld,
    build_world,
    login,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


def api_as(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def pages_as(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def listed_ids(client: APIClient) -> set[int]:
    response = client.get("/api/recordings/")
    assert response.status_code == 200, response.content
    return {item["id"] for item in response.json()["results"]}


# The permission matrix: each role against each door to the audio of a team A recording. ---

ALLOWED = {"list": True, "detail": 200, "api_audio": 200, "audio": 200, "ranged": 206}
HIDDEN = {"list": False, "detail": 404, "api_audio": 404, "audio": 404, "ranged": 404}

MATRIX = [(role, own, ALLOWED if sees else HIDDEN) for role, own, sees in WHO_SEES_TEAM_A]


@pytest.mark.parametrize(("role", "agents_hear_own", "expected"), MATRIX)
def test_the_permission_matrix_for_a_team_a_recording(
    world: PlaybackWorld, role: str, agents_hear_own: bool, expected: dict
) -> None:
    user = getattr(world, role)
    pk = world.recording_a.pk
    with override_settings(QMS_AGENTS_HEAR_OWN=agents_hear_own):
        api = api_as(user)
        pages = pages_as(user)
        assert (pk in listed_ids(api)) is expected["list"]
        assert api.get(f"/api/recordings/{pk}/").status_code == expected["detail"]
        assert api.get(f"/api/recordings/{pk}/audio/").status_code == expected["api_audio"]
        assert pages.get(f"/recordings/{pk}/audio").status_code == expected["audio"]
        ranged = pages.get(f"/recordings/{pk}/audio", HTTP_RANGE="bytes=0-99")
        assert ranged.status_code == expected["ranged"]


def test_anonymous_is_asked_to_log_in_and_learns_nothing(world: PlaybackWorld) -> None:
    pk = world.recording_a.pk
    api = APIClient()
    for url in ("/api/recordings/", f"/api/recordings/{pk}/", f"/api/recordings/{pk}/audio/"):
        assert api.get(url).status_code == 403, url
    # A recording that does not exist answers exactly as one that does.
    assert api.get("/api/recordings/999999/audio/").status_code == 403
    page = Client().get(f"/recordings/{pk}/audio")
    assert page.status_code == 302
    assert page["Location"].startswith("/login/?next=/recordings/")


def test_a_hidden_recording_answers_exactly_as_a_missing_one(world: PlaybackWorld) -> None:
    api = api_as(world.supervisor_b)
    hidden = api.get(f"/api/recordings/{world.recording_a.pk}/")
    missing = api.get("/api/recordings/999999/")
    assert (hidden.status_code, hidden.json()) == (missing.status_code, missing.json())
    hidden_audio = pages_as(world.supervisor_b).get(f"/recordings/{world.recording_a.pk}/audio")
    assert hidden_audio.status_code == 404


# What each role sees. ------------------------------------------------------------------------


def test_a_supervisor_sees_their_agents_and_the_lines_their_agents_own(
    world: PlaybackWorld,
) -> None:
    assert listed_ids(api_as(world.supervisor_a)) == {
        world.recording_a.pk,
        world.recording_on_marys_line.pk,  # Carl took it, but on Mary's extension 9002.
    }
    assert listed_ids(api_as(world.supervisor_b)) == {
        world.recording_b.pk,
        world.recording_on_marys_line.pk,  # Carl, of team B, took it.
    }


def test_an_admin_and_a_holder_of_view_all_recordings_see_everything(
    world: PlaybackWorld,
) -> None:
    everything = {
        world.recording_a.pk,
        world.recording_b.pk,
        world.recording_on_marys_line.pk,
    }
    auditor = login("auditor", "view_all_recordings")
    assert listed_ids(api_as(world.admin)) == everything
    assert listed_ids(api_as(auditor)) == everything


@override_settings(QMS_AGENTS_HEAR_OWN=True)
def test_an_agent_hears_the_calls_they_took_and_nothing_else(world: PlaybackWorld) -> None:
    assert listed_ids(api_as(world.agent)) == {world.recording_a.pk}
    world.mary.user = login("mary")
    world.mary.save()
    # Carl's call on Mary's line carries Carl's voice: it is not Mary's to hear.
    assert listed_ids(api_as(world.mary.user)) == set()


def test_with_the_setting_off_an_agent_sees_nothing(world: PlaybackWorld) -> None:
    assert listed_ids(api_as(world.agent)) == set()


def test_someone_with_no_grant_sees_an_empty_list(world: PlaybackWorld) -> None:
    response = api_as(world.outsider).get("/api/recordings/")
    assert response.json()["count"] == 0


def test_a_deactivated_supervisor_sees_nothing(world: PlaybackWorld) -> None:
    world.supervisor_a.is_active = False
    assert not recordings_visible_to(world.supervisor_a).exists()


def test_the_view_recording_model_permission_alone_grants_no_recording(
    world: PlaybackWorld,
) -> None:
    # It opens the admin's recording page; what that page lists is still scoped.
    assert listed_ids(api_as(login("clerk", "view_recording"))) == set()


# Filters narrow what one may see; they never reveal what one may not. ------------------------


@pytest.mark.parametrize(
    ("name", "theirs", "nobodys"),
    [
        ("extension", "9001", "0000"),
        ("agent", "John", "Nobody"),
        ("team", "Sales", "No team"),
    ],
)
def test_filtering_on_another_teams_values_looks_like_filtering_on_nothing(
    world: PlaybackWorld, name: str, theirs: str, nobodys: str
) -> None:
    api = api_as(world.supervisor_b)
    on_theirs = api.get("/api/recordings/", {name: theirs}).json()
    on_nothing = api.get("/api/recordings/", {name: nobodys}).json()
    assert on_theirs == on_nothing == {"count": 0, "next": None, "previous": None, "results": []}


def test_filtering_by_the_id_of_another_teams_agent_or_team_finds_nothing(
    world: PlaybackWorld,
) -> None:
    api = api_as(world.supervisor_b)
    assert api.get("/api/recordings/", {"agent": world.john.pk}).json()["count"] == 0
    assert api.get("/api/recordings/", {"team": world.sales.pk}).json()["count"] == 0
    # The same filters do find the recording for its own supervisor.
    own = api_as(world.supervisor_a)
    assert own.get("/api/recordings/", {"agent": world.john.pk}).json()["count"] == 1
    assert own.get("/api/recordings/", {"team": "Sales"}).json()["count"] == 1


# The admin shows the same scope. -------------------------------------------------------------


def test_the_admin_recording_list_is_scoped_too(world: PlaybackWorld) -> None:
    world.supervisor_a.is_staff = True
    world.supervisor_a.save()
    world.supervisor_a.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_recording", "view_call"])
    )
    client = pages_as(world.supervisor_a)
    page = client.get("/admin/recorder/recording/")
    assert page.status_code == 200
    shown = {row.pk for row in page.context["cl"].result_list}
    assert shown == {world.recording_a.pk, world.recording_on_marys_line.pk}
    change = client.get(f"/admin/recorder/recording/{world.recording_b.pk}/change/")
    assert change.status_code == 302  # The admin's "does not exist" answer.


def test_the_admin_call_log_is_scoped_by_the_same_rules(world: PlaybackWorld) -> None:
    johns = Call.objects.create(
        protocol="sip", call_id="c-john", started_at=STARTED, agent=world.john, extension="9001"
    )
    Call.objects.create(
        protocol="sip", call_id="c-carl", started_at=STARTED, agent=world.carl, extension="9003"
    )
    world.supervisor_a.is_staff = True
    world.supervisor_a.save()
    world.supervisor_a.user_permissions.add(Permission.objects.get(codename="view_call"))
    page = pages_as(world.supervisor_a).get("/admin/recorder/call/")
    assert [call.pk for call in page.context["cl"].result_list] == [johns.pk]
