from __future__ import annotations

from rest_framework.routers import DefaultRouter

from extensions.api import LineAppearanceViewSet

router = DefaultRouter()
router.register("line-appearances", LineAppearanceViewSet)

urlpatterns = router.urls
