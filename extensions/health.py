"""Directory health (rules R4 and R8): what the wire and the configuration disagree on."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef

from extensions.models import BindingConflict, Extension, LineAppearance, SeenExtension

# A one-digit configured number (the operator's 0) would match half the wire.
MIN_SUGGESTION_LENGTH = 2


@dataclass(frozen=True, slots=True)
class UnconfiguredNumber:
    """A number the call system sends that no configured extension matches exactly."""

    seen: SeenExtension
    suggestions: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DirectoryHealth:
    never_seen: list[Extension]
    unconfigured: list[UnconfiguredNumber]
    open_conflicts: list[BindingConflict]

    @property
    def healthy(self) -> bool:
        return not (self.never_seen or self.unconfigured or self.open_conflicts)


def directory_health() -> DirectoryHealth:
    return DirectoryHealth(
        never_seen=never_seen_extensions(),
        unconfigured=unconfigured_numbers(),
        open_conflicts=list(
            BindingConflict.objects.filter(resolved_at__isnull=True).select_related(
                "first_binding", "second_binding"
            )
        ),
    )


def never_seen_extensions() -> list[Extension]:
    """Configured extensions the wire has never carried (R8: the phone may need a reboot).

    Extensions that appear only on static-IP phones are left out: the address identifies
    those phones, so QMS does not need to hear their extensions (R4's exception).
    """
    seen = SeenExtension.objects.filter(number=OuterRef("number"))
    on_dynamic_phone = LineAppearance.objects.filter(
        extension=OuterRef("pk"), phone__static_ip=False
    )
    on_any_phone = LineAppearance.objects.filter(extension=OuterRef("pk"))
    return list(
        Extension.objects.filter(~Exists(seen))
        .filter(Exists(on_dynamic_phone) | ~Exists(on_any_phone))
        .select_related("agent")
        .prefetch_related("appearances__phone")
    )


def unconfigured_numbers() -> list[UnconfiguredNumber]:
    configured = set(Extension.objects.values_list("number", flat=True))
    unknown = SeenExtension.objects.exclude(number__in=Extension.objects.values("number"))
    return [UnconfiguredNumber(seen, suggest(seen.number, configured)) for seen in unknown]


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
