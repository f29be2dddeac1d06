"""Calls as the signalling described them. Recordings (the audio) build on these."""

from __future__ import annotations

from django.core.files.storage import storages
from django.db import models

from extensions.models import Agent, Phone


def recordings_storage():
    """Where recordings live: settings.STORAGES["recordings"] (filesystem or S3-compatible)."""
    return storages["recordings"]


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
    conversation_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="Shared by the segments of one conversation.",
    )

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


class Recording(models.Model):
    """The audio of one call (or one segment of a conversation), attributed to a person."""

    class Status(models.TextChoices):
        RECORDING = "recording", "recording"
        COMPLETE = "complete", "complete"
        PARTIAL = "partial", "partial"
        NOT_DECODABLE = "not_decodable", "not decodable"
        FAILED = "failed", "failed"

    signalling = models.OneToOneField(
        Call,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="recording",
        help_text="The call as the signalling described it.",
    )
    call_id = models.CharField("call id", max_length=255, db_index=True)
    conversation_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="Shared by the segments of one conversation (transfers, conferences).",
    )
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(default=0)
    direction = models.CharField(max_length=10, choices=Call.Direction, blank=True)
    extension = models.CharField(
        max_length=128, blank=True, help_text="The line's extension, as on the wire."
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="recordings"
    )
    phone = models.ForeignKey(
        Phone, null=True, blank=True, on_delete=models.SET_NULL, related_name="recordings"
    )
    remote_party = models.CharField(max_length=128, blank=True)
    remote_name = models.CharField(max_length=128, blank=True)
    local_ip = models.GenericIPAddressField("local IP", null=True, blank=True)
    remote_ip = models.GenericIPAddressField("remote IP", null=True, blank=True)
    codec = models.CharField(max_length=64, blank=True)
    audio_format = models.CharField("format", max_length=8, default="wav")
    file = models.FileField(max_length=500, blank=True, storage=recordings_storage)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField("SHA-256", max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status, default=Status.RECORDING)
    status_detail = models.CharField(max_length=200, blank=True)
    dtmf = models.JSONField(
        "DTMF", default=list, blank=True, help_text="Digits with their time in the call."
    )
    quality = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per direction: packets expected, received, lost, duplicated, out of "
        "order, and RFC 3550 jitter.",
    )
    mos_estimate = models.FloatField(
        "MOS (estimate)",
        null=True,
        blank=True,
        help_text="Estimated from the ITU-T G.107 E-model; an estimate, not a measurement.",
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["agent", "started_at"]),
            models.Index(fields=["extension", "started_at"]),
            models.Index(fields=["status", "started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.extension or '?'} ↔ {self.remote_party or '?'} at {self.started_at}"
