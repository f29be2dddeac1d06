from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # The front page is the recordings list (which asks for a login first).
    path("", RedirectView.as_view(pattern_name="recorder:list", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("qms.api_urls")),
    path("", include("recorder.playback.urls")),
]
