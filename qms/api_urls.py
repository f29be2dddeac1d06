from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import DefaultRouter
from rest_framework.urlpatterns import format_suffix_patterns

from extensions.api import (
    AgentViewSet,
    BindingViewSet,
    ExtensionViewSet,
    LineAppearanceViewSet,
    PhoneViewSet,
    TeamViewSet,
)
from qms.lib.api import docs_view, schema_view
from recorder.playback.api import (
    AuditEntryViewSet,
    EvaluationFormViewSet,
    EvaluationViewSet,
    FlagViewSet,
    NoteViewSet,
    RecordingViewSet,
)


class Router(DefaultRouter):
    """DRF's router, with format suffixes (.json, .api) on lists, details and the root only.

    An extra action such as the audio or the waveform answers in its one format; DRF's
    suffixed route would hand it a `format` argument it does not take (a 500), so such a
    URL is simply not one: 404.
    """

    include_format_suffixes = False

    def get_urls(self) -> list[URLPattern | URLResolver]:
        urls = super().get_urls()
        actions = [url for url in urls if is_extra_action(url)]
        return format_suffix_patterns([url for url in urls if not is_extra_action(url)]) + actions


def is_extra_action(url: URLPattern | URLResolver) -> bool:
    view = getattr(url, "callback", None)
    viewset = getattr(view, "cls", None)
    if not hasattr(viewset, "get_extra_actions"):
        return False
    extra = {action.__name__ for action in viewset.get_extra_actions()}
    return not extra.isdisjoint(view.actions.values())


router = Router()
router.register("recordings", RecordingViewSet, basename="recording")
router.register("agents", AgentViewSet, basename="agent")
router.register("teams", TeamViewSet, basename="team")
router.register("extensions", ExtensionViewSet, basename="extension")
router.register("phones", PhoneViewSet, basename="phone")
router.register("line-appearances", LineAppearanceViewSet, basename="lineappearance")
router.register("bindings", BindingViewSet, basename="binding")
router.register("audit", AuditEntryViewSet, basename="auditentry")
router.register("flags", FlagViewSet, basename="flag")
router.register("notes", NoteViewSet, basename="recordingnote")
router.register("evaluation-forms", EvaluationFormViewSet, basename="evaluationform")
router.register("evaluations", EvaluationViewSet, basename="evaluation")

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
