"""Database errors by what they mean to a caller. Imports no app."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

# The database is down or the connection broke: worth trying again later, never a reason
# to set work aside as failed.
TRANSIENT = (OperationalError, InterfaceError)
