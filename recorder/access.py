"""Who sees which recording: the one place that decides it (docs/playback.md).

Every way to a recording (the API list, detail and audio, the audio URL of the pages, the
admin, counts and filters) starts from recordings_visible_to(), so nothing outside it can
show more. A recording someone may not see does not exist for them: views answer 404.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from extensions.models import Agent, Extension
from recorder.models import Call, Recording

User = AbstractBaseUser | AnonymousUser


def recordings_visible_to(user: User, recordings: QuerySet | None = None) -> QuerySet:
    """The recordings `user` may find and play, narrowed from `recordings` (default: all).

    - Superusers and holders of recorder.view_all_recordings: every recording.
    - A supervisor: recordings attributed to the agents of the teams they supervise, and
      recordings on the extensions those agents own, whoever took the call.
    - An agent, when QMS_AGENTS_HEAR_OWN is on: recordings attributed to them.
    - Anyone else: none.
    """
    recordings = Recording.objects.all() if recordings is None else recordings
    return _scoped(user, recordings)


def calls_visible_to(user: User, calls: QuerySet | None = None) -> QuerySet:
    """The call log under the same rules: a call is seen by whoever may see its recording."""
    calls = Call.objects.all() if calls is None else calls
    return _scoped(user, calls)


def sees_every_recording(user: User) -> bool:
    return bool(user.is_active and user.has_perm("recorder.view_all_recordings"))


def may_download(user: User) -> bool:
    """Downloading is a permission of its own, on top of being allowed to play."""
    return bool(user.is_active and user.has_perm("recorder.download_recording"))


def _scoped(user: User, rows: QuerySet) -> QuerySet:
    if not user.is_authenticated or not user.is_active:
        return rows.none()
    if sees_every_recording(user):
        return rows
    return rows.filter(_entitlement(user))


def _entitlement(user: AbstractBaseUser) -> Q:
    # Recording and Call both name their person `agent` and their line `extension`. The
    # subqueries stay in the database: one query, whatever the size of the teams.
    supervised = Agent.objects.filter(teams__supervisors=user).values("pk")
    owned_numbers = Extension.objects.filter(agent__in=supervised).values("number")
    entitled = Q(agent__in=supervised) | Q(extension__in=owned_numbers)
    if settings.QMS_AGENTS_HEAR_OWN:
        entitled |= Q(agent__in=Agent.objects.filter(user=user).values("pk"))
    return entitled
