"""Directory health (rules R4 and R8): what the wire and the configuration disagree on.

Shown a page at a time: a REGISTER flood can leave tens of thousands of numbers seen on
the wire, and the page stays small whatever their number (HEALTH_PAGE_ROWS per section).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, QuerySet

from extensions.models import (
    Binding,
    BindingConflict,
    CallServer,
    DisputedClaim,
    EncryptedSignalling,
    Extension,
    LineAppearance,
    Phone,
    SeenExtension,
)
from extensions.services import phone_at

# A one-digit configured number (the operator's 0) would match half the wire.
MIN_SUGGESTION_LENGTH = 2
# Rows of each section on one page of directory health.
HEALTH_PAGE_ROWS = 100


@dataclass(frozen=True, slots=True)
class UnconfiguredNumber:
    """A number the call system sends that no configured extension matches exactly."""

    seen: SeenExtension
    suggestions: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EncryptedPhone:
    """An address whose signalling QMS cannot read, and the phone configured there."""

    seen: EncryptedSignalling
    phone: Phone | None


@dataclass(frozen=True, slots=True)
class HealthPage:
    """Which page of directory health is shown, and how many rows each section has."""

    number: int = 1
    rows: int = HEALTH_PAGE_ROWS
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        largest = max(self.totals.values(), default=0)
        return max(1, -(-largest // self.rows))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def previous_number(self) -> int:
        return self.number - 1

    @property
    def next_number(self) -> int:
        return self.number + 1

    def window(self) -> slice:
        start = (self.number - 1) * self.rows
        return slice(start, start + self.rows)


@dataclass(frozen=True, slots=True)
class DirectoryHealth:
    never_seen: list[Extension]
    unconfigured: list[UnconfiguredNumber]
    open_conflicts: list[BindingConflict]
    encrypted: list[EncryptedPhone] = field(default_factory=list)
    disputed: list[DisputedClaim] = field(default_factory=list)
    page: HealthPage = field(default_factory=HealthPage)
    # No call server is configured: QMS trusts the ones it learns (extensions/trust.py).
    learning_call_servers: bool = False

    @property
    def healthy(self) -> bool:
        return not any(self.page.totals.values())

    @property
    def totals(self) -> dict[str, int]:
        return self.page.totals


def directory_health(page: int = 1, rows: int = HEALTH_PAGE_ROWS) -> DirectoryHealth:
    """One page of each section (page 1 is the first; a page past the end shows the last)."""
    sections = {
        "never_seen": never_seen_query(),
        "unconfigured": unconfigured_query(),
        "open_conflicts": BindingConflict.objects.filter(resolved_at__isnull=True)
        .select_related("first_binding", "second_binding")
        .order_by("-opened_at", "pk"),
        "encrypted": encrypted_query(),
        "disputed": DisputedClaim.objects.order_by("-last_seen", "pk"),
    }
    totals = {name: query.count() for name, query in sections.items()}
    shown = HealthPage(1, rows, totals)
    shown = HealthPage(min(max(page, 1), shown.pages), rows, totals)
    window = shown.window()
    configured = set(Extension.objects.values_list("number", flat=True))
    return DirectoryHealth(
        never_seen=list(sections["never_seen"][window]),
        unconfigured=[
            UnconfiguredNumber(seen, suggest(seen.number, configured))
            for seen in sections["unconfigured"][window]
        ],
        open_conflicts=list(sections["open_conflicts"][window]),
        encrypted=[
            EncryptedPhone(seen, phone_at(seen.ip)) for seen in sections["encrypted"][window]
        ],
        disputed=list(sections["disputed"][window]),
        page=shown,
        learning_call_servers=not CallServer.objects.filter(learned=False).exists(),
    )


def encrypted_phones() -> list[EncryptedPhone]:
    """Addresses whose signalling is TLS and which QMS has learned nothing else about.

    A static IP configured in QMS, or a live binding from another source (TAPI, a clear
    SIP leg), covers such a phone; the rest cannot be attributed by their signalling.
    """
    return [EncryptedPhone(seen, phone_at(seen.ip)) for seen in encrypted_query()]


def encrypted_query() -> QuerySet[EncryptedSignalling]:
    learned = Binding.objects.filter(ip=OuterRef("ip"), ended_at__isnull=True)
    static = Phone.objects.filter(static_ip=True, configured_ip=OuterRef("ip"))
    return EncryptedSignalling.objects.filter(~Exists(learned), ~Exists(static)).order_by("ip")


def never_seen_extensions() -> list[Extension]:
    """Configured extensions the wire has never carried (R8: the phone may need a reboot).

    Extensions that appear only on static-IP phones are left out: the address identifies
    those phones, so QMS does not need to hear their extensions (R4's exception).
    """
    return list(never_seen_query())


def never_seen_query() -> QuerySet[Extension]:
    seen = SeenExtension.objects.filter(number=OuterRef("number"))
    on_dynamic_phone = LineAppearance.objects.filter(
        extension=OuterRef("pk"), phone__static_ip=False
    )
    on_any_phone = LineAppearance.objects.filter(extension=OuterRef("pk"))
    return (
        Extension.objects.filter(~Exists(seen))
        .filter(Exists(on_dynamic_phone) | ~Exists(on_any_phone))
        .select_related("agent")
        .prefetch_related("appearances__phone")
        .order_by("number")
    )


def unconfigured_numbers() -> list[UnconfiguredNumber]:
    configured = set(Extension.objects.values_list("number", flat=True))
    return [
        UnconfiguredNumber(seen, suggest(seen.number, configured)) for seen in unconfigured_query()
    ]


def unconfigured_query() -> QuerySet[SeenExtension]:
    """Numbers seen on the wire that no configured extension matches."""
    configured = Extension.objects.values("number")
    return SeenExtension.objects.exclude(number__in=configured).order_by("number")


def suggest(number: str, configured: set[str]) -> list[str]:
    """Configured extensions that are a suffix or prefix of a number seen on the wire.

    QMS has 1234 and the PBX sends 6175551234: the admin probably typed the short form, and
    R4 says QMS must store what the PBX sends. Longest match first; one-character
    numbers are not suggested.
    """
    found = set()
    for size in range(MIN_SUGGESTION_LENGTH, len(number)):
        for part in (number[-size:], number[:size]):
            if part in configured:
                found.add(part)
    return sorted(found, key=lambda part: (-len(part), part))
