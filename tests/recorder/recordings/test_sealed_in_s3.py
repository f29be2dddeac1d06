"""Sealed recordings in an S3-compatible bucket and sealed raw RTP (issue 16): finishing
seals before the upload, playback reads the encrypted object by ranged GETs of the
chunks asked for, rotation and sealing in place put a whole new object. Against moto's
server on loopback, through import_pcap, on PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from recorder.media.sealed import HEADER_BYTES, TAG_BYTES, parse_header
from recorder.models import AuditEntry, Recording
from recorder.recordings.encryption import stored_audio
from recorder.recordings.integrity import IntegrityState, verify
from tests.recorder.conftest import S3Recordings
from tests.recorder.recordings.test_encrypted_media import ciphertext_call, import_capture

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 * 1024


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def plain_of(recording: Recording) -> bytes:
    return b"".join(stored_audio(recording).every_plain_byte())


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def imported(public_captures: Path) -> Recording:
    call_command(
        "import_pcap", str(public_captures / "rtpparsing-forensic.pcap"), stdout=io.StringIO()
    )
    return Recording.objects.get()


def object_gets(s3_recordings: S3Recordings, name: str) -> list[str]:
    path = f"/{s3_recordings.bucket}/{name}"
    return [line for line in s3_recordings.server.requests() if f'"GET {path} ' in line]


def test_a_call_finished_into_a_bucket_is_sealed_before_it_is_uploaded(
    s3_recordings: S3Recordings, spool_root: Path, public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    stored = imported(public_captures)
    sealed = s3_recordings.object_bytes(stored.file.name)
    assert sealed.startswith(b"QMSSEA") and stored.encryption_key_id == "test-2025"
    assert len(sealed) == parse_header(sealed).stored_length
    wav = plain_of(stored)
    assert wav.startswith(b"RIFF") and len(wav) == stored.size
    assert hashlib.sha256(wav).hexdigest() == stored.sha256
    assert verify(stored).state == IntegrityState.VERIFIED


def test_a_range_of_a_sealed_object_is_exact_and_fetches_its_chunks_alone(
    s3_recordings: S3Recordings, spool_root: Path, public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    stored = imported(public_captures)
    wav = plain_of(stored)
    client = Client()
    client.force_login(_superuser())
    first, last = CHUNK - 10, 2 * CHUNK + 10
    before = len(object_gets(s3_recordings, stored.file.name))
    response = client.get(f"/recordings/{stored.pk}/audio", HTTP_RANGE=f"bytes={first}-{last}")
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {first}-{last}/{len(wav)}"
    assert b"".join(response.streaming_content) == wav[first : last + 1]
    # The header, then the three chunks the range touches: two ranged GETs, both 206.
    gets = object_gets(s3_recordings, stored.file.name)[before:]
    assert len(gets) == 2 and all(re.search(r'" 206 ', get) for get in gets), gets


def test_a_tampered_object_in_the_bucket_is_refused_and_audited(
    s3_recordings: S3Recordings, spool_root: Path, public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    stored = imported(public_captures)
    sealed = bytearray(s3_recordings.object_bytes(stored.file.name))
    sealed[HEADER_BYTES + CHUNK + TAG_BYTES + 9] ^= 0x01  # chunk 1
    s3_recordings.client().put_object(
        Bucket=s3_recordings.bucket, Key=stored.file.name, Body=bytes(sealed)
    )
    client = Client()
    client.force_login(_superuser())
    response = client.get(f"/recordings/{stored.pk}/audio", HTTP_RANGE=f"bytes={CHUNK}-")
    assert response.status_code == 409
    assert AuditEntry.objects.filter(recording=stored, action="integrity").count() == 1
    assert verify(stored).state == IntegrityState.UNREADABLE


def test_rotation_in_a_bucket_puts_the_object_again_with_its_new_header(
    s3_recordings: S3Recordings, spool_root: Path, public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    stored = imported(public_captures)
    before = s3_recordings.object_bytes(stored.file.name)
    wav = plain_of(stored)
    run("rotate_recording_keys", "--to", "test-2026")
    after = s3_recordings.object_bytes(stored.file.name)
    assert parse_header(after).key_ids == ["test-2026"]
    assert after[HEADER_BYTES:] == before[HEADER_BYTES:]
    stored.refresh_from_db()
    settings.QMS_RECORDING_KEYS = {"test-2026": settings.QMS_RECORDING_KEYS["test-2026"]}
    assert plain_of(stored) == wav


def test_encrypt_recordings_seals_a_plain_object_in_place(
    s3_recordings: S3Recordings, spool_root: Path, public_captures: Path, settings
) -> None:
    stored = imported(public_captures)
    wav = s3_recordings.object_bytes(stored.file.name)
    settings.QMS_RECORDING_KEY_ID = "test-2026"
    run("encrypt_recordings")
    stored.refresh_from_db()
    assert stored.encryption_key_id == "test-2026"
    assert s3_recordings.object_bytes(stored.file.name).startswith(b"QMSSEA")
    assert s3_recordings.keys() == {stored.file.name}
    assert plain_of(stored) == wav


def test_raw_rtp_kept_for_an_undecodable_call_is_sealed_too(
    spool_root: Path, tmp_path: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    import_capture(tmp_path, ciphertext_call("raw@sealed", zrtp=True))
    kept = Recording.objects.get(call_id="raw@sealed")
    assert kept.audio_format == "rtp" and kept.encryption_key_id == "test-2025"
    stored = Path(kept.file.path).read_bytes()
    assert stored.startswith(b"QMSSEA")
    assert parse_header(stored).plain_length == kept.size > 0
    assert len(plain_of(kept)) == kept.size


def _superuser():
    from django.contrib.auth.models import User

    return User.objects.create_superuser("sealed-boss", password="a-long-test-password-1")
