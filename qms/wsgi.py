"""WSGI entry point for gunicorn."""

from __future__ import annotations

import os
import sys

from django.core.wsgi import get_wsgi_application

from qms.lib.env import SettingsError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

try:
    application = get_wsgi_application()
except SettingsError as error:
    print(error, file=sys.stderr)
    # 3 is gunicorn's "worker failed to boot": it stops rather than respawning forever.
    raise SystemExit(3) from None
