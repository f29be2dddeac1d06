"""REST access to the directory, scoped like the recordings (recorder/playback/access.py).

A supervisor reads the teams they supervise, those teams' agents and what belongs to the
agents (extensions, the phones and lines they appear on, their observed bindings); an agent,
when QMS_AGENTS_HEAR_OWN is on, their own; telephony admins (a write permission on the
model: add, change or delete) and those who see every recording read everything; anyone
else reads empty lists. The view permission alone grants no rows (docs/playback.md, "Roles"). A row
outside one's scope answers 404, as a missing one. Writes go through the same rules as the
admin (extensions/services.py).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as ModelValidationError
from django.db.models import Prefetch, Q, QuerySet
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.exceptions import ValidationError

from extensions.access import (
    agents_visible_to,
    bindings_visible_to,
    extensions_visible_to,
    line_appearances_visible_to,
    phones_visible_to,
    teams_visible_to,
)
from extensions.models import Agent, Binding, Extension, LineAppearance, Phone, Team
from extensions.services import assign_line
from extensions.validators import validate_extension_number
from qms.lib.api import BOOLEAN, STRING
from qms.lib.query import CheckedQuery, by_id_or_name, ip_address


class DirectoryViewSet(CheckedQuery, viewsets.GenericViewSet):
    """Reading needs a login, and shows the rows recorder/playback/access.py lets one see; writing
    needs the model's add, change or delete permission (DjangoModelPermissions)."""

    permission_classes = [permissions.DjangoModelPermissions]
    query_parameters: tuple[tuple[str, dict, str], ...] = ()

    def visible(self, rows: QuerySet) -> QuerySet:
        """The rows the request's user may see; each endpoint names its rule."""
        raise NotImplementedError(f"{type(self).__name__} must say which rows are visible")

    def get_queryset(self) -> QuerySet:
        rows = self.visible(super().get_queryset())
        return self.filtered(rows, self.request.query_params)

    def filtered(self, rows: QuerySet, query: dict) -> QuerySet:
        return rows


# Line appearances ---------------------------------------------------------------------------


class LineAppearanceSerializer(serializers.ModelSerializer):
    phone = serializers.SlugRelatedField(slug_field="device_name", queryset=Phone.objects.all())
    extension = serializers.CharField(
        source="extension.number", max_length=64, trim_whitespace=False
    )

    class Meta:
        model = LineAppearance
        fields = ["id", "phone", "line_number", "extension"]
        # assign_line applies every rule with the admin's messages, which name the phone;
        # DRF's generated unique-together check would answer first with a generic sentence.
        validators = []

    def validate_extension(self, number: str) -> str:
        try:
            validate_extension_number(number)
        except ModelValidationError as error:
            raise ValidationError(error.messages) from None
        return number

    def create(self, validated_data: dict) -> LineAppearance:
        number = validated_data["extension"]["number"]
        try:
            return assign_line(validated_data["phone"], validated_data["line_number"], number)
        except ModelValidationError as error:
            raise ValidationError({"detail": error.messages}) from None


class LineAppearanceViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    DirectoryViewSet,
):
    """Lines of phones: line N of phone P rings for extension E. Creating one applies rules
    R1-R4 with the admin's messages (a second line 1 for an extension is refused, naming
    the phone that has it). Filters: phone (device name), extension (exact, R4)."""

    queryset = LineAppearance.objects.select_related("phone", "extension").order_by("pk")
    serializer_class = LineAppearanceSerializer
    query_parameters = (
        ("phone", STRING, "The phone's device name."),
        ("extension", STRING, "The extension, exactly as the PBX writes it (rule R4)."),
    )

    def visible(self, rows: QuerySet) -> QuerySet:
        return line_appearances_visible_to(self.request.user, rows)

    def filtered(self, rows: QuerySet, query: dict) -> QuerySet:
        if "phone" in query:
            rows = rows.filter(phone__device_name=query["phone"])
        if "extension" in query:
            rows = rows.filter(extension__number=query["extension"])
        return rows


# Bindings ----------------------------------------------------------------------------------


class BindingSerializer(serializers.ModelSerializer):
    extension = serializers.CharField(source="extension_number")
    phone = serializers.SlugRelatedField(slug_field="device_name", read_only=True)
    line = serializers.IntegerField(source="line_number")
    active = serializers.BooleanField()

    class Meta:
        model = Binding
        fields = [
            "id",
            "extension",
            "ip",
            "source",
            "phone",
            "line",
            "first_seen",
            "last_seen",
            "expires_at",
            "ended_at",
            "end_reason",
            "active",
        ]


class BindingViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DirectoryViewSet):
    """Observed ext/IP bindings, newest first. Filters: extension (exact, R4), ip, active."""

    serializer_class = BindingSerializer
    queryset = Binding.objects.select_related("phone").order_by("-last_seen", "-pk")
    query_parameters = (
        ("extension", STRING, "The extension as the call system sent it (rule R4)."),
        ("ip", STRING, "The phone's IP address."),
        ("active", BOOLEAN, "true: open bindings only; false: ended ones only."),
    )

    def visible(self, rows: QuerySet) -> QuerySet:
        return bindings_visible_to(self.request.user, rows)

    def filtered(self, rows: QuerySet, query: dict) -> QuerySet:
        if "extension" in query:
            rows = rows.filter(extension_number=query["extension"])
        if "ip" in query:
            rows = rows.filter(ip=ip_address("ip", query["ip"]))
        if "active" in query:
            active = query["active"].lower() in ("1", "true", "yes")
            rows = rows.filter(ended_at__isnull=active)
        return rows


# Agents and teams ---------------------------------------------------------------------------


class AgentSerializer(serializers.ModelSerializer):
    ip = serializers.IPAddressField(source="current_ip", read_only=True)
    extensions = serializers.SlugRelatedField(slug_field="number", many=True, read_only=True)
    teams = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Agent
        fields = ["id", "name", "ip", "ip_updated_at", "extensions", "teams"]


class AgentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DirectoryViewSet):
    """Agents with the IP of the phone they are on now (rule R7), their extensions and the
    teams of theirs one may see. Filter: team (id or name)."""

    serializer_class = AgentSerializer
    queryset = Agent.objects.prefetch_related("extensions").order_by("name")
    query_parameters = (("team", STRING, "A team's id or name."),)

    def visible(self, rows: QuerySet) -> QuerySet:
        teams = teams_visible_to(self.request.user).order_by("name")
        rows = rows.prefetch_related(Prefetch("teams", queryset=teams))
        return agents_visible_to(self.request.user, rows)

    def filtered(self, rows: QuerySet, query: dict) -> QuerySet:
        if "team" in query:
            rows = rows.filter(**by_id_or_name("teams", query["team"]))
        return rows


class TeamSerializer(serializers.ModelSerializer):
    agents = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Team
        fields = ["id", "name", "retention_days", "agents"]


class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DirectoryViewSet):
    """Teams, with the agents of each that one may see."""

    serializer_class = TeamSerializer
    queryset = Team.objects.order_by("name")

    def visible(self, rows: QuerySet) -> QuerySet:
        agents = agents_visible_to(self.request.user).order_by("name")
        rows = rows.prefetch_related(Prefetch("agents", queryset=agents))
        return teams_visible_to(self.request.user, rows)


# Extensions and phones -----------------------------------------------------------------------


class LineOfExtensionSerializer(serializers.ModelSerializer):
    phone = serializers.SlugRelatedField(slug_field="device_name", read_only=True)

    class Meta:
        model = LineAppearance
        fields = ["phone", "line_number"]


class ExtensionSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    appearances = LineOfExtensionSerializer(many=True, read_only=True)

    class Meta:
        model = Extension
        fields = ["id", "number", "agent", "description", "do_not_record", "appearances"]


class ExtensionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DirectoryViewSet):
    """Configured extensions, exactly as the PBX writes them (rule R4), with their owner and
    the phones they ring on. Filters: number (exact), agent (id or name)."""

    serializer_class = ExtensionSerializer
    queryset = (
        Extension.objects.select_related("agent")
        .prefetch_related(
            Prefetch(
                "appearances",
                queryset=LineAppearance.objects.select_related("phone").order_by(
                    "line_number", "phone__device_name"
                ),
            )
        )
        .order_by("number")
    )
    query_parameters = (
        ("number", STRING, "The extension, exactly as the PBX writes it (rule R4)."),
        ("agent", STRING, "The owner's id or name."),
    )

    def visible(self, rows: QuerySet) -> QuerySet:
        return extensions_visible_to(self.request.user, rows)

    def filtered(self, rows: QuerySet, query: dict) -> QuerySet:
        if "number" in query:
            rows = rows.filter(number=query["number"])
        if "agent" in query:
            rows = rows.filter(**by_id_or_name("agent", query["agent"]))
        return rows


class LineOfPhoneSerializer(serializers.ModelSerializer):
    extension = serializers.SlugRelatedField(slug_field="number", read_only=True)

    class Meta:
        model = LineAppearance
        fields = ["line_number", "extension"]


class PhoneSerializer(serializers.ModelSerializer):
    lines = LineOfPhoneSerializer(many=True, read_only=True)

    class Meta:
        model = Phone
        fields = [
            "id",
            "device_name",
            "protocol",
            "description",
            "current_ip",
            "static_ip",
            "configured_ip",
            "last_heard_at",
            "lines",
        ]


class PhoneViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, DirectoryViewSet):
    """Phones, with the lines of each that one may see. last_heard_at empty: never heard
    since QMS started (rule R8). Filters: protocol, ip (current or configured)."""

    serializer_class = PhoneSerializer
    queryset = Phone.objects.order_by("device_name")
    query_parameters = (
        ("protocol", {"type": "string", "enum": Phone.Protocol.values}, "The call system."),
        ("ip", STRING, "The phone's current or configured IP address."),
    )

    def visible(self, rows: QuerySet) -> QuerySet:
        lines = line_appearances_visible_to(self.request.user).select_related("extension")
        rows = rows.prefetch_related(Prefetch("lines", queryset=lines.order_by("line_number")))
        return phones_visible_to(self.request.user, rows)

    def filtered(self, rows: QuerySet, query: dict) -> QuerySet:
        if "protocol" in query:
            rows = rows.filter(protocol=query["protocol"])
        if "ip" in query:
            ip = ip_address("ip", query["ip"])
            rows = rows.filter(Q(current_ip=ip) | Q(configured_ip=ip))
        return rows
