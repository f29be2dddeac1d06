"""A spool whose call QMS has no row for is set aside once, never renamed at every start."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.observations import Side
from recorder.media.rtplog import RtpLog
from recorder.recording import ORPHANED, recover_spools


@pytest.mark.django_db
def test_an_unknown_calls_spool_is_set_aside_once(tmp_path: Path) -> None:
    log = RtpLog(tmp_path / "1700000000-abc", {"call_id": "nobody", "protocol": "sip",
                                                "started_at": 1_700_000_000.0})  # fmt: skip
    log.append(1_700_000_000.5, Side.CALLER, b"\x80\x00" + b"\x00" * 10 + b"\xff" * 160)
    log.close()
    assert recover_spools(tmp_path) == []
    assert recover_spools(tmp_path) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == [ORPHANED]
    assert [path.name for path in (tmp_path / ORPHANED).iterdir()] == ["1700000000-abc"]
