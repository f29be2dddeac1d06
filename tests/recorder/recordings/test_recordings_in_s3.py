"""Recordings in an S3-compatible bucket (issue 15, section 2): calls finished into it, raw
RTP kept there, the integrity check, retention and legal hold on its objects, and an upload
that fails leaving no stored row and the spool for a new attempt. Against moto's server on
loopback (tests/recorder/s3.py), through import_pcap and the node's finalisation, on
PostgreSQL."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.management import call_command

from qms.lib.database import StorageUnavailable
from recorder.models import Recording
from recorder.nodes.models import PendingFinalisation
from recorder.recordings.finalise import finalise_recording
from recorder.recordings.integrity import IntegrityState, verify
from tests.recorder.conftest import S3Recordings, use_bucket
from tests.recorder.recordings.test_encrypted_media import ciphertext_call, import_capture
from tests.recorder.recordings.test_recording_recovery import logged_call
from tests.recorder.recordings.test_retention import purge, recording
from tests.recorder.s3 import S3Server

Status = Recording.Status


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def local_files(root: Path) -> list[Path]:
    return [path for path in Path(root).rglob("*") if path.is_file()] if root.exists() else []


def test_a_call_imported_is_stored_as_an_object_of_the_bucket_with_its_hash(
    s3_recordings: S3Recordings, spool_root: Path, public_captures: Path
) -> None:
    archive = Path(django_settings.QMS_RECORDINGS_DIR)
    on_disk_before = set(local_files(archive))
    capture = public_captures / "rtpparsing-forensic.pcap"

    # import_pcap finishes its recordings in a process of its own (QMS_FINISH_PROCESSES=1):
    # that process stores them in the bucket too.
    call_command("import_pcap", str(capture), stdout=io.StringIO())

    stored = Recording.objects.get()
    assert (stored.status, stored.audio_format) == (Status.COMPLETE, "wav")
    assert s3_recordings.keys() == {stored.file.name}
    audio = s3_recordings.object_bytes(stored.file.name)
    assert audio[:4] == b"RIFF" and len(audio) == stored.size > 44
    assert hashlib.sha256(audio).hexdigest() == stored.sha256
    assert stored.peaks is not None  # drawn as it was written, before the upload
    assert set(local_files(archive)) == on_disk_before  # nothing written to the folder
    assert local_files(spool_root) == []  # the spool and the staged file are gone


def test_a_call_that_cannot_be_decoded_keeps_its_rtp_as_an_object(
    s3_recordings: S3Recordings, spool_root: Path, tmp_path: Path
) -> None:
    import_capture(tmp_path, ciphertext_call("encrypted@s3", zrtp=True))

    kept = Recording.objects.get(call_id="encrypted@s3")
    assert (kept.status, kept.audio_format) == (Status.NOT_DECODABLE, "rtp")
    assert kept.file.name.endswith(".rtplog")
    assert len(s3_recordings.object_bytes(kept.file.name)) == kept.size > 0
    assert local_files(spool_root) == []


def test_the_integrity_check_hashes_the_object_and_sees_it_changed_or_gone(
    s3_recordings: S3Recordings, spool_root: Path, tmp_path: Path
) -> None:
    call, spool = logged_call(tmp_path, "integrity@s3")
    pending = PendingFinalisation.objects.create(
        call=call, node="node-a", spool=str(spool), reason="ended"
    )
    stored = Recording.objects.get(pk=finalise_recording.run(pending.pk))
    assert verify(stored).state == IntegrityState.VERIFIED

    bucket, name = s3_recordings.bucket, stored.file.name
    s3_recordings.client().put_object(Bucket=bucket, Key=name, Body=b"RIFF changed since")
    changed = verify(stored)
    assert changed.state == IntegrityState.MISMATCH
    assert changed.computed == hashlib.sha256(b"RIFF changed since").hexdigest()

    s3_recordings.client().delete_object(Bucket=bucket, Key=name)
    assert verify(stored).state == IntegrityState.MISSING
    assert not stored.is_stored()


def test_retention_deletes_expired_objects_and_never_one_on_legal_hold(
    s3_recordings: S3Recordings, postgresql: None, settings
) -> None:
    settings.QMS_RETENTION_DAYS = 30
    expired, held, young = recording(31), recording(400, legal_hold=True), recording(29)
    assert s3_recordings.keys() == {expired.file.name, held.file.name, young.file.name}

    purge()

    assert set(Recording.objects.values_list("pk", flat=True)) == {held.pk, young.pk}
    assert s3_recordings.keys() == {held.file.name, young.file.name}
    assert s3_recordings.object_bytes(held.file.name) == b"RIFF audio"


def test_a_purge_whose_bucket_is_out_of_reach_deletes_the_row_and_names_the_object(
    own_s3_server: S3Server, postgresql: None, settings, monkeypatch, caplog
) -> None:
    use_bucket(own_s3_server, settings, monkeypatch)
    settings.QMS_RETENTION_DAYS = 30
    expired = recording(31)
    own_s3_server.stop()

    purge()

    assert not Recording.objects.exists()
    assert f"recording file {expired.file.name} outlived its row" in caplog.text


def test_an_upload_that_fails_leaves_no_stored_row_and_the_spool_to_finish_later(
    own_s3_server: S3Server, spool_root: Path, tmp_path: Path, settings, monkeypatch
) -> None:
    s3 = use_bucket(own_s3_server, settings, monkeypatch)
    call, spool = logged_call(tmp_path, "outage@s3")
    pending = PendingFinalisation.objects.create(
        call=call, node="node-a", spool=str(spool), reason="ended"
    )
    own_s3_server.stop()

    # Transient, as a database out of reach is: the task is retried, nothing set aside.
    with pytest.raises(StorageUnavailable):
        finalise_recording.run(pending.pk)

    assert not Recording.objects.filter(status__in=Recording.STORED_STATUSES).exists()
    assert spool.exists() and not (tmp_path / "_failed").exists()
    assert PendingFinalisation.objects.filter(pk=pending.pk).exists()
    assert [path.name for path in spool.parent.rglob("upload-*")] == []

    # The storage back (empty: moto keeps its buckets in memory), the same spool is stored.
    own_s3_server.start()
    s3.client().create_bucket(Bucket=s3.bucket)
    stored = Recording.objects.get(pk=finalise_recording.run(pending.pk))
    assert stored.status == Status.COMPLETE
    assert hashlib.sha256(s3.object_bytes(stored.file.name)).hexdigest() == stored.sha256
    assert not spool.exists()


def test_a_file_saved_through_the_field_goes_to_the_bucket(
    s3_recordings: S3Recordings, postgresql: None
) -> None:
    """The ground the playback and retention tests stand on: Recording.file is the bucket."""
    made = recording(1)
    made.file.save("2026/01/02/saved.wav", ContentFile(b"RIFF saved"))
    assert s3_recordings.object_bytes(made.file.name) == b"RIFF saved"
