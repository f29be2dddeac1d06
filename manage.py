#!/usr/bin/env python3
"""Django's command-line utility for QMS."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    from django.core.management import execute_from_command_line

    from qms.lib.env import SettingsError

    try:
        execute_from_command_line(sys.argv)
    except SettingsError as error:
        # A bad environment value: its sentence names the variable; a traceback would
        # only bury it.
        sys.exit(str(error))


if __name__ == "__main__":
    main()
