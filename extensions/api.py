"""REST access to the directory. Writes go through the same rules as the admin."""

from __future__ import annotations

from django.core.exceptions import ValidationError as ModelValidationError
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.exceptions import ValidationError

from extensions.models import Agent, Binding, LineAppearance, Phone
from extensions.services import assign_line
from extensions.validators import validate_extension_number


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
    viewsets.GenericViewSet,
):
    """Lines of phones. Creating one applies rules R1-R3 with the admin's messages."""

    queryset = LineAppearance.objects.select_related("phone", "extension").order_by("pk")
    serializer_class = LineAppearanceSerializer
    permission_classes = [permissions.DjangoModelPermissions]


class ViewModelPermissions(permissions.DjangoModelPermissions):
    """Reading needs the model's view permission too, not only a login."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


class BindingSerializer(serializers.ModelSerializer):
    extension = serializers.CharField(source="extension_number")
    phone = serializers.SlugRelatedField(slug_field="device_name", read_only=True)
    line = serializers.IntegerField(source="line_number")
    active = serializers.BooleanField()

    class Meta:
        model = Binding
        fields = [
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


class BindingViewSet(viewsets.ReadOnlyModelViewSet):
    """Observed ext/IP bindings, newest first. Filters: extension (exact, R4), ip, active."""

    serializer_class = BindingSerializer
    permission_classes = [ViewModelPermissions]
    queryset = Binding.objects.select_related("phone").order_by("-last_seen", "-pk")

    def get_queryset(self):
        bindings = super().get_queryset()
        query = self.request.query_params
        if "extension" in query:
            bindings = bindings.filter(extension_number=query["extension"])
        if "ip" in query:
            bindings = bindings.filter(ip=query["ip"])
        if "active" in query:
            active = query["active"].lower() in ("1", "true", "yes")
            bindings = bindings.filter(ended_at__isnull=active)
        return bindings


class AgentSerializer(serializers.ModelSerializer):
    ip = serializers.IPAddressField(source="current_ip", read_only=True)
    extensions = serializers.SlugRelatedField(slug_field="number", many=True, read_only=True)
    teams = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = Agent
        fields = ["id", "name", "ip", "ip_updated_at", "extensions", "teams"]


class AgentViewSet(viewsets.ReadOnlyModelViewSet):
    """Agents with the IP of the phone they are on now (rule R7)."""

    serializer_class = AgentSerializer
    permission_classes = [ViewModelPermissions]
    queryset = Agent.objects.prefetch_related("extensions", "teams").order_by("name")
