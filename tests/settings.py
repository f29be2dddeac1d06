"""Test settings: the real settings, read from the environment, with DEBUG on by default
so a developer needs no SECRET_KEY to run the suite."""

from __future__ import annotations

import os

os.environ.setdefault("DEBUG", "1")

from qms.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
