"""Calls and recordings in the admin: read-only, written by the capture engine alone."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from extensions.admin import ReadOnlyAdmin
from recorder.models import Call, Recording


@admin.register(Call)
class CallAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "protocol",
        "caller",
        "callee",
        "direction",
        "state",
        "end_reason",
        "extension",
        "agent",
    ]
    list_filter = ["protocol", "direction", "state"]
    search_fields = ["call_id", "caller", "callee", "extension", "agent__name"]
    date_hierarchy = "started_at"
    list_select_related = ["agent"]


@admin.register(Recording)
class RecordingAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "extension",
        "agent",
        "remote_party",
        "direction",
        "duration",
        "codec",
        "status",
        "mos_estimate",
        "listen",
    ]
    list_filter = ["status", "direction", "codec"]
    search_fields = ["call_id", "extension", "remote_party", "agent__name"]
    date_hierarchy = "started_at"
    list_select_related = ["agent"]

    @admin.display(description="duration")
    def duration(self, recording: Recording) -> str:
        minutes, seconds = divmod(round(recording.duration_seconds), 60)
        return f"{minutes}:{seconds:02d}"

    @admin.display(description="audio")
    def listen(self, recording: Recording) -> str:
        if not recording.file or recording.audio_format == "rtp":
            return ""
        url = reverse("recording-audio", args=[recording.pk])
        return format_html('<audio controls preload="none" src="{}"></audio>', url)
