from __future__ import annotations

from rest_framework.routers import DefaultRouter

from extensions.api import AgentViewSet, BindingViewSet, LineAppearanceViewSet

router = DefaultRouter()
router.register("line-appearances", LineAppearanceViewSet)
router.register("bindings", BindingViewSet, basename="binding")
router.register("agents", AgentViewSet, basename="agent")

urlpatterns = router.urls
