"""Who sees which part of the directory: the one place that decides it (docs/playback.md,
"Roles").

The API and the admin show teams, agents, extensions, phones, line appearances and bindings
through the *_visible_to() functions here. The recordings' scope (recorder/playback/access.py)
is built on entitled(): the agents whose calls a person may hear, and their extensions.

The directory knows nothing of recordings; it knows one permission by name,
recorder.view_all_recordings, because every recording names its agent, extension and phone:
whoever may hear them all may see the whole directory.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet

from extensions.models import (
    Agent,
    Binding,
    BindingConflict,
    EncryptedSignalling,
    Extension,
    LineAppearance,
    Phone,
    SeenExtension,
    Team,
)

User = AbstractBaseUser | AnonymousUser
# A directory model's permissions that make one its keeper, who sees all of its rows.
WRITE_ACTIONS = ("add", "change", "delete")
EVERY_RECORDING = "recorder.view_all_recordings"


def sees_every_recording(user: User) -> bool:
    return bool(user.is_active and user.has_perm(EVERY_RECORDING))


def entitled(user: AbstractBaseUser) -> tuple[list[int], list[str]]:
    """The agents whose recordings `user` may hear, and the extensions they own.

    Read first (a small query) and handed to the search as lists, not as subqueries:
    PostgreSQL cannot turn `agent IN (SELECT ...) OR extension IN (SELECT ...)` into index
    scans, and checked every row of the archive against both (a sequential scan of a
    million recordings, 300-400 ms, for every count and every page). With lists it reads
    the (agent, started_at) and (extension, started_at) indexes (bench/RESULTS.md,
    "Playback search").
    """
    agent_ids, numbers = set(), set()
    supervised = Agent.objects.filter(teams__supervisors=user).values_list(
        "pk", "extensions__number"
    )
    for agent_id, number in supervised:
        agent_ids.add(agent_id)
        if number is not None:
            numbers.add(number)
    if settings.QMS_AGENTS_HEAR_OWN:
        agent_ids.update(Agent.objects.filter(user=user).values_list("pk", flat=True))
    return sorted(agent_ids), sorted(numbers)


def sees_whole_directory(user: User, model: type) -> bool:
    """Superusers, holders of recorder.view_all_recordings (every recording already names
    every agent, extension and phone) and the telephony admins, who hold one of the model's
    write permissions (add, change or delete), see every row of it (docs/playback.md,
    "Roles").

    The view permission is not enough: it is what opens the admin's (scoped) lists at all,
    so supervisors hold it too. A write permission is the telephony admin's grant: whoever
    keeps the phones or lines must see every phone and line. For the tables QMS alone
    writes (bindings, seen extensions, encrypted signalling) the admin refuses every edit
    whatever the permission, so there the change permission only says "the whole table".
    """
    if not (user.is_authenticated and user.is_active):
        return False
    meta = model._meta
    return sees_every_recording(user) or any(
        user.has_perm(f"{meta.app_label}.{action}_{meta.model_name}") for action in WRITE_ACTIONS
    )


def sees_directory_health(user: User) -> bool:
    """The health page lists every configured extension the wire never carried, every
    number it carried that is not configured (with addresses), every conflict and every
    encrypted address: the whole directory, for the telephony admins only."""
    return bool(user.is_staff) and all(
        sees_whole_directory(user, model)
        for model in (Extension, SeenExtension, BindingConflict, EncryptedSignalling)
    )


def agents_visible_to(user: User, agents: QuerySet | None = None) -> QuerySet:
    """A supervisor's agents: those of the teams they supervise; an agent (with
    QMS_AGENTS_HEAR_OWN) themselves."""
    agents = Agent.objects.all() if agents is None else agents
    return _directory(user, agents, Agent, "pk")


def teams_visible_to(user: User, teams: QuerySet | None = None) -> QuerySet:
    """The teams one supervises; for an agent (with QMS_AGENTS_HEAR_OWN), the teams they are in."""
    teams = Team.objects.all() if teams is None else teams
    if not (user.is_authenticated and user.is_active):
        return teams.none()
    if sees_whole_directory(user, Team):
        return teams
    mine = Q(pk__in=Team.objects.filter(supervisors=user).values("pk"))
    if settings.QMS_AGENTS_HEAR_OWN:
        mine |= Q(pk__in=Team.objects.filter(agents__user=user).values("pk"))
    return teams.filter(mine)


def extensions_visible_to(user: User, extensions: QuerySet | None = None) -> QuerySet:
    """The extensions owned by one's visible agents."""
    extensions = Extension.objects.all() if extensions is None else extensions
    return _directory(user, extensions, Extension, "agent")


def line_appearances_visible_to(user: User, lines: QuerySet | None = None) -> QuerySet:
    """The lines, on any phone, of the extensions owned by one's visible agents."""
    lines = LineAppearance.objects.all() if lines is None else lines
    return _directory(user, lines, LineAppearance, "extension__agent")


def phones_visible_to(user: User, phones: QuerySet | None = None) -> QuerySet:
    """The phones on which an extension of one's visible agents is a line (any line)."""
    phones = Phone.objects.all() if phones is None else phones
    if sees_whole_directory(user, Phone):
        return phones
    lines = _directory(user, LineAppearance.objects.all(), None, "extension__agent")
    return phones.filter(pk__in=lines.values("phone"))


def bindings_visible_to(user: User, bindings: QuerySet | None = None) -> QuerySet:
    """The observed ext/IP bindings of the extensions owned by one's visible agents."""
    bindings = Binding.objects.all() if bindings is None else bindings
    return _directory(user, bindings, Binding, "extension__agent")


def seen_extensions_visible_to(user: User, seen: QuerySet | None = None) -> QuerySet:
    """The numbers the wire carried that are extensions of one's visible agents."""
    seen = SeenExtension.objects.all() if seen is None else seen
    if sees_whole_directory(user, SeenExtension):
        return seen
    return seen.filter(number__in=extensions_visible_to(user).values("number"))


def encrypted_signalling_visible_to(user: User, rows: QuerySet | None = None) -> QuerySet:
    """Addresses whose signalling is encrypted belong to no agent: telephony admins only."""
    rows = EncryptedSignalling.objects.all() if rows is None else rows
    return rows if sees_whole_directory(user, EncryptedSignalling) else rows.none()


def binding_conflicts_visible_to(user: User, conflicts: QuerySet | None = None) -> QuerySet:
    """The conflicts over extensions of one's visible agents."""
    conflicts = BindingConflict.objects.all() if conflicts is None else conflicts
    return _directory(user, conflicts, BindingConflict, "extension__agent")


def _directory(user: User, rows: QuerySet, model: type | None, agent_path: str) -> QuerySet:
    if not (user.is_authenticated and user.is_active):
        return rows.none()
    if model is not None and sees_whole_directory(user, model):
        return rows
    return rows.filter(**{f"{agent_path}__in": _visible_agents(user)})


def _visible_agents(user: AbstractBaseUser) -> QuerySet:
    mine = Q(teams__supervisors=user)
    if settings.QMS_AGENTS_HEAR_OWN:
        mine |= Q(user=user)
    return Agent.objects.filter(mine).values("pk")
