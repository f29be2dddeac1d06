"""Database and storage errors by what they mean to a caller. Imports no app."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError


class StorageUnavailable(Exception):
    """The recordings storage refused or did not answer a write (an object store out of
    reach, a bucket that refuses the credentials): the spool is not at fault, and the same
    recording is stored once the storage answers again."""


# The database or the recordings storage is down or the connection broke: worth trying
# again later, never a reason to set work aside as failed.
TRANSIENT = (OperationalError, InterfaceError, StorageUnavailable)
