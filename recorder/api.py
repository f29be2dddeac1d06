"""REST access to recordings: search, details, and the audio itself; the audit trail.

Every recording the API shows comes from recordings_visible_to(): filters only narrow the
recordings a person may already see, so no filter, count or id tells them about others.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.http.response import HttpResponseBase
from django.utils.dateparse import parse_datetime
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from extensions.api import ViewModelPermissions
from recorder.access import recordings_visible_to
from recorder.audit import audit_search
from recorder.models import AuditEntry, Recording
from recorder.playback import audio_response


class RecordingSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    phone = serializers.SlugRelatedField(slug_field="device_name", read_only=True)
    codec = serializers.CharField()
    audio_url = serializers.SerializerMethodField()
    quality = serializers.JSONField()

    class Meta:
        model = Recording
        fields = [
            "id",
            "call_id",
            "conversation_id",
            "started_at",
            "ended_at",
            "duration_seconds",
            "direction",
            "extension",
            "agent",
            "phone",
            "remote_party",
            "remote_name",
            "local_ip",
            "remote_ip",
            "codec",
            "audio_format",
            "status",
            "status_detail",
            "size",
            "sha256",
            "audio_url",
            "dtmf",
            "quality",
            "mos_estimate",
        ]

    def get_audio_url(self, recording: Recording) -> str | None:
        if not recording.file:
            return None
        return reverse("recording-audio", args=[recording.pk], request=self.context.get("request"))


class RecordingViewSet(viewsets.ReadOnlyModelViewSet):
    """Recordings the caller may see, newest first. Filters: extension (exact), agent (name
    or id), team (name or id), since and until (ISO 8601 start times), status. Every list
    request is written to the audit trail with its filters."""

    serializer_class = RecordingSerializer
    # Seeing a recording is decided row by row in recorder/access.py, not by a model
    # permission: a supervisor's teams are their grant.
    permission_classes = [permissions.IsAuthenticated]
    queryset = Recording.objects.select_related("agent", "phone").order_by("-started_at", "-pk")

    def get_queryset(self) -> QuerySet:
        recordings = recordings_visible_to(self.request.user, super().get_queryset())
        return filtered(recordings, self.request.query_params)

    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        response = super().list(request, *args, **kwargs)
        audit_search(request, request.query_params)
        return response

    @action(detail=True, url_path="audio", url_name="audio")
    def audio(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The audio, with HTTP Range support; ?download=1 needs recorder.download_recording."""
        return audio_response(request, self.get_object(), via_api=True)


def filtered(recordings: QuerySet, query: dict) -> QuerySet:
    if "extension" in query:
        recordings = recordings.filter(extension=query["extension"])
    if "agent" in query:
        recordings = recordings.filter(**by_id_or_name("agent", query["agent"]))
    if "team" in query:
        recordings = recordings.filter(**by_id_or_name("agent__teams", query["team"]))
    if "status" in query:
        recordings = recordings.filter(status=query["status"])
    for name, lookup in (("since", "started_at__gte"), ("until", "started_at__lt")):
        if name in query:
            recordings = recordings.filter(**{lookup: moment(name, query[name])})
    return recordings


def by_id_or_name(relation: str, value: str) -> dict:
    if value.isascii() and value.isdigit():
        return {f"{relation}__pk": int(value)}
    return {f"{relation}__name": value}


def moment(name: str, text: str) -> datetime:
    parsed = parse_datetime(text)
    if parsed is None:
        raise ValidationError({name: f"{text!r} is not an ISO 8601 date and time."})
    return parsed


class AuditEntrySerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="username", read_only=True)
    recording = serializers.IntegerField(source="recording_id", read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "user", "action", "recording", "client_ip", "detail"]


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first, for admins (recorder.view_auditentry). Read-only:
    entries are never changed or deleted. Filters: user (login name), action, recording
    (id), since and until (ISO 8601)."""

    serializer_class = AuditEntrySerializer
    permission_classes = [ViewModelPermissions]
    queryset = AuditEntry.objects.order_by("-at", "-pk")

    def get_queryset(self) -> QuerySet:
        entries = super().get_queryset()
        query = self.request.query_params
        if "user" in query:
            entries = entries.filter(username=query["user"])
        if "action" in query:
            entries = entries.filter(action=query["action"])
        if "recording" in query:
            entries = entries.filter(recording_id=whole_number("recording", query["recording"]))
        for name, lookup in (("since", "at__gte"), ("until", "at__lt")):
            if name in query:
                entries = entries.filter(**{lookup: moment(name, query[name])})
        return entries


def whole_number(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValidationError({name: f"{text!r} is not a recording id."})
    return int(text)
