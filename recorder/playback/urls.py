from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from recorder.playback import live, views

app_name = "recorder"

urlpatterns = [
    path("recordings/", views.recording_list, name="list"),
    path("recordings/<int:pk>/", views.recording_detail, name="detail"),
    path("recordings/<int:pk>/audio", views.recording_audio, name="audio"),
    path("recordings/<int:pk>/flags", views.recording_flags, name="flags"),
    path("recordings/<int:pk>/notes", views.recording_notes, name="notes"),
    path("recordings/<int:pk>/evaluations", views.recording_evaluations, name="evaluations"),
    path("calls/live/", views.live_calls, name="live"),
    path("calls/<int:pk>/listen", live.listen_page, name="listen"),
    path("calls/<int:pk>/listen/start", live.listen_start, name="listen_start"),
    path("listens/<int:pk>/segment", live.listen_segment, name="listen_segment"),
    path("listens/<int:pk>/stop", live.listen_stop, name="listen_stop"),
    path("evaluations/mine/", views.my_evaluations, name="my-evaluations"),
    path("evaluations/report/", views.evaluation_report_page, name="evaluation-report"),
    path("evaluations/report.csv", views.evaluation_report_csv, name="evaluation-report-csv"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="recorder/login.html",
            authentication_form=views.LoginForm,
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
