"""Capture interfaces in the admin: configured by people, their live state by the workers."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from qms.lib.admin import ClearableReadOnlyAdmin, ReadOnlyAdmin
from recorder.nodes.models import (
    CaptureAlert,
    CaptureInterface,
    ParkedEvent,
    PendingFinalisation,
)
from recorder.playback.audited_admin import AuditedClears, AuditedLooks

LIVE_STATE = [
    "running",
    "running_since",
    "packets_per_second",
    "kernel_drops",
    "live_calls",
    "outbox_backlog",
    "restarts",
    "last_error",
    "heartbeat_at",
    "lease_owner",
    "lease_expires_at",
]


@admin.register(CaptureInterface)
class CaptureInterfaceAdmin(admin.ModelAdmin):
    list_display = [
        "interface",
        "kind",
        "node",
        "enabled",
        "is_capturing",
        "running_since",
        "packets_per_second",
        "kernel_drops",
        "live_calls",
        "outbox_backlog",
        "heartbeat_at",
    ]
    list_filter = ["node", "kind", "enabled", "running"]
    search_fields = ["node", "interface"]
    fieldsets = [
        (None, {"fields": ["node", "kind", "interface", "bpf_filter", "enabled"]}),
        ("Live state (written by the node's worker)", {"fields": LIVE_STATE}),
    ]
    readonly_fields = LIVE_STATE

    @admin.display(boolean=True, description="capturing")
    def is_capturing(self, interface: CaptureInterface) -> bool:
        """Running by the last heartbeat, and that heartbeat recent enough to believe."""
        if not interface.running or interface.heartbeat_at is None:
            return False
        age = timezone.now() - interface.heartbeat_at
        return age <= timedelta(seconds=settings.QMS_CAPTURE_LEASE_SECONDS)


@admin.register(PendingFinalisation)
class PendingFinalisationAdmin(ReadOnlyAdmin):
    list_display = ["call", "node", "reason", "created_at", "enqueued_at"]
    list_filter = ["node", "reason"]


@admin.register(ParkedEvent)
class ParkedEventAdmin(AuditedLooks, AuditedClears, ClearableReadOnlyAdmin):
    """Events the database would not take, with their reason: each one is a call, a
    binding or a spool that QMS did not store and that someone should look at. They hold
    the event's numbers and names as the wire gave them: each look is audited, and so is
    clearing them."""

    audit_listing = "parked events"
    audit_key = "parked_event"
    audit_cleared = "parked events"

    list_display = ["parked_at", "kind", "subject", "reason", "node"]
    list_filter = ["kind", "node"]
    search_fields = ["subject", "reason"]
    date_hierarchy = "parked_at"


@admin.register(CaptureAlert)
class CaptureAlertAdmin(ClearableReadOnlyAdmin):
    """Caps that tripped on the wire (floods of calls or numbers, junk RTP, spools that
    could not open), per node: the capture went on, but something was not recorded."""

    list_display = ["kind", "node", "count", "first_at", "last_at", "message"]
    list_filter = ["node", "kind"]
