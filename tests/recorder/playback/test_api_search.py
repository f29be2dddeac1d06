"""GET /api/recordings/ searches with the recordings page's filters and sort orders."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from extensions.models import Team
from recorder.models import Recording
from tests.recorder.playback.support import STARTED, PlaybackWorld, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> PlaybackWorld:
    """The playback world's three recordings, made different enough to tell apart."""
    world = build_world()
    changes = {
        world.recording_a.pk: {
            "direction": "inbound",
            "duration_seconds": 30.0,
            "remote_party": "6175551212",
            "mos_estimate": 4.2,
        },
        world.recording_b.pk: {
            "direction": "outbound",
            "duration_seconds": 600.0,
            "remote_party": "+442071234567",
            "status": Recording.Status.PARTIAL,
            "mos_estimate": 2.1,
        },
        world.recording_on_marys_line.pk: {
            "direction": "inbound",
            "duration_seconds": 120.0,
            "remote_party": "6175550000",
            "started_at": STARTED + timedelta(days=3),
            "mos_estimate": None,
        },
    }
    for pk, fields in changes.items():
        Recording.objects.filter(pk=pk).update(**fields)
    return world


def admin(world: PlaybackWorld) -> APIClient:
    client = APIClient()
    client.force_login(world.admin)
    return client


def found(client: APIClient, **query: object) -> list[str]:
    response = client.get("/api/recordings/", query)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["count"] == len(body["results"])
    return [row["call_id"] for row in body["results"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"far_party": "555"}, {"call-a", "call-a2"}),
        ({"far_party": "5551212"}, {"call-a"}),
        ({"far_party": "617-555"}, set()),  # R4: as on the wire, never reformatted.
        ({"direction": "outbound"}, {"call-b"}),
        ({"status": "partial"}, {"call-b"}),
        ({"longer_than": "100"}, {"call-b", "call-a2"}),
        ({"shorter_than": "120"}, {"call-a", "call-a2"}),
        ({"longer_than": "60", "shorter_than": "300"}, {"call-a2"}),
        ({"mos_below": "3"}, {"call-b"}),
        ({"since": (STARTED + timedelta(days=1)).isoformat()}, {"call-a2"}),
        ({"until": (STARTED + timedelta(days=1)).isoformat()}, {"call-a", "call-b"}),
        ({"agent": "Carl", "direction": "inbound"}, {"call-a2"}),
        ({"team": "Sales"}, {"call-a"}),
    ],
)
def test_each_filter_narrows_the_list(world: PlaybackWorld, query: dict, expected: set) -> None:
    assert set(found(admin(world), **query)) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("", ["call-a2", "call-b", "call-a"]),  # newest first
        ("started", ["call-a", "call-b", "call-a2"]),
        ("-duration", ["call-b", "call-a2", "call-a"]),
        ("duration", ["call-a", "call-a2", "call-b"]),
        ("mos", ["call-b", "call-a", "call-a2"]),  # no estimate last
        ("-mos", ["call-a", "call-b", "call-a2"]),  # no estimate last either way
        ("far_party", ["call-b", "call-a2", "call-a"]),
        ("agent", ["call-b", "call-a2", "call-a"]),  # Carl, Carl (newer id last), John
    ],
)
def test_it_sorts_like_the_recordings_page(world: PlaybackWorld, sort: str, expected: list) -> None:
    query = {"sort": sort} if sort else {}
    assert found(admin(world), **query) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("direction", "sideways"),
        ("status", "lost"),
        ("longer_than", "long"),
        ("shorter_than", "nan"),
        ("mos_below", "inf"),
        ("since", "yesterday"),
        ("sort", "size"),
    ],
)
def test_a_value_it_cannot_use_is_refused_with_the_parameter_named(
    world: PlaybackWorld, name: str, value: str
) -> None:
    response = admin(world).get("/api/recordings/", {name: value})
    assert response.status_code == 400
    assert list(response.json()) == [name]
    assert repr(value) in response.json()[name][0]


def test_a_supervisor_of_an_agent_in_two_of_their_teams_sees_each_recording_once(
    world: PlaybackWorld,
) -> None:
    second = Team.objects.create(name="Sales, second shift")
    second.supervisors.add(world.supervisor_a)
    world.john.teams.add(second)
    world.mary.teams.add(second)
    client = APIClient()
    client.force_login(world.supervisor_a)
    assert sorted(found(client)) == ["call-a", "call-a2"]


def test_a_supervisor_of_a_team_without_agents_sees_nothing(world: PlaybackWorld) -> None:
    Team.objects.create(name="Empty").supervisors.add(world.outsider)
    client = APIClient()
    client.force_login(world.outsider)
    assert found(client) == []
