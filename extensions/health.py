"""Directory health (rules R4 and R8): what the wire and the configuration disagree on."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef

from extensions.models import (
    Binding,
    BindingConflict,
    EncryptedSignalling,
    Extension,
    LineAppearance,
    Phone,
    SeenExtension,
)
from extensions.services import phone_at

# A one-digit configured number (the operator's 0) would match half the wire.
MIN_SUGGESTION_LENGTH = 2


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
class DirectoryHealth:
    never_seen: list[Extension]
    unconfigured: list[UnconfiguredNumber]
    open_conflicts: list[BindingConflict]
    encrypted: list[EncryptedPhone] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not (self.never_seen or self.unconfigured or self.open_conflicts or self.encrypted)


def directory_health() -> DirectoryHealth:
    return DirectoryHealth(
        never_seen=never_seen_extensions(),
        unconfigured=unconfigured_numbers(),
        open_conflicts=list(
            BindingConflict.objects.filter(resolved_at__isnull=True).select_related(
                "first_binding", "second_binding"
            )
        ),
        encrypted=encrypted_phones(),
    )


def encrypted_phones() -> list[EncryptedPhone]:
    """Addresses whose signalling is TLS and which QMS has learned nothing else about.

    A static IP configured in QMS, or a live binding from another source (TAPI, a clear
    SIP leg), covers such a phone; the rest cannot be attributed by their signalling.
    """
    learned = Binding.objects.filter(ip=OuterRef("ip"), ended_at__isnull=True)
    static = Phone.objects.filter(static_ip=True, configured_ip=OuterRef("ip"))
    unlearned = EncryptedSignalling.objects.filter(~Exists(learned), ~Exists(static))
    return [EncryptedPhone(seen, phone_at(seen.ip)) for seen in unlearned]


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
