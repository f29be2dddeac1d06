"""TAPI bridges in the admin: their settings, and, read-only, how their polls are going."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from integrations.shoretel.models import (
    TapiBridge,
    TapiBridgeState,
    TapiCall,
    TapiEvent,
    TapiRecording,
)
from integrations.shoretel.poller import poll_bridge
from qms.lib.admin import ReadOnlyAdmin
from recorder.admin import AuditedLooksAdmin

STATE_FIELDS = [
    "health",
    "last_success",
    "consecutive_failures",
    "last_error",
    "last_error_at",
    "last_latency_ms",
    "clock_offset",
    "boot_id",
    "cursor",
    "lines_read_at",
    "next_poll_at",
    "events_applied",
    "duplicates_skipped",
    "events_rejected",
    "new_extensions_held",
    "restarts_seen",
]


class TapiBridgeForm(forms.ModelForm):
    """The token is never shown again once saved; leaving it empty keeps it."""

    url = forms.URLField(
        label="URL",
        assume_scheme="https",
        help_text=TapiBridge._meta.get_field("url").help_text,
    )
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The bearer token the bridge was configured with. Leave empty to keep "
        "the current one.",
    )

    class Meta:
        model = TapiBridge
        fields = ["name", "url", "token", "enabled", "poll_seconds"]

    def clean_token(self) -> str:
        token = self.cleaned_data["token"]
        if token:
            return token
        if self.instance.pk and self.instance.token:
            return self.instance.token
        raise forms.ValidationError("A new bridge needs its token.")


def state(bridge: TapiBridge) -> TapiBridgeState | None:
    try:
        return bridge.state
    except TapiBridgeState.DoesNotExist:
        return None


def state_display(name: str) -> Callable[[admin.ModelAdmin, TapiBridge], object]:
    """An admin column showing one field of the bridge's state row."""

    @admin.display(description=TapiBridgeState._meta.get_field(name).verbose_name)
    def read(model_admin: admin.ModelAdmin, bridge: TapiBridge) -> object:
        found = state(bridge)
        return getattr(found, name) if found is not None else None

    return read


@admin.register(TapiBridge)
class TapiBridgeAdmin(admin.ModelAdmin):
    form = TapiBridgeForm
    list_display = [
        "name",
        "url",
        "enabled",
        "health",
        "last_success",
        "consecutive_failures",
        "clock_offset",
        "last_latency_ms",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "url"]
    readonly_fields = STATE_FIELDS
    fieldsets = [
        (None, {"fields": ["name", "url", "token", "enabled", "poll_seconds"]}),
        ("State (written by the poller)", {"fields": STATE_FIELDS}),
    ]
    actions = ["poll_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("state")

    @admin.display(description="health")
    def health(self, bridge: TapiBridge) -> str:
        found = state(bridge)
        if not bridge.enabled:
            return "disabled"
        if found is None or found.last_poll_at is None:
            return "never polled"
        if found.consecutive_failures:
            return format_html(
                '<span style="color:#b00">failing ({}): {}</span>',
                found.last_error_kind,
                found.last_error,
            )
        return "ok"

    @admin.display(description="last success")
    def last_success(self, bridge: TapiBridge) -> object:
        found = state(bridge)
        return found.last_success_at if found else None

    @admin.display(description="failures in a row")
    def consecutive_failures(self, bridge: TapiBridge) -> int | None:
        found = state(bridge)
        return found.consecutive_failures if found else None

    @admin.display(description="clock offset")
    def clock_offset(self, bridge: TapiBridge) -> str:
        found = state(bridge)
        if found is None or found.clock_offset_seconds is None:
            return "-"
        offset = found.clock_offset_seconds
        return f"{abs(offset):.1f} s {'ahead' if offset > 0 else 'behind'}" if offset else "0 s"

    @admin.action(description="Poll the selected bridges now")
    def poll_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for bridge in queryset:
            report = poll_bridge(bridge, timezone.now())
            level = messages.SUCCESS if report.outcome == "ok" else messages.WARNING
            self.message_user(
                request,
                f"{bridge}: {report.outcome}, {report.events} new events "
                f"({report.duplicates} duplicates), {report.bindings} bindings, "
                f"{report.calls} call events, {report.linked} recordings tied",
                level,
            )

    last_error = state_display("last_error")
    last_error_at = state_display("last_error_at")
    last_latency_ms = state_display("last_latency_ms")
    boot_id = state_display("boot_id")
    cursor = state_display("cursor")
    lines_read_at = state_display("lines_read_at")
    next_poll_at = state_display("next_poll_at")
    events_applied = state_display("events_applied")
    duplicates_skipped = state_display("duplicates_skipped")
    events_rejected = state_display("events_rejected")
    new_extensions_held = state_display("new_extensions_held")
    restarts_seen = state_display("restarts_seen")


@admin.register(TapiCall)
class TapiCallAdmin(AuditedLooksAdmin):
    """TAPI calls say who called whom and when: each look is an audit entry."""

    audit_listing = "tapi calls"
    audit_key = "tapi_call"
    list_display = [
        "call_id",
        "bridge",
        "extension",
        "phone_ip",
        "direction",
        "caller",
        "callee",
        "connected_at",
        "ended_at",
        "state",
        "recording_count",
    ]
    list_filter = ["bridge", "direction", "state"]
    search_fields = ["call_id", "extension", "caller", "callee", "phone_ip"]
    date_hierarchy = "started_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("bridge")

    @admin.display(description="recordings")
    def recording_count(self, call: TapiCall) -> int:
        return call.recordings.count()


@admin.register(TapiEvent)
class TapiEventAdmin(AuditedLooksAdmin):
    """The bridge's events name the extensions and calls they are about: audited too."""

    audit_listing = "tapi events"
    audit_key = "tapi_event"
    list_display = ["at", "bridge", "kind", "state", "extension", "call_id", "event_id"]
    list_filter = ["bridge", "kind", "state"]
    search_fields = ["event_id", "extension", "call_id"]
    date_hierarchy = "at"


@admin.register(TapiRecording)
class TapiRecordingAdmin(ReadOnlyAdmin):
    list_display = ["recording", "tapi_call", "overlap_seconds", "linked_at"]
    list_select_related = ["recording", "tapi_call__bridge"]
