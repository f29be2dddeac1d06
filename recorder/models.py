"""Calls as the signalling described them. Recordings (the audio) build on these."""

from __future__ import annotations

from django.db import models

from extensions.models import Agent, Phone


class Call(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "inbound", "inbound"
        OUTBOUND = "outbound", "outbound"
        INTERNAL = "internal", "internal"
        UNKNOWN = "", "unknown"

    class State(models.TextChoices):
        SETUP = "setup", "setting up"
        RINGING = "ringing", "ringing"
        CONNECTED = "connected", "connected"
        HELD = "held", "on hold"
        ENDED = "ended", "ended"

    protocol = models.CharField(max_length=8, help_text="sip, sccp, lync or tapi.")
    call_id = models.CharField(
        "call id",
        max_length=255,
        help_text="The SIP Call-ID, or sccp:<device>:<call reference>.",
    )
    started_at = models.DateTimeField(db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=10, choices=State, default=State.SETUP)
    direction = models.CharField(max_length=10, choices=Direction, blank=True)
    caller = models.CharField(max_length=128, blank=True)
    caller_name = models.CharField(max_length=128, blank=True)
    callee = models.CharField(max_length=128, blank=True)
    callee_name = models.CharField(max_length=128, blank=True)
    caller_ip = models.GenericIPAddressField("caller IP", null=True, blank=True)
    callee_ip = models.GenericIPAddressField("callee IP", null=True, blank=True)
    extension = models.CharField(
        max_length=128, blank=True, help_text="The recorded phone's extension, as on the wire."
    )
    phone = models.ForeignKey(Phone, null=True, blank=True, on_delete=models.SET_NULL)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL)
    media = models.JSONField(
        default=list,
        blank=True,
        help_text="Media endpoints announced: side, address, port, payload types, mode.",
    )
    node = models.CharField(max_length=100, blank=True, help_text="The capture node.")

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["protocol", "call_id", "started_at"], name="one_row_per_call"
            )
        ]
        indexes = [models.Index(fields=["extension", "started_at"])]

    def __str__(self) -> str:
        return f"{self.caller or '?'} → {self.callee or '?'} ({self.call_id})"

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()
