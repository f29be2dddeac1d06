"""Test settings: the real settings, read from the environment, with DEBUG on by default
so a developer needs no SECRET_KEY to run the suite."""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import tempfile

os.environ.setdefault("DEBUG", "1")
# Recordings and spools of a test run go to a scratch folder, never into var/.
_SCRATCH = tempfile.mkdtemp(prefix="qms-tests-")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ.setdefault("QMS_RECORDINGS_DIR", os.path.join(_SCRATCH, "recordings"))
os.environ.setdefault("QMS_SPOOL_DIR", os.path.join(_SCRATCH, "spool"))

# Two master keys for the encryption tests (fixed test values, never used elsewhere); no
# QMS_RECORDING_KEY_ID, so recordings are plain unless a test turns sealing on.
TEST_RECORDING_KEYS = {
    key_id: base64.b64encode(f"qms test master key {key_id}".ljust(32, ".").encode()).decode()
    for key_id in ("test-2025", "test-2026")
}
os.environ.setdefault(
    "QMS_RECORDING_KEYS", ",".join(f"{key_id}:{key}" for key_id, key in TEST_RECORDING_KEYS.items())
)

from qms.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
