"""The directory's write paths: line appearances and observed ext/IP bindings.

Every writer outside a form (the import command, the API, the observation pipeline) goes
through here so that the rules and their messages are the same everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import reduce
from operator import or_

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, Exists, OuterRef, Q, QuerySet, Subquery, Value, When

from extensions import trust
from extensions.models import (
    Agent,
    Binding,
    BindingConflict,
    DisputedClaim,
    EncryptedSignalling,
    Extension,
    LineAppearance,
    Phone,
    SeenExtension,
    line_one_first,
)
from integrations.observations import BindingSeen, BindingSource, EncryptedSignallingSeen
from qms.lib.prepared import prepared, prepared_create, prepared_update

log = logging.getLogger(__name__)

CONCURRENT_CHANGE = (
    "Another change to the directory was saved at the same time and conflicts with this one; "
    "nothing was saved. Reload and try again."
)


# Line appearances ------------------------------------------------------------------------


def save_lines(lines: list[LineAppearance], replacing: list[LineAppearance] = ()) -> None:
    """Save line appearances together, turning a lost race into the rule's own message.

    `replacing` are rows of the same phones that the new lines take the place of: they are
    deleted first and the lines inserted afresh, so that a person may swap lines 1 and 2
    of a phone in one save without a moment where both rows claim one line.
    """
    try:
        with transaction.atomic():
            LineAppearance.objects.filter(pk__in=[row.pk for row in replacing if row.pk]).delete()
            for line in lines:
                line.pk = None
                line._state.adding = True
                line.save()
    except IntegrityError:
        raise ValidationError(race_messages(lines)) from None


def race_messages(lines: list[LineAppearance]) -> list[str]:
    """Explain an IntegrityError after the fact: whoever won the race has committed, so
    the same checks the forms run now see it and name its phone."""
    messages = []
    for line in lines:
        for field_messages in line.conflicts().values():
            messages.extend(field_messages)
    return messages or [CONCURRENT_CHANGE]


def assign_line(phone: Phone, line_number: int, number: str) -> LineAppearance:
    """Make `number` line `line_number` of `phone`, creating the extension if it is new.

    Raises ValidationError with the rule's message when the line breaks R1-R3.
    """
    with transaction.atomic():
        extension = Extension.objects.filter(number=number).first()
        if extension is None:
            extension = Extension(number=number)
            extension.full_clean()
        line = LineAppearance(phone=phone, line_number=line_number)
        line._pending_extension = extension
        line.full_clean(exclude={"extension"})
        line.extension = stored_extension(extension)
        save_lines([line])
    return line


def stored_extension(extension: Extension) -> Extension:
    """The saved row for a validated extension. Two writers adding the same new number at
    once both end up with the one row (R1) instead of one of them failing."""
    if extension.pk is not None:
        return extension
    stored, _ = Extension.objects.get_or_create(
        number=extension.number,
        defaults={"agent": extension.agent, "description": extension.description},
    )
    return stored


# Observed bindings -------------------------------------------------------------------------


class BindingAction(StrEnum):
    """What applying one observation did to the directory (the sink counts them by name)."""

    OPENED = "opened"
    REFRESHED = "refreshed"
    # Line 1 at a new IP: the old binding closed (mobility, R5).
    MOVED = "moved"
    # Two phones both claim the extension as line 1 (R2 broken on the wire).
    CONFLICT = "conflict"
    # Refused by the trust rules: a stronger source holds it, or a gateway's calls.
    DISPUTED = "disputed"
    UNREGISTERED = "unregistered"
    # Older than what is known for the extension.
    STALE = "stale"
    # An unregister of a binding that is not open.
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class BindingOutcome:
    """What applying one observation did, and to which binding when there is one."""

    action: BindingAction
    binding: Binding | None = None


def note_encrypted_signalling(seen: EncryptedSignallingSeen) -> None:
    """Remember a phone address whose signalling is TLS, for directory health."""
    found, created = EncryptedSignalling.objects.get_or_create(
        ip=seen.ip,
        defaults={"protocol": seen.protocol, "first_seen": seen.seen_at, "last_seen": seen.seen_at},
    )
    if not created and seen.seen_at > found.last_seen:
        found.last_seen, found.protocol = seen.seen_at, seen.protocol
        found.save(update_fields=["last_seen", "protocol"])


def configured_form(seen: BindingSeen) -> BindingSeen:
    """The observation under the form of its user that the directory holds.

    R4: QMS never reformats, but a call system may write one user in several ways in one
    message (Lync: a SIP user name in From, a line URI tel:+14255550100;ext=100 in
    P-Asserted-Identity). The decoder passes those forms as aliases, exactly as written;
    the first one configured in QMS is used. None configured: the primary form stays.
    """
    if not seen.aliases or _configured(seen.extension):
        return seen
    for alias in seen.aliases:
        if _configured(alias):
            return replace(seen, extension=alias, aliases=())
    return seen


@prepared
def _configured_extension(number: str) -> QuerySet[Extension]:
    return Extension.objects.filter(number=number).values_list("pk")[:1]


def _configured(number: str) -> bool:
    return bool(_configured_extension(number))


def learns_from_call(seen: BindingSeen) -> bool:
    """Whether a call's ext/IP (rule R6) speaks for a phone.

    A phone's own INVITE or answer says where its extension is. A trunk, an SBC or a
    gateway also sends INVITEs in its own name, carrying outside numbers that are no
    phone's: taking those as bindings would fill the directory with strangers at the
    SBC's address and make its nodes look like R2 conflicts. So a call teaches ext/IP
    only for an extension configured in QMS, or at the address of a known phone.
    """
    if seen.source != BindingSource.SIP_CALL:
        return True
    return bool(_speaks_for_a_phone(configured_form(seen).extension, seen.ip))


@prepared(addresses=("ip",))
def _speaks_for_a_phone(number: str, ip: str) -> QuerySet:
    configured = Extension.objects.filter(number=number)
    phone = Phone.objects.filter(reduce(or_, _at_address(ip)))
    announced = Binding.objects.filter(ip=ip, ended_at__isnull=True).exclude(
        source=BindingSource.SIP_CALL
    )
    # Three questions in one round trip: a row from any of them is a yes. A trunk's
    # INVITEs, the common case here, are answered no with this one query.
    return (
        configured.values_list("pk")
        .order_by()
        .union(phone.values_list("pk").order_by(), announced.values_list("pk").order_by(), all=True)
    )[:1]


NOT_A_PHONE = "not a phone's (trunk or gateway)"


def refusal_of(seen: BindingSeen) -> str:
    """Why a sighting from capture is not applied to the directory, or "" when it is:
    the trust rules of extensions/trust.py, then whether a call's claim speaks for a
    phone at all. A refusal for trust is kept as a disputed claim in directory health."""
    reason = trust.refusal(seen)
    if reason:
        trust.dispute(seen, reason)
        return reason
    if seen.source == BindingSource.SIP_CALL and not learns_from_call(seen):
        return NOT_A_PHONE
    return ""


def _take_back_gateway_bindings(seen: BindingSeen) -> None:
    """Bindings that a gateway's calls taught before it was known as one are closed."""
    wrong = Binding.objects.select_for_update().filter(
        ip=seen.ip, source=BindingSource.SIP_CALL, ended_at__isnull=True
    )
    for binding in wrong:
        close_binding(binding, Binding.EndReason.DISPUTED, seen.seen_at)
    # Nor is any phone there: a gateway's address is no phone's.
    Phone.objects.filter(static_ip=False, current_ip=seen.ip).update(current_ip=None)


def apply_binding(seen: BindingSeen) -> BindingOutcome:
    """Apply one ext/IP observation to the directory (rules R5, R7, R2 on the wire).

    Idempotent: the same observation twice changes nothing but last-seen. Ordered: an
    observation older than the newest one applied for its extension is stale and changes
    nothing. Observations of one extension are serialised by a row lock on its
    SeenExtension, so concurrent capture nodes cannot interleave half-applied moves.

    Inside a caller's transaction it takes no savepoint of its own (two round trips per
    observation on the sink's hot path): a failure spoils the caller's transaction, so a
    caller that goes on after one wraps each call in an atomic block of its own, as the
    sink, the tasks and the TAPI poller do.
    """
    seen = configured_form(seen)
    with transaction.atomic(savepoint=False):
        if _is_late(seen):
            log.info("stale observation of %s at %s ignored", seen.extension, seen.ip)
            return BindingOutcome(BindingAction.STALE)
        if seen.unregister:
            return _unregister(seen)
        return _bind(seen)


def _is_late(seen: BindingSeen) -> bool:
    # The usual case, a newer observation of a known extension, is one statement: the
    # UPDATE takes the row lock that serialises the extension's observations, and
    # PostgreSQL checks its condition again on the row a concurrent writer committed.
    if _advance_seen(seen.extension, seen.seen_at, seen.ip, seen.source):
        return False
    # A number new to the directory, the other common case: INSERT ... ON CONFLICT DO
    # NOTHING, then the row as stored, locked (another node may have written it first).
    _first_seen(seen.extension, seen.seen_at, seen.ip, seen.source)
    wire = _seen_locked(seen.extension)[0]
    if (wire.first_seen, wire.last_seen, wire.last_ip) == (seen.seen_at, seen.seen_at, seen.ip):
        return False  # this observation's own row
    if seen.seen_at < wire.last_seen:
        if seen.seen_at < wire.first_seen:
            wire.first_seen = seen.seen_at
            wire.save(update_fields=["first_seen"])
        return True
    wire.last_seen, wire.last_ip, wire.last_source = seen.seen_at, seen.ip, seen.source
    wire.save(update_fields=["last_seen", "last_ip", "last_source"])
    return False


@prepared_update(addresses=("ip",))
def _advance_seen(number: str, seen_at: datetime, ip: str, source: str) -> tuple[QuerySet, dict]:
    advancing = SeenExtension.objects.filter(number=number, last_seen__lte=seen_at)
    return advancing, {"last_seen": seen_at, "last_ip": ip, "last_source": source}


@prepared_create(addresses=("ip",), ignore_conflicts=True)
def _first_seen(number: str, seen_at: datetime, ip: str, source: str) -> SeenExtension:
    return SeenExtension(
        number=number, first_seen=seen_at, last_seen=seen_at, last_ip=ip, last_source=source
    )


@prepared
def _seen_locked(number: str) -> QuerySet[SeenExtension]:
    return SeenExtension.objects.select_for_update().filter(number=number)


@prepared
def _extension_numbered(number: str) -> QuerySet[Extension]:
    return Extension.objects.filter(number=number).select_related("agent")[:1]


@prepared
def _open_bindings_locked(number: str) -> QuerySet[Binding]:
    return Binding.objects.select_for_update().filter(
        extension_number=number, ended_at__isnull=True
    )


def _bind(seen: BindingSeen) -> BindingOutcome:
    extension = next(iter(_extension_numbered(seen.extension)), None)
    phone, line_number = _locate(seen, extension)
    open_rows = _open_bindings_locked(seen.extension)
    here = next((row for row in open_rows if row.ip == seen.ip), None)
    refused = None if here is not None else _refused_claim(open_rows, seen, line_number)
    if refused is not None:
        return refused
    if here is not None:
        _refresh(here, seen, phone, line_number)
        action = BindingAction.REFRESHED
    else:
        here = _open(seen, extension, phone, line_number)
        rivals = [row for row in open_rows if row.is_primary]
        action = _settle_rivals(here, rivals, seen) if here.is_primary else BindingAction.OPENED
    if here.is_primary and extension is not None and extension.agent_id is not None:
        _place_agent(extension.agent_id, seen.seen_at, seen.ip)
    if phone is not None:
        _note_phone(phone, seen)
    return BindingOutcome(action, here)


def _refused_claim(
    open_rows: list[Binding], seen: BindingSeen, line_number: int | None
) -> BindingOutcome | None:
    """A new binding the trust rules refuse (docs/directory.md): a weaker source never
    moves what a stronger one holds, and a call's claim from an address that relays the
    calls of many numbers teaches nothing (the address is learned as a gateway).

    A line 2+ binding moves nobody (R3: Mary's phone calling on John's 9001, her line 2),
    so only a claim that would be line 1 where it is seen is held to the strength rule."""
    holder = _stronger_holder(open_rows, seen) if line_number in (None, 1) else None
    if holder is not None:
        trust.dispute(seen, DisputedClaim.Reason.STRONGER_HELD, holder.ip)
        return BindingOutcome(BindingAction.DISPUTED, holder)
    if seen.source == BindingSource.SIP_CALL and trust.relays_many_numbers(seen):
        _take_back_gateway_bindings(seen)
        trust.dispute(seen, DisputedClaim.Reason.GATEWAY)
        return BindingOutcome(BindingAction.DISPUTED)
    return None


def _stronger_holder(open_rows: list[Binding], seen: BindingSeen) -> Binding | None:
    """A live binding of the extension elsewhere from a stronger source than `seen`'s."""
    claim = trust.strength(seen.source)
    for row in open_rows:
        live = row.expires_at is None or row.expires_at > seen.seen_at
        if live and row.ip != seen.ip and trust.strength(row.source) > claim:
            return row
    return None


def _locate(seen: BindingSeen, extension: Extension | None) -> tuple[Phone | None, int | None]:
    """Which phone an observation comes from, and which of its lines the extension is.

    The phone is found by the device identity the protocol carries, else by the IP (a
    static phone's configured address, or the last IP a phone was seen at), else, for a
    configured extension, as the phone that holds it as line 1 (it got a new address).
    One query asks all of these, in that order of preference, with the line.
    """
    found = _phones_for(
        seen.ip,
        seen.device,
        extension.pk if extension is not None else 0,
        by_device=bool(seen.device),
        by_extension=extension is not None,
        with_line=extension is not None and seen.line_number is None,
    )
    phone = found[0] if found else None
    if phone is None or seen.line_number is not None:
        return phone, seen.line_number
    return phone, getattr(phone, "line_here", None)


@prepared(addresses=("ip",))
def _phones_for(
    ip: str, device: str, extension_id: int, *, by_device: bool, by_extension: bool, with_line: bool
) -> QuerySet[Phone]:
    """_locate's question, the preferred phone first: its shape depends on what is known."""
    choices = _at_address(ip)
    if by_device:
        choices.insert(0, Q(device_name=device))
    if by_extension:
        line_one = LineAppearance.objects.filter(extension_id=extension_id, line_number=1)
        choices.append(Q(static_ip=False, pk__in=line_one.values("phone")))
    phones = _preferred_phones(choices)
    if with_line:
        lines = LineAppearance.objects.filter(phone=OuterRef("pk"), extension_id=extension_id)
        phones = phones.annotate(line_here=Subquery(lines.values("line_number")[:1]))
    return phones[:1]


def phone_at(ip: str) -> Phone | None:
    """The phone at an address: the static-IP phone configured there, else the phone
    most recently heard from there."""
    return _preferred_phones(_at_address(ip)).first()


def _at_address(ip: str) -> list[Q]:
    """The ways a phone is at an address, in order of preference: the static-IP phone
    configured there, then the phones last heard from there."""
    return [Q(static_ip=True, configured_ip=ip), Q(current_ip=ip)]


def _preferred_phones(choices: list[Q]) -> QuerySet[Phone]:
    """Phones matching any of `choices`, those of an earlier choice first; among the
    phones of one choice, the most recently heard first."""
    preference = Case(*(When(choice, then=Value(rank)) for rank, choice in enumerate(choices)))
    return (
        Phone.objects.filter(reduce(or_, choices))
        .annotate(preference=preference)
        .order_by("preference", "-last_heard_at")
    )


def _expiry(seen: BindingSeen) -> datetime | None:
    if seen.source == BindingSource.STATIC:
        return None
    lifetime = seen.expires_in if seen.expires_in else settings.QMS_BINDING_DEFAULT_TTL
    return seen.seen_at + timedelta(seconds=lifetime)


def _open(
    seen: BindingSeen, extension: Extension | None, phone: Phone | None, line: int | None
) -> Binding:
    binding = _new_binding(
        seen.extension,
        extension.pk if extension is not None else None,
        seen.ip,
        seen.source,
        phone.pk if phone is not None else None,
        seen.device,
        line,
        seen.seen_at,
        _expiry(seen),
    )
    # As create() would have them: the rows read already, not read again.
    binding.extension, binding.phone = extension, phone
    return binding


@prepared_create(addresses=("ip",))
def _new_binding(
    number: str,
    extension_id: int | None,
    ip: str,
    source: str,
    phone_id: int | None,
    device: str,
    line_number: int | None,
    seen_at: datetime,
    expires_at: datetime | None,
) -> Binding:
    return Binding(
        extension_number=number,
        extension_id=extension_id,
        ip=ip,
        source=source,
        phone_id=phone_id,
        device=device,
        line_number=line_number,
        first_seen=seen_at,
        last_seen=seen_at,
        expires_at=expires_at,
    )


def _refresh(binding: Binding, seen: BindingSeen, phone: Phone | None, line: int | None) -> None:
    binding.last_seen = max(binding.last_seen, seen.seen_at)
    binding.expires_at = _expiry(seen)
    if binding.phone_id is None:  # by its id: reading binding.phone would be a query
        binding.phone = phone
    binding.line_number = binding.line_number if line is None else line
    binding.device = binding.device or seen.device
    _refreshed(
        binding.pk,
        binding.last_seen,
        binding.expires_at,
        binding.phone_id,
        binding.line_number,
        binding.device,
    )


@prepared_update
def _refreshed(
    binding_id: int,
    last_seen: datetime,
    expires_at: datetime | None,
    phone_id: int | None,
    line_number: int | None,
    device: str,
) -> tuple[QuerySet, dict]:
    """_refresh's write, the row locked already: what Binding.save(update_fields) does."""
    changes = {
        "last_seen": last_seen,
        "expires_at": expires_at,
        "phone_id": phone_id,
        "line_number": line_number,
        "device": device,
    }
    return Binding.objects.filter(pk=binding_id), changes


def _settle_rivals(here: Binding, rivals: list[Binding], seen: BindingSeen) -> BindingAction:
    """The extension is now line 1 at a new IP: that is mobility (R5) and the old binding
    closes, unless both phones are still claiming it (R2 broken on the wire)."""
    action = BindingAction.OPENED
    for rival in rivals:
        if _both_claim(here, rival, seen):
            _open_conflict(here, rival, seen)
            action = BindingAction.CONFLICT
        else:
            close_binding(rival, Binding.EndReason.MOVED, seen.seen_at)
            action = BindingAction.MOVED if action == BindingAction.OPENED else action
    return action


def _both_claim(here: Binding, rival: Binding, seen: BindingSeen) -> bool:
    """Two phones claim one extension as line 1 when

    - both announced it as line 1 themselves (device-aware sources such as SCCP LineStat
      and TAPI), from different devices, while the rival's claim has not expired; or
    - the extension comes back to an IP it moved away from while that IP's own claim was
      still unexpired: the two phones are taking turns, so both are live.
    """
    rival_live = rival.expires_at is None or rival.expires_at > seen.seen_at
    if (
        rival_live
        and seen.line_number == 1
        and rival.line_number == 1
        and here.device
        and rival.device
        and here.device != rival.device
    ):
        return True
    return Binding.objects.filter(
        extension_number=here.extension_number,
        ip=here.ip,
        end_reason=Binding.EndReason.MOVED,
        ended_at__gte=rival.first_seen,
        expires_at__gt=seen.seen_at,
    ).exists()


def _open_conflict(here: Binding, rival: Binding, seen: BindingSeen) -> None:
    if BindingConflict.objects.filter(
        extension_number=here.extension_number, resolved_at__isnull=True
    ).exists():
        return
    BindingConflict.objects.create(
        extension_number=here.extension_number,
        extension=here.extension,
        first_binding=rival,
        second_binding=here,
        opened_at=seen.seen_at,
    )
    log.warning(
        "extension %s is live as line 1 at both %s and %s (rule R2)",
        here.extension_number,
        rival.ip,
        here.ip,
    )


def close_binding(binding: Binding, reason: str, at: datetime) -> None:
    binding.ended_at = at
    binding.end_reason = reason
    binding.save(update_fields=["ended_at", "end_reason"])
    _resolve_conflicts(binding, reason, at)
    if binding.is_primary and binding.extension_id is not None:
        _replace_agent_ip(binding)


def _resolve_conflicts(binding: Binding, reason: str, at: datetime) -> None:
    BindingConflict.objects.filter(
        Q(first_binding=binding) | Q(second_binding=binding), resolved_at__isnull=True
    ).update(resolved_at=at, resolution=f"binding at {binding.ip} {reason}")


def _replace_agent_ip(closed: Binding) -> None:
    """The agent's IP follows their live line-1 bindings; none left means nowhere."""
    agent_id = Extension.objects.filter(pk=closed.extension_id).values_list("agent", flat=True)[0]
    if agent_id is None:
        return
    agent = Agent.objects.select_for_update().get(pk=agent_id)
    if agent.current_ip != closed.ip:
        return
    still_live = (
        Binding.objects.filter(extension__agent=agent, ended_at__isnull=True)
        .filter(Q(line_number__isnull=True) | Q(line_number=1))
        .order_by("-last_seen")
        .first()
    )
    agent.current_ip = still_live.ip if still_live else None
    agent.ip_updated_at = closed.ended_at
    agent.save(update_fields=["current_ip", "ip_updated_at"])


@prepared_update(addresses=("ip",))
def _place_agent(agent_id: int, seen_at: datetime, ip: str) -> tuple[QuerySet, dict]:
    # Rule R7: the agent's account follows the ext/IP the call system announces.
    newer = Agent.objects.filter(pk=agent_id).filter(
        Q(ip_updated_at__isnull=True) | Q(ip_updated_at__lte=seen_at)
    )
    return newer, {"current_ip": ip, "ip_updated_at": seen_at}


def _note_phone(phone: Phone, seen: BindingSeen) -> None:
    _heard_from(phone.pk, seen.seen_at, seen.ip, moves=not phone.static_ip)


@prepared_update(addresses=("ip",))
def _heard_from(phone_id: int, seen_at: datetime, ip: str, *, moves: bool) -> tuple[QuerySet, dict]:
    heard = Phone.objects.filter(pk=phone_id).filter(
        Q(last_heard_at__isnull=True) | Q(last_heard_at__lte=seen_at)
    )
    changes = {"last_heard_at": seen_at}
    if moves:
        changes["current_ip"] = ip
    return heard, changes


def _unregister(seen: BindingSeen) -> BindingOutcome:
    binding = (
        Binding.objects.select_for_update()
        .filter(extension_number=seen.extension, ip=seen.ip, ended_at__isnull=True)
        .first()
    )
    if binding is None:
        return BindingOutcome(BindingAction.IGNORED)
    binding.last_seen = max(binding.last_seen, seen.seen_at)
    binding.save(update_fields=["last_seen"])
    close_binding(binding, Binding.EndReason.UNREGISTERED, seen.seen_at)
    return BindingOutcome(BindingAction.UNREGISTERED, binding)


def expire_bindings(now: datetime) -> int:
    """Close every open binding whose lifetime ended before `now`; return how many."""
    expired = 0
    due = Binding.objects.filter(ended_at__isnull=True, expires_at__lte=now)
    for binding_id in due.values_list("pk", flat=True):
        with transaction.atomic():
            binding = (
                Binding.objects.select_for_update()
                .filter(pk=binding_id, ended_at__isnull=True)
                .first()
            )
            if binding is not None:
                close_binding(binding, Binding.EndReason.EXPIRED, binding.expires_at)
                expired += 1
    return expired


# Attribution ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who was at an IP at a moment: the extension live there, its phone and its person."""

    extension_number: str
    extension: Extension | None
    phone: Phone | None
    agent: Agent | None
    source: str


def who_was_at(ip: str, at: datetime) -> Attribution | None:
    """The one place that decides who an IP belonged to at a given time.

    A static-IP phone is identified by its address alone. Otherwise the bindings valid at
    `at` decide, line 1 (or unnamed lines) before line 2+, newest first. The person is the
    extension's owner for a line-1 binding, and the person at the phone (its line-1 owner)
    for a line 2+ binding, each falling back to the other.
    """
    bindings = _valid_bindings(ip, at)
    # The bindings say whether a static phone is there too: usually one query, not two.
    if not bindings or bindings[0].static_phone_here:
        static_phone = next(iter(_static_phone(ip)), None)
        if static_phone is not None:
            return _static_attribution(static_phone)
    candidates = line_one_first(bindings)
    if not candidates:
        return None
    binding = candidates[0]
    owner = binding.extension.agent if binding.extension else None
    # The holder costs a query: asked only when the owner does not already decide.
    if binding.is_primary:
        agent = owner or _holder(binding.phone)
    else:
        agent = _holder(binding.phone) or owner
    return Attribution(
        binding.extension_number, binding.extension, binding.phone, agent, binding.source
    )


@prepared(addresses=("ip",))
def _static_phone(ip: str) -> QuerySet[Phone]:
    return Phone.objects.filter(static_ip=True, configured_ip=ip).order_by("device_name")[:1]


@prepared(addresses=("ip",))
def _valid_bindings(ip: str, at: datetime) -> QuerySet[Binding]:
    static = Phone.objects.filter(static_ip=True, configured_ip=ip)
    return (
        Binding.objects.valid_at(at)
        .filter(ip=ip)
        .annotate(static_phone_here=Exists(static))
        .select_related("extension__agent", "phone")
    )[:20]


def where_was(extension: str, at: datetime) -> str | None:
    """The address `extension` was bound at, at `at`, by the same rule as who_was_at: line
    1 before line 2+, newest first. For a call system that names the line but not the
    phone's address (a TAPI feed)."""
    valid = Binding.objects.valid_at(at).filter(extension_number=extension)
    candidates = line_one_first(valid[:10])
    return candidates[0].ip if candidates else None


def _holder(phone: Phone | None) -> Agent | None:
    """The person at the phone, as Phone.holder has it."""
    if phone is None:
        return None
    line = next(iter(_line_one_of(phone.pk)), None)
    return line.extension.agent if line else None


@prepared
def _line_one_of(phone_id: int) -> QuerySet[LineAppearance]:
    lines = LineAppearance.objects.filter(phone_id=phone_id, line_number=1)
    return lines.select_related("extension__agent")[:1]


def _static_attribution(phone: Phone) -> Attribution:
    line = phone.line_one
    extension = line.extension if line else None
    return Attribution(
        extension.number if extension else "",
        extension,
        phone,
        extension.agent if extension else None,  # the phone's holder, from the line read
        BindingSource.STATIC,
    )
