"""REST access to recordings: search, details, and the audio itself."""

from __future__ import annotations

from django.http import FileResponse, Http404
from django.utils.dateparse import parse_datetime
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.reverse import reverse

from extensions.api import ViewModelPermissions
from recorder.models import Recording

AUDIO_TYPES = {"wav": "audio/wav", "opus": "audio/ogg", "rtp": "application/octet-stream"}


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
    """Recordings, newest first. Filters: extension (exact), agent (name or id), since and
    until (ISO 8601 start times), status."""

    serializer_class = RecordingSerializer
    permission_classes = [ViewModelPermissions]
    queryset = Recording.objects.select_related("agent", "phone").order_by("-started_at", "-pk")

    def get_queryset(self):
        recordings = super().get_queryset()
        query = self.request.query_params
        if "extension" in query:
            recordings = recordings.filter(extension=query["extension"])
        if "agent" in query:
            agent = query["agent"]
            by_id = agent.isdigit()
            recordings = recordings.filter(**{"agent_id" if by_id else "agent__name": agent})
        if "status" in query:
            recordings = recordings.filter(status=query["status"])
        for name, lookup in (("since", "started_at__gte"), ("until", "started_at__lt")):
            if name in query:
                recordings = recordings.filter(**{lookup: moment(name, query[name])})
        return recordings

    @action(detail=True, url_path="audio", url_name="audio")
    def audio(self, request: Request, pk: str | None = None) -> FileResponse:
        recording = self.get_object()
        if not recording.file:
            raise Http404("This recording has no audio file.")
        content_type = AUDIO_TYPES.get(recording.audio_format, "application/octet-stream")
        return FileResponse(
            recording.file.open("rb"),
            content_type=content_type,
            as_attachment=False,
            filename=recording.file.name.rsplit("/", 1)[-1],
        )


def moment(name: str, text: str):
    parsed = parse_datetime(text)
    if parsed is None:
        raise ValidationError({name: f"{text!r} is not an ISO 8601 date and time."})
    return parsed
