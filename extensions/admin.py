"""The admin console where a telephony admin keeps the directory."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Field, Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from extensions.access import (
    agents_visible_to,
    binding_conflicts_visible_to,
    bindings_visible_to,
    encrypted_signalling_visible_to,
    extensions_visible_to,
    line_appearances_visible_to,
    phones_visible_to,
    seen_extensions_visible_to,
    teams_visible_to,
)
from extensions.forms import LineAppearanceForm, LineAppearanceFormSet
from extensions.models import (
    Agent,
    Binding,
    BindingConflict,
    CallServer,
    DisputedClaim,
    EncryptedSignalling,
    Extension,
    LineAppearance,
    Phone,
    SeenExtension,
    Team,
)
from extensions.services import save_lines
from extensions.trust import forget_call_servers
from qms.lib.admin import ClearableReadOnlyAdmin, ReadOnlyAdmin


def changelist_link(model: str, label: str, **filters: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    url = reverse(f"admin:extensions_{model}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, query, label)


class VisibleTeamsFilter(admin.RelatedFieldListFilter):
    """The team filter offers only the teams one may see, not every team's name."""

    def field_choices(self, field: Field, request: HttpRequest, model_admin) -> list:
        teams = teams_visible_to(request.user).order_by("name")
        return [(team.pk, str(team)) for team in teams]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "supervisor_names", "agent_count"]
    search_fields = ["name", "agents__name"]
    filter_horizontal = ["supervisors"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        # Every directory list is scoped like the API (recorder/playback/access.py): a supervisor
        # reads their own teams, a telephony admin every team.
        return teams_visible_to(request.user, super().get_queryset(request))

    @admin.display(description="supervisors")
    def supervisor_names(self, team: Team) -> str:
        return ", ".join(user.get_username() for user in team.supervisors.all())

    @admin.display(description="agents")
    def agent_count(self, team: Team) -> int:
        return team.agents.count()


class ExactNumberMixin:
    """Rule R4: an extension is kept exactly as typed, so white space around it is refused
    by the validator rather than stripped by the form field."""

    def formfield_for_dbfield(
        self, db_field: Field, request: HttpRequest, **kwargs: object
    ) -> forms.Field | None:
        if db_field.name == "number":
            kwargs["strip"] = False
        return super().formfield_for_dbfield(db_field, request, **kwargs)


class ExtensionInline(ExactNumberMixin, admin.TabularInline):
    model = Extension
    fields = ["number", "description"]
    extra = 0
    show_change_link = True


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "current_ip", "ip_updated_at", "phone_links"]
    list_filter = [("teams", VisibleTeamsFilter)]
    search_fields = ["name", "extensions__number", "current_ip", "user__username"]
    filter_horizontal = ["teams"]
    readonly_fields = ["current_ip", "ip_updated_at", "phone_links", "binding_history"]
    autocomplete_fields = ["user"]
    inlines = [ExtensionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return agents_visible_to(request.user, super().get_queryset(request))

    @admin.display(description="line-1 phones")
    def phone_links(self, agent: Agent) -> str:
        phones = Phone.objects.filter(lines__line_number=1, lines__extension__agent=agent)
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((phone.get_absolute_url(), phone.device_name) for phone in phones),
        )

    @admin.display(description="bindings")
    def binding_history(self, agent: Agent) -> str:
        return changelist_link(
            "binding", "ext/IP history of this agent", extension__agent__id__exact=agent.pk
        )


class LineAppearanceInline(admin.TabularInline):
    model = LineAppearance
    form = LineAppearanceForm
    formset = LineAppearanceFormSet
    fields = ["line_number", "number"]
    extra = 3
    ordering = ["line_number"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LineAppearance]:
        # A shared phone's other lines belong to other teams' agents.
        return line_appearances_visible_to(request.user, super().get_queryset(request))


@admin.register(Phone)
class PhoneAdmin(admin.ModelAdmin):
    list_display = [
        "device_name",
        "protocol",
        "holder_name",
        "line_numbers",
        "current_ip",
        "static_ip",
        "last_heard_at",
    ]
    list_filter = ["protocol", "static_ip", ("last_heard_at", admin.EmptyFieldListFilter)]
    search_fields = ["device_name", "description", "current_ip", "lines__extension__number"]
    readonly_fields = ["current_ip", "last_heard_at", "binding_history"]
    fields = [
        "device_name",
        "protocol",
        "description",
        ("static_ip", "configured_ip"),
        "current_ip",
        "last_heard_at",
        "binding_history",
    ]
    inlines = [LineAppearanceInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Phone]:
        lines = line_appearances_visible_to(request.user).select_related("extension__agent")
        phones = super().get_queryset(request).prefetch_related(Prefetch("lines", queryset=lines))
        return phones_visible_to(request.user, phones)

    @admin.display(description="agent")
    def holder_name(self, phone: Phone) -> str:
        for line in phone.lines.all():
            if line.line_number == 1 and line.extension.agent:
                return line.extension.agent.name
        return ""

    @admin.display(description="lines")
    def line_numbers(self, phone: Phone) -> str:
        lines = sorted(phone.lines.all(), key=lambda line: line.line_number)
        return ", ".join(f"{line.line_number}: {line.extension.number}" for line in lines)

    @admin.display(description="bindings")
    def binding_history(self, phone: Phone) -> str:
        if phone.pk is None:
            return ""
        return changelist_link("binding", "ext/IP history of this phone", phone__id__exact=phone.pk)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        # The changed lines replace their old rows (deleted first) so that lines can swap
        # places in one save; a race lost to another writer comes back as the rule's message.
        lines = formset.save(commit=False)
        for removed in formset.deleted_objects:
            removed.delete()
        save_lines(lines, replacing=[line for line in lines if line.pk is not None])

    def changeform_view(
        self, request: HttpRequest, object_id=None, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as refusal:
            for message in refusal.messages:
                self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


@admin.register(Extension)
class ExtensionAdmin(ExactNumberMixin, admin.ModelAdmin):
    list_display = ["number", "agent", "appearance_list", "description"]
    search_fields = ["number", "agent__name", "description"]
    autocomplete_fields = ["agent"]
    readonly_fields = ["appearance_list", "binding_history"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Extension]:
        extensions = super().get_queryset(request).prefetch_related("appearances__phone")
        return extensions_visible_to(request.user, extensions)

    @admin.display(description="lines")
    def appearance_list(self, extension: Extension) -> str:
        return format_html_join(
            ", ",
            'line {} on <a href="{}">{}</a>',
            (
                (line.line_number, line.phone.get_absolute_url(), line.phone.device_name)
                for line in extension.appearances.all()
            ),
        )

    @admin.display(description="bindings")
    def binding_history(self, extension: Extension) -> str:
        if extension.pk is None:
            return ""
        return changelist_link(
            "binding", "ext/IP history", extension_number__exact=extension.number
        )


@admin.register(Binding)
class BindingAdmin(ReadOnlyAdmin):
    list_display = [
        "extension_number",
        "ip",
        "source",
        "phone",
        "line_number",
        "first_seen",
        "last_seen",
        "expires_at",
        "ended_at",
        "end_reason",
    ]
    # Filtering by agent also lets the agent page link to its bindings history.
    list_filter = [
        "source",
        ("ended_at", admin.EmptyFieldListFilter),
        "end_reason",
        ("extension__agent", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["extension_number", "ip", "device", "phone__device_name"]
    date_hierarchy = "first_seen"
    list_select_related = ["phone"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Binding]:
        return bindings_visible_to(request.user, super().get_queryset(request))


@admin.register(SeenExtension)
class SeenExtensionAdmin(ReadOnlyAdmin):
    list_display = ["number", "configured", "last_ip", "last_source", "first_seen", "last_seen"]
    search_fields = ["number", "last_ip"]
    list_filter = ["last_source"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SeenExtension]:
        return seen_extensions_visible_to(request.user, super().get_queryset(request))

    @admin.display(boolean=True)
    def configured(self, seen: SeenExtension) -> bool:
        return Extension.objects.filter(number=seen.number).exists()


@admin.register(EncryptedSignalling)
class EncryptedSignallingAdmin(ReadOnlyAdmin):
    list_display = ["ip", "protocol", "first_seen", "last_seen"]
    search_fields = ["ip"]
    list_filter = ["protocol"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EncryptedSignalling]:
        return encrypted_signalling_visible_to(request.user, super().get_queryset(request))


@admin.register(BindingConflict)
class BindingConflictAdmin(admin.ModelAdmin):
    list_display = ["extension_number", "ips", "opened_at", "resolved_at", "resolution"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["extension_number"]
    readonly_fields = [
        "extension_number",
        "extension",
        "first_binding",
        "second_binding",
        "opened_at",
        "resolved_at",
        "resolution",
    ]
    actions = ["mark_resolved"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BindingConflict]:
        return binding_conflicts_visible_to(request.user, super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="IPs")
    def ips(self, conflict: BindingConflict) -> str:
        return f"{conflict.first_binding.ip} and {conflict.second_binding.ip}"

    @admin.action(description="Mark the selected conflicts resolved", permissions=["change"])
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[BindingConflict]) -> None:
        who = request.user.get_username()
        count = queryset.filter(resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolution=f"resolved by {who}"
        )
        self.message_user(request, f"{count} conflict(s) marked resolved.", messages.SUCCESS)


@admin.register(CallServer)
class CallServerAdmin(admin.ModelAdmin):
    """The call system's own addresses: only they vouch for registrations, and their
    calls teach no binding (docs/directory.md, "Trust")."""

    list_display = ["network", "kind", "name", "learned", "first_seen", "last_seen"]
    list_filter = ["kind", "learned"]
    search_fields = ["network", "name"]
    readonly_fields = ["first_seen", "last_seen"]
    actions = ["confirm"]

    @admin.action(description="Confirm the selected learned call servers", permissions=["change"])
    def confirm(self, request: HttpRequest, queryset: QuerySet[CallServer]) -> None:
        confirmed = queryset.filter(learned=True).update(learned=False)
        forget_call_servers()
        self.message_user(request, f"{confirmed} call servers confirmed.", messages.SUCCESS)


@admin.register(DisputedClaim)
class DisputedClaimAdmin(ClearableReadOnlyAdmin):
    """Claims of ext/IP from the wire that QMS did not apply, and why."""

    list_display = [
        "extension_number",
        "ip",
        "source",
        "reason",
        "vouched_by",
        "held_at",
        "count",
        "last_seen",
    ]
    list_filter = ["reason", "source"]
    search_fields = ["extension_number", "ip", "vouched_by"]
