"""Test settings: the real settings, read from the environment, with DEBUG on by default
so a developer needs no SECRET_KEY to run the suite."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DEBUG", "1")
# Recordings and spools of a test run go to a scratch folder, never into var/.
_SCRATCH = tempfile.mkdtemp(prefix="qms-tests-")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ.setdefault("QMS_RECORDINGS_DIR", os.path.join(_SCRATCH, "recordings"))
os.environ.setdefault("QMS_SPOOL_DIR", os.path.join(_SCRATCH, "spool"))

from qms.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
