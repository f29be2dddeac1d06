"""GET /api/recordings/ and its audio, from a real capture imported end to end."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recorder.models import Recording

FIELDS = {
    "id",
    "call_id",
    "conversation_id",
    "started_at",
    "ended_at",
    "duration_seconds",
    "direction",
    "extension",
    "agent",
    "phone",
    "remote_party",
    "codec",
    "status",
    "sha256",
    "audio_url",
    "quality",
    "dtmf",
    "mos_estimate",
}


def reader(*codenames: str) -> APIClient:
    user = User.objects.create_user("reader-" + "-".join(codenames), password="a-long-password-1")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def forensic(public_captures, transactional_db) -> Recording:
    path = public_captures / "rtpparsing-forensic.pcap"
    call_command("import_pcap", str(path), stdout=io.StringIO())
    return Recording.objects.get()


def test_the_list_carries_every_field_and_filters(forensic: Recording) -> None:
    client = reader("view_all_recordings")
    items = client.get("/api/recordings/").json()["results"]
    assert len(items) == 1
    item = items[0]
    assert set(item) >= FIELDS
    assert (item["extension"], item["remote_party"], item["status"]) == ("555", "1000", "complete")
    assert item["codec"] == "PCMU"
    assert item["quality"]["far_to_agent"]["lost"] == 0
    assert client.get("/api/recordings/", {"extension": "555"}).json()["count"] == 1
    assert client.get("/api/recordings/", {"extension": "55"}).json()["count"] == 0
    assert client.get("/api/recordings/", {"status": "partial"}).json()["count"] == 0
    assert client.get("/api/recordings/", {"since": "2030-01-01T00:00:00Z"}).json()["count"] == 0
    assert client.get("/api/recordings/", {"until": "2030-01-01T00:00:00Z"}).json()["count"] == 1
    refused = client.get("/api/recordings/", {"since": "yesterday"})
    assert refused.status_code == 400 and "since" in refused.json()


def test_the_audio_is_the_stored_file(forensic: Recording) -> None:
    client = reader("view_all_recordings")
    item = client.get(f"/api/recordings/{forensic.pk}/").json()
    response = client.get(item["audio_url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "audio/wav"
    body = b"".join(response.streaming_content)
    assert body[:4] == b"RIFF" and hashlib.sha256(body).hexdigest() == forensic.sha256


def test_recordings_need_a_login_and_a_grant(forensic: Recording) -> None:
    assert APIClient().get("/api/recordings/").status_code in (401, 403)
    # Logged in but entitled to nothing (recorder/playback/access.py): the recording does not exist.
    assert reader().get(f"/api/recordings/{forensic.pk}/audio/").status_code == 404
    assert reader("view_recording").get("/api/recordings/").json()["count"] == 0


def test_the_audio_answers_without_a_trailing_slash(forensic: Recording) -> None:
    response = reader("view_all_recordings").get(f"/api/recordings/{forensic.pk}/audio")
    assert response.status_code == 200
