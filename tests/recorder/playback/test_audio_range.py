"""The audio view answers HTTP Range requests (RFC 9110, section 14), downloads with a
permission of its own, and hands files to nginx by their stored name when asked to."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

from recorder.models import Recording
from recorder.playback.ranges import ByteRange, RangeNotSatisfiable, requested_range
from tests.recorder.playback.support import PlaybackWorld, build_world, file_name, login

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


@pytest.fixture
def supervisor(world: PlaybackWorld) -> Client:
    client = Client()
    client.force_login(world.supervisor_a)
    return client


def audio_url(recording: Recording) -> str:
    return f"/recordings/{recording.pk}/audio"


def body(response) -> bytes:
    return b"".join(response.streaming_content)


# Ranges, through the page's audio URL. ------------------------------------------------------


def test_without_a_range_the_whole_file_comes_with_accept_ranges(
    world: PlaybackWorld, supervisor: Client
) -> None:
    response = supervisor.get(audio_url(world.recording_a))
    assert response.status_code == 200
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "audio/wav"
    assert response["Content-Length"] == str(len(world.audio))
    assert body(response) == world.audio
    assert response["Content-Disposition"] == f'inline; filename="{file_name(world.recording_a)}"'


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),
        ("bytes=-100", -100, None),
        ("bytes=2000-999999", 2000, None),  # The last byte is clamped to the file's end.
    ],
)
def test_one_range_is_served_as_206_with_its_content_range(
    world: PlaybackWorld, supervisor: Client, header: str, first: int, last: int | None
) -> None:
    size = len(world.audio)
    expected = world.audio[first : None if last is None else last + 1]
    response = supervisor.get(audio_url(world.recording_a), HTTP_RANGE=header)
    assert response.status_code == 206
    start = first % size
    assert response["Content-Range"] == f"bytes {start}-{start + len(expected) - 1}/{size}"
    assert response["Content-Length"] == str(len(expected))
    assert body(response) == expected


@pytest.mark.parametrize("header", ["bytes=2044-", "bytes=99999-100000", "bytes=-0"])
def test_a_range_past_the_end_is_416_with_the_size(
    world: PlaybackWorld, supervisor: Client, header: str
) -> None:
    assert len(world.audio) == 2044
    response = supervisor.get(audio_url(world.recording_a), HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */2044"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-99,200-299",  # Several ranges: the whole file (docs/playback.md).
        "bytes=0-9, 5-20, 0-",
        "bytes=abc",  # Malformed: ignored.
        "bytes=200-100",  # last < first: invalid, ignored.
        "items=0-99",  # Another unit: ignored.
    ],
)
def test_several_or_malformed_ranges_get_the_whole_file(
    world: PlaybackWorld, supervisor: Client, header: str
) -> None:
    response = supervisor.get(audio_url(world.recording_a), HTTP_RANGE=header)
    assert response.status_code == 200
    assert "Content-Range" not in response
    assert body(response) == world.audio


def test_if_range_keeps_the_range_only_for_the_same_file(
    world: PlaybackWorld, supervisor: Client
) -> None:
    etag = f'"{world.recording_a.sha256}"'
    same = supervisor.get(audio_url(world.recording_a), HTTP_RANGE="bytes=0-99", HTTP_IF_RANGE=etag)
    assert (same.status_code, same["ETag"]) == (206, etag)
    other = supervisor.get(
        audio_url(world.recording_a), HTTP_RANGE="bytes=0-99", HTTP_IF_RANGE='"elsewhere"'
    )
    assert other.status_code == 200 and body(other) == world.audio


def test_the_api_audio_answers_ranges_too(world: PlaybackWorld) -> None:
    client = APIClient()
    client.force_login(world.supervisor_a)
    response = client.get(f"/api/recordings/{world.recording_a.pk}/audio", HTTP_RANGE="bytes=-100")
    assert response.status_code == 206
    assert response["Content-Range"] == "bytes 1944-2043/2044"
    assert body(response) == world.audio[-100:]


def test_a_recording_without_its_file_in_storage_is_404(
    world: PlaybackWorld, supervisor: Client
) -> None:
    world.recording_a.file.storage.delete(world.recording_a.file.name)
    assert supervisor.get(audio_url(world.recording_a)).status_code == 404


# The range arithmetic on its own. -----------------------------------------------------------


def test_requested_range_reads_each_form_of_a_single_range() -> None:
    assert requested_range(None, 10) is None
    assert requested_range("bytes=0-0", 10) == ByteRange(0, 0)
    assert requested_range("bytes=9-", 10) == ByteRange(9, 9)
    assert requested_range("bytes=-20", 10) == ByteRange(0, 9)
    assert requested_range("BYTES=2-3", 10) == ByteRange(2, 3)
    assert requested_range("bytes=-", 10) is None
    assert requested_range("bytes=" + "9" * 5000 + "-", 10) is None
    with pytest.raises(RangeNotSatisfiable):
        requested_range("bytes=10-", 10)
    with pytest.raises(RangeNotSatisfiable):
        requested_range("bytes=-5", 0)


# Download: a permission of its own. --------------------------------------------------------


def test_download_needs_its_own_permission(world: PlaybackWorld, supervisor: Client) -> None:
    url = audio_url(world.recording_a) + "?download=1"
    assert supervisor.get(url).status_code == 403
    downloader = login("sales-archivist", "download_recording")
    world.sales.supervisors.add(downloader)
    client = Client()
    client.force_login(downloader)
    response = client.get(url)
    assert response.status_code == 200
    disposition = f'attachment; filename="{file_name(world.recording_a)}"'
    assert response["Content-Disposition"] == disposition
    assert body(response) == world.audio


def test_the_download_permission_does_not_open_other_teams_recordings(
    world: PlaybackWorld,
) -> None:
    downloader = login("support-archivist", "download_recording")
    world.support.supervisors.add(downloader)
    client = Client()
    client.force_login(downloader)
    assert client.get(audio_url(world.recording_a) + "?download=1").status_code == 404


# nginx with X-Accel-Redirect. --------------------------------------------------------------


@override_settings(QMS_AUDIO_ACCEL_REDIRECT="/protected-recordings/")
def test_with_accel_redirect_nginx_gets_the_stored_name_and_no_body(
    world: PlaybackWorld, supervisor: Client
) -> None:
    response = supervisor.get(audio_url(world.recording_a), HTTP_RANGE="bytes=100-")
    assert response.status_code == 200
    stored = world.recording_a.file.name
    assert stored.startswith("2026/03/02/call-a")
    assert response["X-Accel-Redirect"] == "/protected-recordings/" + stored
    assert response["Content-Type"] == "audio/wav"
    assert response.content == b""


@override_settings(QMS_AUDIO_ACCEL_REDIRECT="/protected-recordings/")
def test_with_accel_redirect_a_hidden_recording_is_still_404(world: PlaybackWorld) -> None:
    client = Client()
    client.force_login(world.supervisor_b)
    response = client.get(audio_url(world.recording_a))
    assert response.status_code == 404
    assert "X-Accel-Redirect" not in response


@pytest.mark.parametrize("accel", ["", "/protected-recordings/"])
def test_a_stored_name_that_climbs_out_of_the_storage_is_never_served(
    world: PlaybackWorld, supervisor: Client, accel: str
) -> None:
    Recording.objects.filter(pk=world.recording_a.pk).update(file="../../../etc/passwd")
    with override_settings(QMS_AUDIO_ACCEL_REDIRECT=accel):
        response = supervisor.get(audio_url(world.recording_a))
    assert response.status_code == 400
    assert "X-Accel-Redirect" not in response


def test_the_request_cannot_name_the_file(world: PlaybackWorld, supervisor: Client) -> None:
    response = supervisor.get(
        audio_url(world.recording_a), {"file": world.recording_b.file.name, "name": "x"}
    )
    assert body(response) == world.audio
    assert response["Content-Disposition"] == f'inline; filename="{file_name(world.recording_a)}"'


@override_settings(QMS_AUDIO_ACCEL_REDIRECT="/protected-recordings/")
def test_accel_redirect_percent_encodes_the_stored_name(
    world: PlaybackWorld, supervisor: Client
) -> None:
    Recording.objects.filter(pk=world.recording_a.pk).update(file="2026/03/02/call a#1?.wav")
    response = supervisor.get(audio_url(world.recording_a))
    assert response["X-Accel-Redirect"] == "/protected-recordings/2026/03/02/call%20a%231%3F.wav"
