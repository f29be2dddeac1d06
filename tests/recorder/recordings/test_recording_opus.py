"""QMS_RECORDING_FORMAT=opus: the same recording, as Ogg/Opus, several times smaller."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import soundfile
from django.core.management import call_command

from recorder.models import Recording


@pytest.mark.django_db(transaction=True)
def test_a_call_is_stored_as_ogg_opus_when_so_configured(public_captures: Path, settings) -> None:
    capture = str(public_captures / "rtpparsing-forensic.pcap")
    call_command("import_pcap", capture, stdout=io.StringIO())
    wav = Recording.objects.get()
    wav_size = wav.size
    Recording.objects.all().delete()
    settings.QMS_RECORDING_FORMAT = "opus"
    call_command("import_pcap", capture, stdout=io.StringIO())
    opus = Recording.objects.get()
    path = Path(opus.file.path)
    assert (opus.audio_format, path.suffix, opus.status) == ("opus", ".opus", "complete")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == opus.sha256
    info = soundfile.info(str(path))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("OGG", "OPUS", 2, 8000)
    assert info.duration == pytest.approx(wav.duration_seconds, abs=0.1)
    assert opus.size * 3 < wav_size
