"""The capture commands as a command line starts them (recorder/nodes/commands.py)."""

from __future__ import annotations

import struct
from pathlib import Path

from recorder.nodes.commands import CAPTURE_CHECKS
from recorder.recordings.finishing_process import YOUNG_COLLECTION_EVERY
from tests.qms.test_settings import run_manage


def test_a_capture_command_leaves_the_web_s_checks_to_the_web(tmp_path: Path) -> None:
    capture = tmp_path / "empty.pcap"
    capture.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    assert run_manage(tmp_path, "migrate", "-v0", DEBUG="1").returncode == 0
    done = run_manage(tmp_path, "import_pcap", str(capture), DEBUG="1", PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "calls seen: 0" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    # The URL configuration's check would have imported every view: the playback pages'
    # too, which nothing of a capture needs.
    assert "models" in CAPTURE_CHECKS and "urls" not in CAPTURE_CHECKS
    assert "recorder.recordings.finalise" in imported
    assert "recorder.playback.views" not in imported
    assert "rest_framework.pagination" not in imported


def test_a_capture_command_keeps_its_set_up_out_of_the_collector(tmp_path: Path) -> None:
    capture = tmp_path / "empty.pcap"
    capture.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    assert run_manage(tmp_path, "migrate", "-v0", DEBUG="1").returncode == 0
    script = (
        "import gc\n"
        "from django.core.management import call_command\n"
        f"call_command('import_pcap', {str(capture)!r})\n"
        "print('collector', gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
    )
    done = run_manage(tmp_path, "shell", "-c", script, DEBUG="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == f"collector {YOUNG_COLLECTION_EVERY} True"
