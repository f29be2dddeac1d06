"""REST access to the directory. Writes go through the same rules as the admin."""

from __future__ import annotations

from django.core.exceptions import ValidationError as ModelValidationError
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.exceptions import ValidationError

from extensions.models import LineAppearance, Phone
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
