"""The directory: who is recorded, at which phone, under which extension (rules R1-R8)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse

from extensions.validators import is_sip_user_name, validate_extension_number
from integrations.observations import BindingSource, CallProtocol

BINDING_SOURCES = [(source.value, source.value) for source in BindingSource]
# A hundred years: longer is no retention policy, and overflows date arithmetic.
MAX_RETENTION_DAYS = 36_500


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    supervisors = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="supervised_teams",
        help_text="People who may search and play the recordings of this team's agents.",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_RETENTION_DAYS)],
        help_text="Days this team's recordings are kept (at most 36,500, a hundred years); "
        "empty for the global QMS_RETENTION_DAYS.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    name = models.CharField(
        max_length=150,
        unique=True,
        help_text="The person's name; the directory import matches agents by this name exactly.",
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agent",
        help_text="The QMS login of this person, if they have one.",
    )
    teams = models.ManyToManyField(Team, blank=True, related_name="agents")
    current_ip = models.GenericIPAddressField(
        "current IP",
        null=True,
        blank=True,
        help_text="IP of the phone this agent's extension is live on now, kept up to date "
        "from the call system's signalling (rule R7). Empty when it is live nowhere.",
    )
    ip_updated_at = models.DateTimeField("IP updated", null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("admin:extensions_agent_change", args=[self.pk])


class Extension(models.Model):
    number = models.CharField(
        max_length=64,
        unique=True,
        validators=[validate_extension_number],
        error_messages={"blank": "An extension cannot be empty: write it as the PBX writes it."},
        help_text="Exactly as the PBX / CallManager writes it (rule R4): 1234 is not 01234, "
        "and 6175551212 is not 617-555-1212.",
    )
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="extensions",
        help_text="The person this extension belongs to; their calls on it are theirs.",
    )
    description = models.CharField(max_length=200, blank=True)
    do_not_record = models.BooleanField(
        default=False,
        help_text="Never record calls on this extension: nothing of them is written.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return self.number

    def validate_unique(self, exclude: set[str] | None = None) -> None:
        # Rule R1. Checked here rather than left to the field's generic "already exists"
        # so the person learns where the existing extension is in use.
        if exclude and "number" in exclude:
            return super().validate_unique(exclude)
        clash = Extension.objects.filter(number=self.number).exclude(pk=self.pk).first()
        if clash is not None:
            raise ValidationError({"number": extension_exists_message(clash)})
        return super().validate_unique((exclude or set()) | {"number"})


def extension_exists_message(extension: Extension) -> str:
    where = ", ".join(
        f"line {line.line_number} on phone {line.phone.device_name}"
        for line in extension.appearances.select_related("phone").order_by("line_number", "pk")
    )
    where = f" ({where})" if where else ""
    return (
        f"Extension {extension.number} already exists{where}. "
        "Every extension in QMS is unique (rule R1)."
    )


class Phone(models.Model):
    # The call systems a phone speaks: the calls' protocols but rtp, which no phone
    # announces (an unsignalled call's phone is known by its IP alone).
    class Protocol(models.TextChoices):
        SIP = CallProtocol.SIP, "SIP"
        SCCP = CallProtocol.SCCP, "Cisco SCCP"
        TAPI = CallProtocol.TAPI, "ShoreTel TAPI"
        LYNC = CallProtocol.LYNC, "Lync / Skype for Business"

    device_name = models.CharField(
        max_length=64,
        unique=True,
        help_text="The phone's own identity: SEP + MAC for Cisco (SEP001122334455), "
        "the MAC or SIP instance id otherwise.",
    )
    protocol = models.CharField(
        "call system",
        max_length=8,
        choices=Protocol.choices,
        help_text="The signalling QMS learns this phone's extensions and calls from.",
    )
    description = models.CharField(max_length=200, blank=True)
    current_ip = models.GenericIPAddressField(
        "current IP",
        null=True,
        blank=True,
        help_text="Last IP the call system announced for this phone (rule R7).",
    )
    static_ip = models.BooleanField(
        "static IP",
        default=False,
        help_text="The phone keeps a fixed address configured here, which alone identifies "
        "it (the exception to rule R4).",
    )
    configured_ip = models.GenericIPAddressField(
        "configured IP",
        null=True,
        blank=True,
        help_text="The fixed address of a static-IP phone.",
    )
    last_heard_at = models.DateTimeField(
        "last heard",
        null=True,
        blank=True,
        help_text="Last time the call system announced this phone. Empty: never seen since "
        "QMS started; such a phone may need a reboot to be learned (rule R8).",
    )

    class Meta:
        ordering = ["device_name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(static_ip=False) | Q(configured_ip__isnull=False),
                name="static_phone_has_configured_ip",
                violation_error_message="A static-IP phone needs its configured IP address.",
            ),
            models.UniqueConstraint(
                fields=["configured_ip"],
                condition=Q(static_ip=True),
                name="one_static_phone_per_ip",
                violation_error_message="Another static-IP phone already has this address.",
            ),
        ]

    def __str__(self) -> str:
        return self.device_name

    def get_absolute_url(self) -> str:
        return reverse("admin:extensions_phone_change", args=[self.pk])

    def clean(self) -> None:
        if self.static_ip and not self.configured_ip:
            raise ValidationError(
                {"configured_ip": "A static-IP phone needs its configured IP address."}
            )
        if self.static_ip:
            other = (
                Phone.objects.filter(static_ip=True, configured_ip=self.configured_ip)
                .exclude(pk=self.pk)
                .first()
            )
            if other is not None:
                raise ValidationError(
                    {
                        "configured_ip": f"{self.configured_ip} is already the static IP of "
                        f"phone {other.device_name}; a static address identifies one phone."
                    }
                )

    @property
    def line_one(self) -> LineAppearance | None:
        return self.lines.filter(line_number=1).select_related("extension__agent").first()

    @property
    def holder(self) -> Agent | None:
        """The person at this phone: the owner of its line-1 extension."""
        line = self.line_one
        return line.extension.agent if line else None

    @property
    def label(self) -> str:
        holder = self.holder
        return f"{self.device_name} ({holder})" if holder else self.device_name


class LineAppearance(models.Model):
    """One button on one phone: line N rings for extension E (rules R2 and R3)."""

    phone = models.ForeignKey(Phone, on_delete=models.CASCADE, related_name="lines")
    line_number = models.PositiveSmallIntegerField(
        help_text="1 is the phone's primary line; an extension is line 1 on one phone at most."
    )
    extension = models.ForeignKey(Extension, on_delete=models.PROTECT, related_name="appearances")

    class Meta:
        ordering = ["phone", "line_number"]
        constraints = [
            models.CheckConstraint(
                condition=Q(line_number__gte=1),
                name="line_number_from_one",
                violation_error_message="Line numbers start at 1.",
            ),
            models.UniqueConstraint(fields=["phone", "line_number"], name="one_extension_per_line"),
            models.UniqueConstraint(fields=["phone", "extension"], name="extension_once_per_phone"),
            # Rule R2: an extension rings as line 1 on one phone at most.
            models.UniqueConstraint(
                fields=["extension"],
                condition=Q(line_number=1),
                name="line_one_on_one_phone",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.phone} line {self.line_number}: {self.extension}"

    def clean(self) -> None:
        if self.extension_id is None and getattr(self, "_pending_extension", None) is None:
            return
        errors = self.conflicts(same_phone=not getattr(self, "checked_by_formset", False))
        if errors:
            raise ValidationError(errors)

    @property
    def number(self) -> str:
        pending = getattr(self, "_pending_extension", None)
        return pending.number if pending is not None else self.extension.number

    def conflicts(self, same_phone: bool = True) -> dict[str, list[str]]:
        """Every rule this line breaks, as messages that name the conflicting phone."""
        errors: dict[str, list[str]] = {}
        message = self.protocol_conflict() or self.line_one_conflict()
        if message:
            errors.setdefault("extension", []).append(message)
        if same_phone and self.phone_id is not None:
            for field, message in self.same_phone_conflicts():
                errors.setdefault(field, []).append(message)
        return errors

    def protocol_conflict(self) -> str:
        if not is_sip_user_name(self.number):
            return ""
        if self.phone.protocol in (Phone.Protocol.SIP, Phone.Protocol.LYNC):
            return ""
        return (
            f"Extension {self.number} is a SIP user name; it can only be a line on a SIP or "
            f"Lync phone, and {self.phone.device_name} is {self.phone.get_protocol_display()}."
        )

    def line_one_conflict(self) -> str:
        if self.line_number != 1:
            return ""
        others = LineAppearance.objects.filter(line_number=1, extension__number=self.number)
        if self.phone_id is not None:
            others = others.exclude(phone_id=self.phone_id)
        other = others.select_related("phone").first()
        if other is None:
            return ""
        return line_one_taken_message(self.number, other.phone)

    def same_phone_conflicts(self) -> list[tuple[str, str]]:
        rows = LineAppearance.objects.filter(phone_id=self.phone_id).exclude(pk=self.pk)
        found = []
        taken = rows.filter(line_number=self.line_number).select_related("extension").first()
        if taken is not None and taken.extension.number != self.number:
            found.append(("line_number", line_taken_message(self.phone, taken)))
        twice = rows.filter(extension__number=self.number).first()
        if twice is not None:
            found.append(("extension", extension_twice_message(self.phone, twice)))
        return found


def line_one_taken_message(number: str, phone: Phone) -> str:
    return (
        f"Extension {number} is already line 1 on phone {phone.label}. An extension can be "
        "line 1 on one phone only (rule R2); it may be line 2 or higher on any number of phones."
    )


def line_taken_message(phone: Phone, taken: LineAppearance) -> str:
    return (
        f"Phone {phone.device_name} already has a line {taken.line_number} "
        f"(extension {taken.extension.number}); each line of a phone rings for one extension."
    )


def extension_twice_message(phone: Phone, existing: LineAppearance) -> str:
    return (
        f"Extension {existing.extension.number} is already line {existing.line_number} on "
        f"phone {phone.device_name}; an extension appears at most once on a phone."
    )


class SeenExtension(models.Model):
    """An extension number as the call system sent it, configured in QMS or not."""

    number = models.CharField(max_length=128, unique=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(
        help_text="Time of the newest observation applied; older ones arriving late are stale."
    )
    last_ip = models.GenericIPAddressField("last IP")
    last_source = models.CharField(max_length=16, choices=BINDING_SOURCES)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return self.number


class BindingQuerySet(models.QuerySet):
    def valid_at(self, at: datetime) -> BindingQuerySet:
        """The bindings that held at `at` (seen by then, not ended before), newest first."""
        return (
            self.filter(first_seen__lte=at)
            .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=at))
            .order_by("-first_seen")
        )


def line_one_first(bindings: Iterable[Binding]) -> list[Binding]:
    """Line 1 (or unnamed lines) before line 2+, each kept in the order given."""
    return sorted(bindings, key=lambda binding: not binding.is_primary)


class Binding(models.Model):
    """One observed (extension, IP) fact and how long it held. Rows are never deleted, so
    a recording from last week still resolves to who was at that IP last week."""

    class EndReason(models.TextChoices):
        UNREGISTERED = "unregistered", "unregistered"
        MOVED = "moved", "moved to another IP"
        EXPIRED = "expired", "expired"
        DISPUTED = "disputed", "taken back: learned from a gateway's calls"

    extension_number = models.CharField(
        max_length=128, help_text="Exactly as the call system sent it."
    )
    extension = models.ForeignKey(
        Extension,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="bindings",
        help_text="The configured extension with exactly this number; empty when the "
        "number is seen on the wire but not configured in QMS.",
    )
    ip = models.GenericIPAddressField("IP")
    source = models.CharField(max_length=16, choices=BINDING_SOURCES)
    phone = models.ForeignKey(
        Phone, null=True, blank=True, on_delete=models.SET_NULL, related_name="bindings"
    )
    device = models.CharField(max_length=128, blank=True)
    line_number = models.PositiveSmallIntegerField(null=True, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason, blank=True)

    objects = BindingQuerySet.as_manager()

    class Meta:
        ordering = ["-first_seen"]
        indexes = [
            models.Index(fields=["extension_number", "first_seen"]),
            models.Index(fields=["ip", "first_seen"]),
            models.Index(
                fields=["expires_at"],
                condition=Q(ended_at__isnull=True),
                name="open_binding_expiry",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["extension_number", "ip"],
                condition=Q(ended_at__isnull=True),
                name="one_open_binding_per_extension_and_ip",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.extension_number} @ {self.ip}"

    @property
    def active(self) -> bool:
        return self.ended_at is None

    @property
    def is_primary(self) -> bool:
        """Line 1, or a line the protocol did not name: such a binding places its owner."""
        return self.line_number in (None, 1)


class EncryptedSignalling(models.Model):
    """A phone address seen talking to its call system over TLS, which QMS cannot read."""

    ip = models.GenericIPAddressField("IP", unique=True)
    protocol = models.CharField(max_length=16, help_text="sip-tls or sccp-tls.")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["ip"]
        verbose_name_plural = "encrypted signalling"

    def __str__(self) -> str:
        return f"{self.ip} ({self.protocol})"


class BindingConflict(models.Model):
    """Rule R2 broken on the wire: one extension live as line 1 on two phones at once."""

    extension_number = models.CharField(max_length=128)
    extension = models.ForeignKey(Extension, null=True, blank=True, on_delete=models.SET_NULL)
    first_binding = models.ForeignKey(Binding, on_delete=models.PROTECT, related_name="+")
    second_binding = models.ForeignKey(Binding, on_delete=models.PROTECT, related_name="+")
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["extension_number"],
                condition=Q(resolved_at__isnull=True),
                name="one_open_conflict_per_extension",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.extension_number} live as line 1 at {self.first_binding.ip} "
            f"and {self.second_binding.ip}"
        )


def validate_network(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(
            f"{value!r} is not an IP address or network: write 10.20.0.5, 10.20.0.0/24 or "
            "2001:db8::/64.",
            code="invalid_network",
        ) from None


class CallServer(models.Model):
    """An address of the call system itself: a registrar, CallManager, PBX, SBC or gateway.

    Bindings are trusted from the call system, not from callers (docs/directory.md): a
    REGISTER's 2xx counts only from a call server, an SCCP session only with one, and an
    INVITE from a call server's address (a trunk, a gateway) teaches no binding at all.
    A person configures them; while none is configured QMS learns them (`learned`), from
    the addresses answering REGISTERs and serving SCCP, and from addresses relaying the
    calls of many numbers (gateways).
    """

    class Kind(models.TextChoices):
        REGISTRAR = "registrar", "SIP registrar or proxy"
        CALL_MANAGER = "call-manager", "CallManager (SCCP)"
        PBX = "pbx", "PBX"
        SBC = "sbc", "session border controller"
        GATEWAY = "gateway", "gateway or trunk"

    network = models.CharField(
        max_length=50,
        unique=True,
        validators=[validate_network],
        help_text="An address (10.20.0.5) or a network (10.20.0.0/28) of the call system.",
    )
    kind = models.CharField(max_length=16, choices=Kind)
    name = models.CharField(max_length=100, blank=True)
    learned = models.BooleanField(
        default=False,
        help_text="Learned from the wire while no call server was configured; a person "
        "may confirm it by unticking this.",
    )
    first_seen = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["network"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.network}"

    def clean(self) -> None:
        if self.network:
            self.network = str(ipaddress.ip_network(self.network, strict=False))


class DisputedClaim(models.Model):
    """A claim of ext/IP that QMS did not apply, and why: a registration vouched for by no
    call server, a call's From claiming an extension a stronger source holds elsewhere, a
    call relayed by a gateway. Shown in directory health until resolved."""

    class Reason(models.TextChoices):
        UNTRUSTED_SERVER = "untrusted-server", "no call server vouched for it"
        STRONGER_HELD = "stronger-held", "a stronger source holds the extension elsewhere"
        GATEWAY = "gateway", "the address is a call server or relays many numbers"

    extension_number = models.CharField(max_length=128)
    ip = models.GenericIPAddressField("claimed IP")
    source = models.CharField(max_length=16, choices=BINDING_SOURCES)
    reason = models.CharField(max_length=20, choices=Reason)
    vouched_by = models.CharField(
        max_length=45, blank=True, help_text="The call server address the claim named."
    )
    held_at = models.GenericIPAddressField(
        "held at", null=True, blank=True, help_text="Where the extension stays bound."
    )
    count = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["extension_number", "ip", "reason"], name="one_dispute_per_claim"
            )
        ]

    def __str__(self) -> str:
        return f"{self.extension_number} at {self.ip}: {self.get_reason_display()}"
