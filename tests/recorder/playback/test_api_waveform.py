"""GET /api/recordings/<id>/waveform/: the peaks the player draws, scoped like the audio."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.recorder.playback.support import PlaybackWorld, build_world

pytestmark = pytest.mark.django_db

PEAKS = {
    "version": 1,
    "sample_rate": 8000,
    "frames": 1000,
    "buckets": 4,
    "channels": [
        {"min": [-12, -80, -3, 0], "max": [15, 90, 4, 0]},
        {"min": [0, -1, -60, -2], "max": [0, 2, 70, 1]},
    ],
}


@pytest.fixture
def world() -> PlaybackWorld:
    world = build_world()
    world.recording_a.peaks = PEAKS
    world.recording_a.save(update_fields=["peaks"])
    return world


def client_of(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("role", "agents_hear_own", "status"),
    [
        ("admin", False, 200),
        ("supervisor_a", False, 200),
        ("supervisor_b", False, 404),
        ("agent", True, 200),
        ("agent", False, 404),
        ("outsider", True, 404),
        (None, False, 403),
    ],
)
def test_the_waveform_answers_whoever_may_play_the_recording(
    world: PlaybackWorld, role: str | None, agents_hear_own: bool, status: int
) -> None:
    user = getattr(world, role) if role else None
    with override_settings(QMS_AGENTS_HEAR_OWN=agents_hear_own):
        response = client_of(user).get(f"/api/recordings/{world.recording_a.pk}/waveform/")
    assert response.status_code == status
    if status == 200:
        assert response.json() == PEAKS


def test_a_hidden_waveform_answers_exactly_as_a_missing_recording(world: PlaybackWorld) -> None:
    client = client_of(world.supervisor_b)
    hidden = client.get(f"/api/recordings/{world.recording_a.pk}/waveform/")
    missing = client.get("/api/recordings/999999/waveform/")
    assert (hidden.status_code, hidden.json()) == (missing.status_code, missing.json())


def test_a_recording_without_peaks_yet_answers_404_saying_so(world: PlaybackWorld) -> None:
    response = client_of(world.admin).get(f"/api/recordings/{world.recording_b.pk}/waveform/")
    assert response.status_code == 404
    assert response.json() == {"detail": "This recording has no waveform yet."}


def test_the_recording_links_its_waveform_and_the_list_does_not_carry_the_peaks(
    world: PlaybackWorld,
) -> None:
    client = client_of(world.supervisor_a)
    item = client.get(f"/api/recordings/{world.recording_a.pk}/").json()
    assert "peaks" not in item
    assert client.get(item["waveform_url"]).json() == PEAKS
    for row in client.get("/api/recordings/").json()["results"]:
        assert "peaks" not in row
