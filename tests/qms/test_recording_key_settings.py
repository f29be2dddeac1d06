"""QMS_RECORDING_KEYS and QMS_RECORDING_KEY_ID (issue 16): master keys from the environment
or a key file; a bad value stops start-up naming the variable, never showing a key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from qms.lib.env import SettingsError, env_recording_key_id, env_recording_keys
from tests.qms.test_settings import run_manage

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


def test_keys_are_read_by_id_from_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_RECORDING_KEYS", f"2025-a:{KEY_A}, 2026.b:{KEY_B}")
    assert env_recording_keys("QMS_RECORDING_KEYS") == {"2025-a": b"a" * 32, "2026.b": b"b" * 32}


def test_keys_are_read_from_a_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "recording-keys"
    key_file.write_text(f"# rotated yearly\n2025:{KEY_A}\n\n2026:{KEY_B}\n")
    monkeypatch.setenv("QMS_RECORDING_KEYS", f"file:{key_file}")
    assert env_recording_keys("QMS_RECORDING_KEYS") == {"2025": b"a" * 32, "2026": b"b" * 32}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"no id {KEY_A}", "key 1 must be written id:base64-key"),
        ("short:" + base64.b64encode(b"x" * 16).decode(), "must be 32 random bytes in base64"),
        ("junk:not base64!", "must be 32 random bytes in base64"),
        (f"same:{KEY_A},same:{KEY_B}", "names the key id 'same' twice"),
        ("file:/nonexistent/qms-keys", "which QMS cannot read"),
    ],
)
def test_a_bad_key_list_is_refused_naming_the_variable_and_not_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("QMS_RECORDING_KEYS", value)
    with pytest.raises(SettingsError, match=says) as refused:
        env_recording_keys("QMS_RECORDING_KEYS")
    assert "QMS_RECORDING_KEYS" in str(refused.value)
    assert KEY_A not in str(refused.value) and KEY_B not in str(refused.value)


def test_the_key_id_in_use_must_be_one_of_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_RECORDING_KEY_ID", "2027")
    with pytest.raises(SettingsError, match=r"QMS_RECORDING_KEY_ID is '2027', which is not a key"):
        env_recording_key_id("QMS_RECORDING_KEY_ID", {"2026": b"b" * 32}, "QMS_RECORDING_KEYS")


def test_start_up_stops_on_a_key_id_without_its_key(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path, "check", DEBUG="1", QMS_RECORDING_KEYS=f"2026:{KEY_B}", QMS_RECORDING_KEY_ID="x"
    )
    assert result.returncode != 0
    assert result.stderr.startswith("QMS_RECORDING_KEY_ID is 'x', which is not a key id")
    assert KEY_B not in result.stderr


def test_start_up_with_keys_and_a_key_id_passes_the_check(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "check",
        DEBUG="1",
        QMS_RECORDING_KEYS=f"2026:{KEY_B}",
        QMS_RECORDING_KEY_ID="2026",
    )
    assert result.returncode == 0, result.stderr
