"""Calls, recordings and the audit trail in the admin: read-only, written by QMS alone.

Calls and recordings are scoped by recorder/playback/access.py like everywhere else; a list of
calls or recordings shown is a search, audited with its filters, and a call's or a
recording's own page (or its history) is a view of its metadata, audited as such.
"""

from __future__ import annotations

import csv
import json

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from qms.lib.admin import ReadOnlyAdmin
from qms.lib.spreadsheet import spreadsheet_safe
from recorder.models import (
    USED_FORM_MESSAGE,
    AuditEntry,
    Call,
    EvaluationForm,
    Flag,
    FormSection,
    Question,
    Recording,
)
from recorder.playback.access import calls_visible_to, recordings_visible_to
from recorder.playback.audit import audit, audit_call_view
from recorder.playback.audited_admin import AuditedLooks


class AuditedLooksAdmin(AuditedLooks, ReadOnlyAdmin):
    """Read-only, and every look audited (recorder/playback/audited_admin.py)."""


@admin.register(Call)
class CallAdmin(AuditedLooksAdmin):
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
        "node",
    ]
    # The capture node that saw the call: with several nodes, whose calls are whose.
    list_filter = ["protocol", "direction", "state", "node"]
    search_fields = ["call_id", "caller", "callee", "extension", "agent__name"]
    date_hierarchy = "started_at"
    list_select_related = ["agent"]
    audit_listing = "calls"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return calls_visible_to(request.user, super().get_queryset(request))

    def audit_look(self, request: HttpRequest, call: Call) -> None:
        audit_call_view(request, call)


@admin.register(Recording)
class RecordingAdmin(AuditedLooksAdmin):
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

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return recordings_visible_to(request.user, super().get_queryset(request))

    def audit_look(self, request: HttpRequest, recording: Recording) -> None:
        audit(request, AuditEntry.Action.VIEW, recording)

    @admin.display(description="duration")
    def duration(self, recording: Recording) -> str:
        minutes, seconds = divmod(round(recording.duration_seconds), 60)
        return f"{minutes}:{seconds:02d}"

    @admin.display(description="audio")
    def listen(self, recording: Recording) -> str:
        if not recording.file or recording.audio_format == "rtp":
            return ""
        url = reverse("recorder:audio", args=[recording.pk])
        return format_html('<audio controls preload="none" src="{}"></audio>', url)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Searchable and exportable, never editable: not even a superuser may add, change or
    delete an entry here (ReadOnlyAdmin), and the model and database refuse it anyway."""

    list_display = ["at", "username", "action", "recording_id", "client_ip", "detail"]
    list_filter = ["action"]
    search_fields = ["username", "client_ip", "recording__call_id", "recording__extension"]
    date_hierarchy = "at"
    actions = ["export_csv"]

    @admin.action(description="Export the selected entries as CSV")
    def export_csv(self, request: HttpRequest, entries: QuerySet) -> HttpResponse:
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="qms-audit-{stamp}.csv"'
        writer = csv.writer(response)
        writer.writerow(["at", "user", "action", "recording", "client_ip", "detail"])
        for entry in entries.order_by("at", "pk").iterator():
            writer.writerow([spreadsheet_safe(cell) for cell in csv_row(entry)])
        return response


def csv_row(entry: AuditEntry) -> list[str]:
    return [
        entry.at.isoformat(),
        entry.username,
        entry.action,
        str(entry.recording_id or ""),
        entry.client_ip or "",
        json.dumps(entry.detail, sort_keys=True),
    ]


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    """The flags supervisors may put on recordings. Retire one (active off) rather than
    delete it: a flag on recordings cannot be deleted."""

    list_display = ["name", "description", "active"]
    list_filter = ["active"]
    search_fields = ["name"]


class FormPartInline(admin.TabularInline):
    """A form's sections, or a section's questions: fixed once the form is in use."""

    extra = 1

    def form_of(self, parent: Model | None) -> EvaluationForm | None:
        """The form the inline's parent belongs to (each inline below says how)."""
        raise NotImplementedError

    def is_locked(self, parent: Model | None) -> bool:
        form = self.form_of(parent)
        return form is not None and form.is_used()

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return not self.is_locked(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return not self.is_locked(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return not self.is_locked(obj) and super().has_delete_permission(request, obj)


class FormSectionInline(FormPartInline):
    model = FormSection
    fields = ["order", "title"]
    show_change_link = True  # its questions are on the section's own page

    def form_of(self, parent: Model | None) -> EvaluationForm | None:
        return parent


class QuestionInline(FormPartInline):
    model = Question
    fields = ["order", "text", "kind", "scale_max", "weight", "allows_na", "fail_all"]

    def form_of(self, parent: Model | None) -> EvaluationForm | None:
        return parent.form if parent is not None else None


def warn_if_used(request: HttpRequest, form: EvaluationForm | None) -> None:
    if form is not None and form.is_used() and request.method == "GET":
        messages.warning(request, USED_FORM_MESSAGE)


@admin.register(EvaluationForm)
class EvaluationFormAdmin(admin.ModelAdmin):
    """The forms supervisors score recordings with: sections here, each section's questions
    on its own page. A form in use keeps its questions; "Make a new version" copies it."""

    list_display = ["name", "version", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["name"]
    readonly_fields = ["version", "created_at"]
    inlines = [FormSectionInline]
    actions = ["make_new_version"]

    def change_view(self, request: HttpRequest, object_id: str, *args, **kwargs) -> HttpResponse:
        warn_if_used(request, self.get_object(request, object_id))
        return super().change_view(request, object_id, *args, **kwargs)

    @admin.action(description="Make a new version of the selected forms (to change them)",
                  permissions=["add"])  # fmt: skip
    def make_new_version(self, request: HttpRequest, forms: QuerySet) -> None:
        for form in forms:
            copy = form.new_version()
            self.message_user(request, f"{copy} made; {form} is retired.", messages.SUCCESS)


@admin.register(FormSection)
class FormSectionAdmin(admin.ModelAdmin):
    """A section of a form, with its questions."""

    list_display = ["title", "form", "order"]
    list_filter = ["form"]
    inlines = [QuestionInline]

    def change_view(self, request: HttpRequest, object_id: str, *args, **kwargs) -> HttpResponse:
        section = self.get_object(request, object_id)
        warn_if_used(request, section.form if section is not None else None)
        return super().change_view(request, object_id, *args, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        used = obj is not None and obj.form.is_used()
        return not used and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        used = obj is not None and obj.form.is_used()
        return not used and super().has_delete_permission(request, obj)
