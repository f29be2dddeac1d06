"""TAPI bridges QMS polls, what each poll left behind, and the ShoreTel calls they report."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from integrations.observations import CallProtocol, Side
from recorder.models import Call, Recording

SIDES = [(side.value, side.value) for side in Side]
# The call id a recording takes from the TAPI call it is tied to begins with this.
TAPI_CALL_PREFIX = f"{CallProtocol.TAPI}:"


class TapiBridge(models.Model):
    """A bridge beside ShoreTel's TAPI service provider (docs/tapi-bridge.md)."""

    name = models.SlugField(
        max_length=50,
        unique=True,
        help_text="A short name for this ShoreTel system; recordings tied to its calls get "
        "the call id tapi:<name>:<ShoreTel call id>.",
    )
    url = models.URLField(
        "URL",
        help_text="Where the bridge listens, e.g. https://shoretel-hq.example.com:8443/. "
        "QMS adds v1/lines and v1/events to it.",
    )
    token = models.CharField(
        max_length=200,
        help_text="The bearer token the bridge was configured with.",
    )
    enabled = models.BooleanField(default=True, help_text="Poll this bridge.")
    poll_seconds = models.PositiveIntegerField(
        "poll every (seconds)",
        null=True,
        blank=True,
        help_text="Seconds between polls; empty for QMS_TAPI_POLL_SECONDS. Polls cannot be "
        "more frequent than celery beat runs the poll task.",
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "TAPI bridge"

    def __str__(self) -> str:
        return self.name


class TapiBridgeState(models.Model):
    """What the poller knows of a bridge. Written by the poller alone, so that saving
    the bridge's settings in the admin never winds its cursor back."""

    bridge = models.OneToOneField(
        TapiBridge, primary_key=True, on_delete=models.CASCADE, related_name="state"
    )
    boot_id = models.CharField(
        "boot id",
        max_length=100,
        blank=True,
        help_text="The bridge's boot id when last read; a new one means it restarted.",
    )
    cursor = models.CharField(
        max_length=200, blank=True, help_text="Where in the event feed the next poll reads."
    )
    lines = models.JSONField(
        default=list,
        blank=True,
        help_text="The (extension, IP) pairs of the last line list, to notice lines that go.",
    )
    lines_read_at = models.DateTimeField("lines read", null=True, blank=True)
    last_poll_at = models.DateTimeField("last poll", null=True, blank=True)
    last_success_at = models.DateTimeField("last success", null=True, blank=True)
    last_error_at = models.DateTimeField("last error", null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_kind = models.CharField(
        max_length=20,
        blank=True,
        help_text="down, timeout, refused, redirect, http-500, bad-response, cursor-gone, "
        "or internal-error (QMS could not handle the answer; the log has the details).",
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_latency_ms = models.PositiveIntegerField("last latency (ms)", null=True, blank=True)
    clock_offset_seconds = models.FloatField(
        "clock offset (s)",
        null=True,
        blank=True,
        help_text="How far the bridge's clock is ahead of QMS's (negative: behind), as last "
        "measured. Offsets of a second or more are taken off the times it reports.",
    )
    next_poll_at = models.DateTimeField(
        "next poll",
        null=True,
        blank=True,
        help_text="After failures, polls back off, up to five minutes apart.",
    )
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="A poll in progress holds the bridge until then."
    )
    events_applied = models.PositiveBigIntegerField(default=0)
    duplicates_skipped = models.PositiveBigIntegerField(default=0)
    events_rejected = models.PositiveBigIntegerField(
        default=0, help_text="Events the bridge sent malformed; each was logged."
    )
    restarts_seen = models.PositiveIntegerField(default=0)
    new_extensions_held = models.PositiveBigIntegerField(
        "new extensions held back",
        default=0,
        help_text="Bindings of extensions QMS had never seen that were not applied because "
        "the poll had already learned its cap of new extensions; a real line is learned "
        "from a later poll or line list.",
    )

    class Meta:
        verbose_name = "TAPI bridge state"

    def __str__(self) -> str:
        return f"state of {self.bridge}"


class TapiEvent(models.Model):
    """One event of a bridge's feed, kept so that a duplicate is recognised by its id."""

    bridge = models.ForeignKey(TapiBridge, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField("event id", max_length=200)
    boot_id = models.CharField("boot id", max_length=100)
    at = models.DateTimeField(help_text="When it happened, on QMS's clock.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=20)
    state = models.CharField(max_length=32, blank=True, help_text="TAPI's word for it.")
    extension = models.CharField(max_length=128, blank=True)
    call_id = models.CharField("call id", max_length=200, blank=True)
    payload = models.JSONField(default=dict, help_text="The event as the bridge sent it.")

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "TAPI event"
        constraints = [
            models.UniqueConstraint(fields=["bridge", "event_id"], name="one_row_per_tapi_event")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.state} {self.extension} ({self.event_id})"


class TapiCall(models.Model):
    """A ShoreTel call as the TAPI line of one extension saw it."""

    bridge = models.ForeignKey(TapiBridge, on_delete=models.CASCADE, related_name="calls")
    call_id = models.CharField("call id", max_length=200, help_text="ShoreTel's call id.")
    extension = models.CharField(
        max_length=128, help_text="The monitored line's extension, as ShoreTel writes it."
    )
    phone_ip = models.GenericIPAddressField(
        "phone IP",
        null=True,
        blank=True,
        help_text="The phone the call was on: from the bridge, else the extension's binding.",
    )
    local_side = models.CharField(max_length=8, choices=SIDES)
    direction = models.CharField(max_length=10, choices=Call.Direction, blank=True)
    origin = models.CharField(max_length=16, blank=True, help_text="LINECALLORIGIN, as sent.")
    caller = models.CharField(max_length=128, blank=True)
    caller_name = models.CharField(max_length=128, blank=True)
    callee = models.CharField(max_length=128, blank=True)
    callee_name = models.CharField(max_length=128, blank=True)
    state = models.CharField(max_length=32, help_text="The latest TAPI call state.")
    started_at = models.DateTimeField()
    connected_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField()

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "TAPI call"
        constraints = [
            models.UniqueConstraint(fields=["bridge", "call_id"], name="one_row_per_tapi_call")
        ]
        indexes = [
            models.Index(
                fields=["phone_ip", "connected_at"],
                condition=Q(connected_at__isnull=False),
                name="tapi_call_media",
            )
        ]

    def __str__(self) -> str:
        return f"{self.caller or '?'} → {self.callee or '?'} ({self.bridge}:{self.call_id})"

    @property
    def qms_call_id(self) -> str:
        return f"{TAPI_CALL_PREFIX}{self.bridge.name}:{self.call_id}"

    @property
    def far_party(self) -> tuple[str, str]:
        if self.local_side == Side.CALLER:
            return self.callee, self.callee_name
        return self.caller, self.caller_name


class TapiRecording(models.Model):
    """An unsignalled recording of a ShoreTel phone, tied to the TAPI call it was."""

    recording = models.OneToOneField(Recording, on_delete=models.CASCADE, related_name="tapi_link")
    tapi_call = models.ForeignKey(TapiCall, on_delete=models.CASCADE, related_name="recordings")
    overlap_seconds = models.FloatField(
        help_text="How long the recording's RTP and the call's connected time overlap."
    )
    linked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "recording of a TAPI call"
        verbose_name_plural = "recordings of TAPI calls"

    def __str__(self) -> str:
        return f"recording {self.recording_id} is {self.tapi_call}"
