from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from extensions.api import (
    AgentViewSet,
    BindingViewSet,
    ExtensionViewSet,
    LineAppearanceViewSet,
    PhoneViewSet,
    TeamViewSet,
)
from qms.api import docs_view, schema_view
from recorder.api import AuditEntryViewSet, RecordingViewSet

router = DefaultRouter()
router.register("recordings", RecordingViewSet, basename="recording")
router.register("agents", AgentViewSet, basename="agent")
router.register("teams", TeamViewSet, basename="team")
router.register("extensions", ExtensionViewSet, basename="extension")
router.register("phones", PhoneViewSet, basename="phone")
router.register("line-appearances", LineAppearanceViewSet, basename="lineappearance")
router.register("bindings", BindingViewSet, basename="binding")
router.register("audit", AuditEntryViewSet, basename="auditentry")

urlpatterns = [
    path("schema/", schema_view, name="api-schema"),
    path("docs/", docs_view, name="api-docs"),
    # The audio answers without the trailing slash too, as clients and players expect. It is
    # the same operation as .../audio/, so the schema lists it once.
    path(
        "recordings/<int:pk>/audio",
        RecordingViewSet.as_view({"get": "audio"}, schema=None),
        name="recording-audio-bare",
    ),
    *router.urls,
]
