"""Playback from an S3-compatible bucket (issue 15, section 2): Django streams the audio,
each Range served by one ranged GET of those bytes alone, never by downloading the whole
object first; downloads, the detail page's integrity check and the audit are as on disk.
Against moto's server on loopback (tests/recorder/s3.py)."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from django.test import Client

from recorder.models import AuditEntry, Recording
from recorder.playback.audio import CHUNK_BYTES
from tests.recorder.conftest import S3Recordings
from tests.recorder.playback.support import PlaybackWorld, build_world, recording

pytestmark = pytest.mark.django_db

# Several of the view's chunks and an odd tail: ranges cross chunk boundaries.
AUDIO_BYTES = 3 * CHUNK_BYTES + 12345
ACROSS_A_CHUNK = (CHUNK_BYTES - 10, 2 * CHUNK_BYTES + 10)


@pytest.fixture
def world(s3_recordings: S3Recordings) -> PlaybackWorld:
    return build_world()


@pytest.fixture
def long_audio(world: PlaybackWorld) -> tuple[Recording, bytes]:
    audio = random.Random(15).randbytes(AUDIO_BYTES)
    return recording("call-long", world.john, "9001", audio, minutes=5), audio


@pytest.fixture
def supervisor(world: PlaybackWorld) -> Client:
    client = Client()
    client.force_login(world.supervisor_a)
    return client


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def object_gets(s3_recordings: S3Recordings, name: str) -> list[str]:
    """The GET requests of `name` the server logged, with their status."""
    path = f"/{s3_recordings.bucket}/{name}"
    return [line for line in s3_recordings.server.requests() if f'"GET {path} ' in line]


def test_the_whole_recording_streams_from_the_bucket(
    s3_recordings: S3Recordings, long_audio: tuple[Recording, bytes], supervisor: Client
) -> None:
    stored, audio = long_audio
    assert s3_recordings.object_bytes(stored.file.name) == audio

    response = supervisor.get(f"/recordings/{stored.pk}/audio")

    assert response.status_code == 200
    assert response["Content-Length"] == str(AUDIO_BYTES)
    assert response["Accept-Ranges"] == "bytes"
    assert body(response) == audio


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes={}-{}".format(*ACROSS_A_CHUNK), *ACROSS_A_CHUNK),
        (f"bytes={AUDIO_BYTES // 2}-", AUDIO_BYTES // 2, AUDIO_BYTES - 1),
        ("bytes=-100", AUDIO_BYTES - 100, AUDIO_BYTES - 1),
        (f"bytes={AUDIO_BYTES - 1}-{AUDIO_BYTES + 999}", AUDIO_BYTES - 1, AUDIO_BYTES - 1),
    ],
)
def test_a_range_is_206_with_exactly_its_bytes_fetched_by_a_ranged_get(
    s3_recordings: S3Recordings,
    long_audio: tuple[Recording, bytes],
    supervisor: Client,
    header: str,
    first: int,
    last: int,
) -> None:
    stored, audio = long_audio
    gets_before = len(object_gets(s3_recordings, stored.file.name))

    response = supervisor.get(f"/recordings/{stored.pk}/audio", HTTP_RANGE=header)

    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {first}-{last}/{AUDIO_BYTES}"
    assert response["Content-Length"] == str(last - first + 1)
    assert body(response) == audio[first : last + 1]
    # Two GETs, each answered 206 by the bucket: the file's first 512 bytes (is it sealed?
    # recorder/recordings/encryption.py) and the range; the object was not downloaded whole.
    gets = object_gets(s3_recordings, stored.file.name)[gets_before:]
    assert len(gets) == 2 and all(re.search(r'" 206 ', get) for get in gets), gets


def test_seeking_through_the_whole_file_in_ranges_gives_it_back_byte_for_byte(
    s3_recordings: S3Recordings, long_audio: tuple[Recording, bytes], supervisor: Client
) -> None:
    stored, audio = long_audio
    pieces, first, step = [], 0, 50_000
    while first < AUDIO_BYTES:
        header = f"bytes={first}-{first + step - 1}"
        response = supervisor.get(f"/recordings/{stored.pk}/audio", HTTP_RANGE=header)
        assert response.status_code == 206
        pieces.append(body(response))
        first += step
    assert b"".join(pieces) == audio
    actions = AuditEntry.objects.filter(recording_id=stored.pk).values_list("action", flat=True)
    assert sorted(set(actions)) == ["play", "seek"]


def test_a_range_past_the_end_is_416_with_the_objects_size(
    long_audio: tuple[Recording, bytes], supervisor: Client
) -> None:
    stored, _ = long_audio
    response = supervisor.get(f"/recordings/{stored.pk}/audio", HTTP_RANGE="bytes=999999999-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{AUDIO_BYTES}"


def test_a_download_comes_from_the_bucket_as_an_attachment(
    long_audio: tuple[Recording, bytes], world: PlaybackWorld
) -> None:
    stored, _ = long_audio
    client = Client()
    client.force_login(world.admin)

    response = client.get(f"/recordings/{stored.pk}/audio?download=1")

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert hashlib.sha256(body(response)).hexdigest() == stored.sha256
    assert AuditEntry.objects.filter(recording_id=stored.pk, action="download").count() == 1


def test_an_object_gone_from_the_bucket_is_404(
    s3_recordings: S3Recordings, long_audio: tuple[Recording, bytes], supervisor: Client
) -> None:
    stored, _ = long_audio
    s3_recordings.client().delete_object(Bucket=s3_recordings.bucket, Key=stored.file.name)
    assert supervisor.get(f"/recordings/{stored.pk}/audio").status_code == 404


def test_the_detail_page_verifies_the_object_and_flags_it_once_changed(
    s3_recordings: S3Recordings, long_audio: tuple[Recording, bytes], supervisor: Client
) -> None:
    stored, _ = long_audio
    page = supervisor.get(f"/recordings/{stored.pk}/")
    assert page.status_code == 200
    assert "Verified" in page.content.decode()

    s3_recordings.client().put_object(
        Bucket=s3_recordings.bucket, Key=stored.file.name, Body=b"not the audio recorded"
    )
    assert "MISMATCH" in supervisor.get(f"/recordings/{stored.pk}/").content.decode()
