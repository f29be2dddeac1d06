"""Recordings encrypted at rest (issue 16, section 1): finishing a call with a key id set
seals its file; verify_recordings, rotate_recording_keys and encrypt_recordings, each
stopped and run again, on PostgreSQL through import_pcap's real finishing path."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from recorder.media.sealed import HEADER_BYTES, SLOT_BYTES, SLOTS_AT, parse_header
from recorder.models import Recording
from recorder.recordings import rekeying
from recorder.recordings.encryption import stored_audio
from recorder.recordings.integrity import IntegrityState, verify
from recorder.recordings.waveform import peaks_for_recording

pytestmark = pytest.mark.django_db(transaction=True)

CAPTURE = "rtpparsing-forensic.pcap"


def imported(public_captures: Path) -> Recording:
    call_command("import_pcap", str(public_captures / CAPTURE), stdout=io.StringIO())
    return Recording.objects.get()


def plain_of(recording: Recording) -> bytes:
    return b"".join(stored_audio(recording).every_plain_byte())


def header_of(recording: Recording) -> bytes:
    return Path(recording.file.path).read_bytes()[:HEADER_BYTES]


@pytest.fixture
def plain_recording(public_captures: Path) -> tuple[bytes, Recording]:
    """The capture's recording stored plain: its bytes, and the row."""
    recording = imported(public_captures)
    return Path(recording.file.path).read_bytes(), recording


@pytest.fixture
def sealed_recordings(public_captures: Path, settings) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"


def leftovers(recording: Recording) -> list[str]:
    """Temporary files beside the recording's (a plain copy, a half-sealed file)."""
    folder = Path(recording.file.path).parent
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_a_call_finished_with_a_key_id_is_sealed_and_reads_as_the_same_wav(
    plain_recording: tuple[bytes, Recording], public_captures: Path, settings
) -> None:
    wav, plain = plain_recording
    Recording.objects.all().delete()
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    sealed = imported(public_captures)
    stored = Path(sealed.file.path).read_bytes()
    assert stored.startswith(b"QMSSEA") and wav[44:108] not in stored
    assert sealed.encryption_key_id == "test-2025"
    assert parse_header(stored).key_ids == ["test-2025"]
    # The row describes the plain audio, exactly as before: size, hash, waveform.
    assert (sealed.size, sealed.sha256, sealed.file.name) == (
        plain.size,
        plain.sha256,
        plain.file.name,
    )
    assert plain_of(sealed) == wav
    assert sealed.peaks == plain.peaks
    assert peaks_for_recording(sealed) == plain.peaks
    assert verify(sealed).state == IntegrityState.VERIFIED


def test_an_opus_recording_is_sealed_too_and_no_plain_copy_is_left(
    public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_FORMAT = "opus"
    settings.QMS_RECORDING_KEY_ID = "test-2026"
    sealed = imported(public_captures)
    assert leftovers(sealed) == []
    opus = plain_of(sealed)
    assert opus.startswith(b"OggS")
    assert hashlib.sha256(opus).hexdigest() == sealed.sha256
    assert verify(sealed).state == IntegrityState.VERIFIED


def test_without_a_key_id_recordings_stay_plain(plain_recording: tuple[bytes, Recording]) -> None:
    wav, recording = plain_recording
    assert wav.startswith(b"RIFF") and recording.encryption_key_id == ""


def test_verify_recordings_lists_each_failure_and_exits_non_zero(
    public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    recording = imported(public_captures)
    assert "1 verified" in run("verify_recordings")
    path = Path(recording.file.path)
    damaged = bytearray(path.read_bytes())
    damaged[HEADER_BYTES + 70_000] ^= 0x04
    path.write_bytes(bytes(damaged))
    with pytest.raises(CommandError, match="1 recording"):
        out = io.StringIO()
        try:
            call_command("verify_recordings", stdout=out)
        finally:
            listed = out.getvalue()
    assert f"recording {recording.pk} ({recording.file.name}): chunk 1 of the" in listed
    assert "1 unreadable" in listed


def test_rotation_rewraps_the_header_alone_and_old_files_still_play(
    public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    recording = imported(public_captures)
    before = Path(recording.file.path).read_bytes()
    wav = plain_of(recording)
    assert "1 recording(s) would be rewrapped" in run(
        "rotate_recording_keys", "--to", "test-2026", "--dry-run"
    )
    assert Path(recording.file.path).read_bytes() == before
    run("rotate_recording_keys", "--to", "test-2026")
    recording.refresh_from_db()
    after = Path(recording.file.path).read_bytes()
    assert recording.encryption_key_id == "test-2026"
    assert parse_header(after).key_ids == ["test-2026"]
    assert after[HEADER_BYTES:] == before[HEADER_BYTES:]  # no audio encrypted again
    # The old key can go: the file opens with the new one alone.
    settings.QMS_RECORDING_KEYS = {"test-2026": settings.QMS_RECORDING_KEYS["test-2026"]}
    assert plain_of(recording) == wav
    assert "0 recording(s) rewrapped" in run("rotate_recording_keys", "--to", "test-2026")


def test_a_rotation_stopped_midway_is_finished_by_running_it_again(
    public_captures: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    recording = imported(public_captures)
    wav = plain_of(recording)
    # Stopped after the new wrap is durable and before the old slot is cleared.
    real_write_slot = rekeying._write_slot
    writes = []

    def stop_at_second_write(stored, slot: int, packed: bytes) -> None:
        writes.append(slot)
        if len(writes) == 2:
            raise KeyboardInterrupt
        real_write_slot(stored, slot, packed)

    monkeypatch.setattr(rekeying, "_write_slot", stop_at_second_write)
    with pytest.raises(KeyboardInterrupt):
        run("rotate_recording_keys", "--to", "test-2026")
    recording.refresh_from_db()
    header = parse_header(header_of(recording))
    assert recording.encryption_key_id == "test-2025"
    assert sorted(header.key_ids) == ["test-2025", "test-2026"]
    assert plain_of(recording) == wav  # either key opens it meanwhile
    monkeypatch.setattr(rekeying, "_write_slot", real_write_slot)
    run("rotate_recording_keys", "--to", "test-2026")
    recording.refresh_from_db()
    assert recording.encryption_key_id == "test-2026"
    assert parse_header(header_of(recording)).key_ids == ["test-2026"]
    assert plain_of(recording) == wav


def test_a_torn_write_of_the_new_slot_leaves_the_old_one_opening_the_file(
    public_captures: Path, settings
) -> None:
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    recording = imported(public_captures)
    wav = plain_of(recording)
    path = Path(recording.file.path)
    stored = bytearray(path.read_bytes())
    slot_1 = SLOTS_AT + SLOT_BYTES
    # Half a slot written, as a power cut in the middle of the first write would leave it.
    stored[slot_1 : slot_1 + 40] = b"\x09test-2026" + bytes(30)
    path.write_bytes(bytes(stored))
    assert plain_of(recording) == wav
    run("rotate_recording_keys", "--to", "test-2026")
    recording.refresh_from_db()
    assert parse_header(header_of(recording)).key_ids == ["test-2026"]
    assert plain_of(recording) == wav


def test_rotation_to_a_key_id_not_configured_is_refused(public_captures: Path) -> None:
    with pytest.raises(CommandError, match="'nope' is not a key id"):
        run("rotate_recording_keys", "--to", "nope")


def test_encrypt_recordings_seals_plain_ones_in_place(
    plain_recording: tuple[bytes, Recording], settings
) -> None:
    wav, recording = plain_recording
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    assert "1 recording(s) sealed under test-2025" in run("encrypt_recordings")
    recording.refresh_from_db()
    assert recording.encryption_key_id == "test-2025"
    assert Path(recording.file.path).read_bytes().startswith(b"QMSSEA")
    assert plain_of(recording) == wav
    assert verify(recording).state == IntegrityState.VERIFIED
    assert leftovers(recording) == []
    assert "0 recording(s) sealed" in run("encrypt_recordings")


def test_encrypt_recordings_stopped_before_the_row_plays_and_is_finished_next_time(
    plain_recording: tuple[bytes, Recording], settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav, recording = plain_recording
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    real_replace = rekeying.os.replace

    def crash_after_the_swap(source, destination) -> None:
        real_replace(source, destination)
        raise KeyboardInterrupt

    monkeypatch.setattr(rekeying.os, "replace", crash_after_the_swap)
    with pytest.raises(KeyboardInterrupt):
        run("encrypt_recordings")
    monkeypatch.setattr(rekeying.os, "replace", real_replace)
    recording.refresh_from_db()
    assert recording.encryption_key_id == ""  # the row was not written...
    assert plain_of(recording) == wav  # ...and the sealed file plays all the same
    run("encrypt_recordings")
    recording.refresh_from_db()
    assert recording.encryption_key_id == "test-2025"


def test_encrypt_recordings_stopped_while_writing_leaves_the_plain_file_whole(
    plain_recording: tuple[bytes, Recording], settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav, recording = plain_recording
    settings.QMS_RECORDING_KEY_ID = "test-2025"

    def crash_before_the_swap(source, destination) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rekeying.os, "replace", crash_before_the_swap)
    with pytest.raises(KeyboardInterrupt):
        run("encrypt_recordings")
    monkeypatch.undo()
    assert Path(recording.file.path).read_bytes() == wav
    assert leftovers(recording) == []


def test_a_plain_file_altered_since_recording_is_not_sealed(
    plain_recording: tuple[bytes, Recording], settings
) -> None:
    wav, recording = plain_recording
    settings.QMS_RECORDING_KEY_ID = "test-2025"
    altered = bytearray(wav)
    altered[1000] ^= 0x10
    Path(recording.file.path).write_bytes(bytes(altered))
    with pytest.raises(CommandError, match="could not be sealed"):
        run("encrypt_recordings")
    assert Path(recording.file.path).read_bytes() == bytes(altered)
    recording.refresh_from_db()
    assert recording.encryption_key_id == ""


def test_encrypt_recordings_without_a_key_id_says_so(plain_recording) -> None:
    with pytest.raises(CommandError, match="QMS_RECORDING_KEY_ID is not set"):
        run("encrypt_recordings")
