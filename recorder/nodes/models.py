"""Capture nodes in the database: what each node captures, how it is doing, and how far its
events have reached the database.

The packet path never reads these tables. A node's Celery worker (recorder/nodes/node.py)
reads its interfaces, holds their leases and heartbeats their state; the event tasks
(recorder/tasks.py) keep the outbox cursors; see docs/deployment.md.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from recorder.capture.hep import listen_address
from recorder.models import Call

# A node's name is part of its Celery queue's name (capture.<node>), so it is kept to
# characters every broker accepts in a queue name.
validate_node_name = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    "A node name is letters, digits, '.', '_' and '-', starting with a letter or digit "
    "(it becomes the worker's queue, capture.<node>).",
)
validate_interface_name = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
    "An interface name is written as the node's `ip link` shows it, such as eth1 or ens3f1.",
)


def validate_hep_address(value: str) -> None:
    try:
        listen_address(value)
    except ValueError as error:
        raise ValidationError(str(error), code="invalid") from None


class CaptureInterface(models.Model):
    """What one node's worker captures: a network interface receiving a mirror, or a HEP
    listener receiving the packets remote agents mirror; and its live state."""

    class Kind(models.TextChoices):
        INTERFACE = "interface", "network interface (mirror port)"
        HEP = "hep", "HEP listener (remote agents)"

    node = models.CharField(
        max_length=100,
        validators=[validate_node_name],
        help_text="The capture node (its QMS_NODE) whose worker captures on this interface: "
        "the worker started with `celery -A qms worker -Q capture.<node>`.",
    )
    kind = models.CharField(
        max_length=9,
        choices=Kind,
        default=Kind.INTERFACE,
        help_text="A network interface the mirror (SPAN) port feeds, or a UDP address where "
        "HEP agents (heplify, captagent, Kamailio, OpenSIPS, FreeSWITCH) send what they mirror.",
    )
    interface = models.CharField(
        "interface or HEP address",
        max_length=64,
        help_text="For a network interface, its name as `ip link` shows it, such as eth1. "
        "For a HEP listener, the address and UDP port it listens on, such as 0.0.0.0:9060 "
        "or [::]:9060.",
    )
    bpf_filter = models.CharField(
        "BPF filter",
        max_length=1000,
        blank=True,
        help_text="A capture filter as tcpdump writes it; empty captures everything. "
        "A network interface's only: a HEP listener takes every agent's packets.",
    )
    enabled = models.BooleanField(
        default=True, help_text="Captured while the node's worker runs; off stops the sniffer."
    )

    # The live state, written by the worker that holds the lease.
    running = models.BooleanField(default=False, editable=False)
    running_since = models.DateTimeField(null=True, blank=True, editable=False)
    packets_per_second = models.FloatField("packets/s", default=0, editable=False)
    kernel_drops = models.BigIntegerField(
        default=0, editable=False, help_text="Packets the kernel dropped since the sniffer started."
    )
    live_calls = models.PositiveIntegerField(default=0, editable=False)
    outbox_backlog = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Events captured but not yet applied to the database (the node's outbox).",
    )
    restarts = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Sniffer restarts after a crash, since the worker started.",
    )
    last_error = models.CharField(max_length=500, blank=True, editable=False)
    heartbeat_at = models.DateTimeField("last heartbeat", null=True, blank=True, editable=False)

    # The lease: only the worker named here captures on this interface, until it expires.
    lease_owner = models.CharField(max_length=200, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["node", "interface"]
        constraints = [
            models.UniqueConstraint(
                fields=["node", "interface"],
                name="one_capture_interface_per_node_and_name",
                violation_error_message="This node already captures on this interface.",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="hep") | models.Q(bpf_filter=""),
                name="hep_listener_without_bpf_filter",
                violation_error_message="A HEP listener takes no BPF filter: leave it empty.",
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.HEP:
            return f"HEP {self.interface} on {self.node}"
        return f"{self.interface} on {self.node}"

    def clean(self) -> None:
        """The interface field read as its kind says: a name, or a HEP address."""
        validate = validate_hep_address if self.kind == self.Kind.HEP else validate_interface_name
        try:
            validate(self.interface)
        except ValidationError as error:
            raise ValidationError({"interface": error}) from None


class OutboxCursor(models.Model):
    """How far the events of one outbox run (one sniffer process's life) are applied.

    Every event task locks its run's cursor, applies its event only if it is the next one,
    and moves the cursor in the same transaction: a duplicate is skipped, an early one waits
    its turn, so events take effect exactly once and in the order they were captured.
    """

    run = models.CharField(max_length=200, unique=True, help_text="node:interface:run id")
    applied_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.run} at {self.applied_seq}"


class PendingFinalisation(models.Model):
    """A call whose audio is spooled on a node and not yet a Recording.

    Written in the transaction that ends the call, so a finalise task lost with the broker
    is enqueued again by the node's worker until the recording exists.
    """

    class Reason(models.TextChoices):
        ENDED = "ended", "the call ended"
        CAPTURE_STOPPED = "capture-stopped", "the capture stopped during the call"
        CAPTURE_CRASHED = "capture-crashed", "the capture process stopped during the call"
        STALE = "stale", "no capture followed the call any more"

    call = models.OneToOneField(Call, on_delete=models.CASCADE, related_name="+")
    node = models.CharField(max_length=100, db_index=True)
    spool = models.CharField(max_length=500, help_text="The call's spool folder on the node.")
    local_side = models.CharField(max_length=8, blank=True)
    reason = models.CharField(max_length=16, choices=Reason, default=Reason.ENDED)
    created_at = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.call} on {self.node}"

    @property
    def partial(self) -> bool:
        return self.reason != self.Reason.ENDED


class HeldEvent(models.Model):
    """An event that reached the database before the one it follows (several workers or
    threads take a node's events at once, or the broker redelivered out of order): kept
    here until its turn, then applied and deleted (recorder/tasks.py apply_in_order)."""

    run = models.CharField(max_length=200)
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=16)
    event = models.JSONField()
    node = models.CharField(max_length=100)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="one_held_event_per_run_and_seq")
        ]

    def __str__(self) -> str:
        return f"{self.run} event {self.seq}"


class ParkedEvent(models.Model):
    """An event the database would not take, kept with its reason (a dead letter).

    One event that fails (a value no column holds, a bug) is rolled back alone and parked
    here, so every other event of its batch is stored and nobody has to read a log to
    learn that a call, a binding or a spool was not stored. Its fields are kept cleaned
    (integrations/bounds.py), so the row itself always stores.
    """

    class Kind(models.TextChoices):
        BINDING = "binding", "a binding"
        CALL = "call", "a call"
        SIGNALLING = "signalling", "encrypted signalling"
        SPOOL = "spool", "a spool left by an earlier run"
        OTHER = "other", "another event"

    kind = models.CharField(max_length=16, choices=Kind)
    subject = models.CharField(
        max_length=255, blank=True, help_text="The call id, the extension or the spool's folder."
    )
    reason = models.CharField(max_length=500, help_text="Why it could not be stored.")
    event = models.JSONField(default=dict, help_text="The event's fields, as far as they store.")
    node = models.CharField(max_length=100, blank=True)
    parked_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-parked_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.subject}: {self.reason}"


class CaptureAlert(models.Model):
    """A limit that tripped on a node: how often, since when, and what it means.

    Caps protect capture from floods (unanswered calls, new numbers, junk RTP, spools with
    no free file handle); each cap that trips is counted here, per node and kind, and shown
    in the admin and in the capture commands' stats lines.
    """

    node = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=64)
    message = models.CharField(max_length=500)
    count = models.BigIntegerField(default=0)
    first_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-last_at"]
        constraints = [
            models.UniqueConstraint(fields=["node", "kind"], name="one_capture_alert_per_node_kind")
        ]

    def __str__(self) -> str:
        return f"{self.kind} on {self.node or 'this host'}: {self.count}"
