"""Playing a sealed (encrypted at rest) recording: the audio view decrypts the chunks the
Range covers and serves exactly the plain bytes asked; a tampered, cut or unkeyed file is
an error page and an audit entry, never altered audio (issue 16, section 2)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.models import AuditEntry, Recording
from recorder.recordings.integrity import IntegrityState, verify
from tests.recorder.playback import test_audio_range
from tests.recorder.playback.sealed_support import (
    SEALED_CHUNK,
    chunk_offset,
    flip_bit,
    sealed_recording,
)
from tests.recorder.playback.support import PlaybackWorld, build_world, login
from tests.recorder.playback.test_audio_range import audio_url, body

pytestmark = pytest.mark.django_db

# Supervisor A's client, as the plain Range tests have it (a fixture here too).
supervisor = test_audio_range.supervisor

# Several chunks and a short last one, with a real WAV header at the start.
PLAIN = random.Random(16).randbytes(4 * SEALED_CHUNK + 4321)


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


@pytest.fixture
def sealed(world: PlaybackWorld) -> Recording:
    return sealed_recording(world.recording_a, PLAIN)


def integrity_entries(recording: Recording) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(recording=recording, action="integrity"))


def test_the_whole_sealed_recording_plays_as_its_plain_bytes(
    sealed: Recording, supervisor: Client
) -> None:
    stored = Path(sealed.file.path).read_bytes()
    assert stored.startswith(b"QMSSEA") and PLAIN[:64] not in stored
    response = supervisor.get(audio_url(sealed))
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(PLAIN))
    assert response["ETag"] == f'"{hashlib.sha256(PLAIN).hexdigest()}"'
    assert body(response) == PLAIN


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (0, 0),
        (SEALED_CHUNK - 1, SEALED_CHUNK),
        (SEALED_CHUNK, 2 * SEALED_CHUNK - 1),
        (SEALED_CHUNK - 5, 3 * SEALED_CHUNK + 5),
        (4 * SEALED_CHUNK, len(PLAIN) - 1),
    ],
)
def test_a_range_across_chunk_edges_is_206_with_exactly_its_bytes(
    sealed: Recording, supervisor: Client, first: int, last: int
) -> None:
    response = supervisor.get(audio_url(sealed), HTTP_RANGE=f"bytes={first}-{last}")
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {first}-{last}/{len(PLAIN)}"
    assert response["Content-Length"] == str(last - first + 1)
    assert body(response) == PLAIN[first : last + 1]


def test_a_seek_to_the_middle_and_a_suffix_range_are_exact(
    sealed: Recording, supervisor: Client
) -> None:
    middle = len(PLAIN) // 2
    seek = supervisor.get(audio_url(sealed), HTTP_RANGE=f"bytes={middle}-")
    assert (seek.status_code, body(seek)) == (206, PLAIN[middle:])
    tail = supervisor.get(audio_url(sealed), HTTP_RANGE="bytes=-100")
    assert (tail.status_code, body(tail)) == (206, PLAIN[-100:])
    past = supervisor.get(audio_url(sealed), HTTP_RANGE=f"bytes={len(PLAIN)}-")
    assert (past.status_code, past["Content-Range"]) == (416, f"bytes */{len(PLAIN)}")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_random_range_of_a_sealed_recording_is_its_plain_bytes(
    sealed: Recording, supervisor: Client, data: st.DataObject
) -> None:
    first = data.draw(st.integers(0, len(PLAIN) - 1))
    last = data.draw(st.integers(first, len(PLAIN) - 1))
    response = supervisor.get(audio_url(sealed), HTTP_RANGE=f"bytes={first}-{last}")
    assert response.status_code == 206
    assert body(response) == PLAIN[first : last + 1]


def test_a_download_is_the_plain_file(world: PlaybackWorld, sealed: Recording) -> None:
    client = Client()
    client.force_login(login("downloader", "view_all_recordings", "download_recording"))
    response = client.get(audio_url(sealed) + "?download=1")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert body(response) == PLAIN


def test_the_api_audio_decrypts_too(world: PlaybackWorld, sealed: Recording) -> None:
    client = Client()
    client.force_login(world.admin)
    response = client.get(f"/api/recordings/{sealed.pk}/audio", HTTP_RANGE="bytes=70000-70009")
    assert (response.status_code, body(response)) == (206, PLAIN[70000:70010])


@override_settings(QMS_AUDIO_ACCEL_REDIRECT="/protected-recordings/")
def test_with_accel_redirect_a_sealed_recording_is_streamed_by_django(
    sealed: Recording, supervisor: Client
) -> None:
    response = supervisor.get(audio_url(sealed), HTTP_RANGE="bytes=10-19")
    assert "X-Accel-Redirect" not in response
    assert (response.status_code, body(response)) == (206, PLAIN[10:20])


def test_a_flipped_bit_in_the_first_chunk_served_is_409_and_audited(
    sealed: Recording, supervisor: Client
) -> None:
    flip_bit(Path(sealed.file.path), chunk_offset(1, 77))
    response = supervisor.get(audio_url(sealed), HTTP_RANGE=f"bytes={SEALED_CHUNK + 5}-")
    assert response.status_code == 409
    text = response.content.decode()
    assert "chunk 1 of the recording failed its authentication tag" in text
    assert "No audio of it was sent" in text
    [entry] = integrity_entries(sealed)
    assert entry.detail["range"] == f"bytes={SEALED_CHUNK + 5}-"
    assert "chunk 1" in entry.detail["error"]
    # The chunk before it still plays: the damage is where it is, and is never served.
    before = supervisor.get(audio_url(sealed), HTTP_RANGE="bytes=0-99")
    assert body(before) == PLAIN[:100]


def test_a_flipped_bit_in_a_later_chunk_ends_the_stream_before_it(
    sealed: Recording, supervisor: Client
) -> None:
    flip_bit(Path(sealed.file.path), chunk_offset(2, 5))
    response = supervisor.get(audio_url(sealed))
    assert response.status_code == 200  # already on its way when chunk 2 is reached
    sent = body(response)
    assert sent == PLAIN[: 2 * SEALED_CHUNK]
    assert len(sent) < int(response["Content-Length"])
    [entry] = integrity_entries(sealed)
    assert "chunk 2" in entry.detail["error"]


def test_a_truncated_file_is_refused_as_cut(sealed: Recording, supervisor: Client) -> None:
    path = Path(sealed.file.path)
    path.write_bytes(path.read_bytes()[: chunk_offset(3)])
    response = supervisor.get(audio_url(sealed), HTTP_RANGE="bytes=0-9")
    assert response.status_code == 409
    assert "cut short" in response.content.decode()
    assert len(integrity_entries(sealed)) == 1
    assert verify(sealed).state == IntegrityState.UNREADABLE


def test_a_plain_file_where_the_row_says_sealed_is_refused(
    world: PlaybackWorld, sealed: Recording, supervisor: Client
) -> None:
    Path(sealed.file.path).write_bytes(PLAIN)
    response = supervisor.get(audio_url(sealed))
    assert response.status_code == 409
    assert "has been replaced" in response.content.decode()


def test_a_key_id_that_is_not_configured_is_503_naming_it(
    sealed: Recording, supervisor: Client, settings
) -> None:
    settings.QMS_RECORDING_KEYS = {"test-2026": settings.QMS_RECORDING_KEYS["test-2026"]}
    response = supervisor.get(audio_url(sealed))
    assert response.status_code == 503
    assert "key id test-2025, which is not among the keys configured" in response.content.decode()
    assert len(integrity_entries(sealed)) == 1


def test_the_wrong_key_under_the_right_id_is_409(
    sealed: Recording, supervisor: Client, settings
) -> None:
    settings.QMS_RECORDING_KEYS = {**settings.QMS_RECORDING_KEYS, "test-2025": bytes(32)}
    response = supervisor.get(audio_url(sealed))
    assert response.status_code == 409
    assert "not the one it was sealed with" in response.content.decode()


def test_a_head_of_a_sealed_recording_gives_the_plain_length(
    world: PlaybackWorld, sealed: Recording
) -> None:
    client = Client()
    client.force_login(world.admin)
    response = client.head(f"/api/recordings/{sealed.pk}/audio")
    assert (response.status_code, response["Content-Length"]) == (200, str(len(PLAIN)))


def test_the_detail_page_verifies_the_plain_sha256_through_every_tag(
    sealed: Recording, supervisor: Client
) -> None:
    assert verify(sealed).state == IntegrityState.VERIFIED
    page = supervisor.get(f"/recordings/{sealed.pk}/")
    assert "Encrypted at rest" in page.content.decode()
    flip_bit(Path(sealed.file.path), chunk_offset(4, 1))
    result = verify(sealed)
    assert result.state == IntegrityState.UNREADABLE
    assert "chunk 4" in result.problem
