from __future__ import annotations

from django.urls import path

from recorder import views

app_name = "recorder"

urlpatterns = [
    path("recordings/<int:pk>/audio", views.recording_audio, name="audio"),
]
