from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from extensions.api import AgentViewSet, BindingViewSet, LineAppearanceViewSet
from recorder.api import AuditEntryViewSet, RecordingViewSet

router = DefaultRouter()
router.register("line-appearances", LineAppearanceViewSet)
router.register("bindings", BindingViewSet, basename="binding")
router.register("agents", AgentViewSet, basename="agent")
router.register("recordings", RecordingViewSet, basename="recording")
router.register("audit", AuditEntryViewSet, basename="auditentry")

urlpatterns = [
    # The audio answers without the trailing slash too, as clients and players expect.
    path(
        "recordings/<int:pk>/audio",
        RecordingViewSet.as_view({"get": "audio"}),
        name="recording-audio-bare",
    ),
    *router.urls,
]
