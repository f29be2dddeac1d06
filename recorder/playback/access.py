"""Who sees which recording: the one place that decides it (docs/playback.md).

Every way to a recording (the API list, detail, audio and waveform, the audio URL of the
pages, the admin, counts and filters) starts from recordings_visible_to(), so nothing outside
it can show more. A recording someone may not see does not exist for them: views answer 404.

The directory the API shows (teams, agents, extensions, phones, line appearances, bindings)
is scoped by the same rules in extensions/access.py, which also says whose calls one is
entitled to hear (entitled()).
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet

from extensions.access import User, entitled, sees_every_recording
from recorder.models import Call, Evaluation, Recording

VIEW_OWN_EVALUATIONS = "recorder.view_own_evaluations"


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


def evaluations_visible_to(user: User, evaluations: QuerySet | None = None) -> QuerySet:
    """The evaluations `user` may read, narrowed from `evaluations` (default: all).

    - Whoever sees every recording: every evaluation.
    - Anyone else: the submitted evaluations of the recordings they may see, and their own
      drafts; never an evaluation of themselves (as the recording's agent) through that.
    - An agent holding recorder.view_own_evaluations: also the submitted evaluations of
      their own calls, whether or not they may hear them (QMS_AGENTS_HEAR_OWN).
    """
    evaluations = Evaluation.objects.all() if evaluations is None else evaluations
    if not user.is_authenticated or not user.is_active:
        return evaluations.none()
    if sees_every_recording(user):
        return evaluations
    submitted = Q(status=Evaluation.Status.SUBMITTED)
    of_themselves = Q(agent__user=user)
    seen = Q(recording__in=recordings_visible_to(user).values("pk")) & ~of_themselves
    seen &= submitted | Q(evaluator=user)
    if user.has_perm(VIEW_OWN_EVALUATIONS):
        seen |= of_themselves & submitted
    return evaluations.filter(seen)


def may_download(user: User) -> bool:
    """Downloading is a permission of its own, on top of being allowed to play."""
    return bool(user.is_active and user.has_perm("recorder.download_recording"))


def may_listen_live(user: User) -> bool:
    """Listening to calls in progress is a permission of its own too (recorder/playback/
    live.py), for the calls calls_visible_to() shows."""
    return bool(user.is_active and user.has_perm("recorder.listen_live"))


def _scoped(user: User, rows: QuerySet) -> QuerySet:
    if not user.is_authenticated or not user.is_active:
        return rows.none()
    if sees_every_recording(user):
        return rows
    return rows.filter(_entitlement(user))


def recording_scope_parts(user: User) -> list[Q] | None:
    """recordings_visible_to() as disjoint conditions whose union is the scope, for
    counting and paging a large archive from its indexes (recorder/playback/listing.py).

    None: every recording. An empty list: none. Otherwise the recordings attributed to the
    entitled agents, then those on their extensions taken by anybody else.
    """
    if not user.is_authenticated or not user.is_active:
        return []
    if sees_every_recording(user):
        return None
    agent_ids, numbers = entitled(user)
    parts = [Q(agent__in=agent_ids)] if agent_ids else []
    if numbers:
        on_their_lines = Q(extension__in=numbers)
        parts.append(on_their_lines & ~Q(agent__in=agent_ids) if agent_ids else on_their_lines)
    return parts


def _entitlement(user: AbstractBaseUser) -> Q:
    # Recording and Call both name their person `agent` and their line `extension`.
    agent_ids, numbers = entitled(user)
    return Q(agent__in=agent_ids) | Q(extension__in=numbers)
