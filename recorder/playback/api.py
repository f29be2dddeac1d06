"""REST access to recordings: search, details, the audio and the waveform; the audit trail.

Every recording the API shows comes from recordings_visible_to(): filters only narrow the
recordings a person may already see, so no filter, count or id tells them about others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, QuerySet
from django.db.models.expressions import OrderBy
from django.http.response import HttpResponseBase
from django.utils import timezone
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from qms.lib.api import DATE_TIME, NUMBER, STRING, ViewModelPermissions
from qms.lib.query import CheckedQuery, by_id_or_name, choice, moment, number, row_id
from recorder.models import (
    Answer,
    AuditEntry,
    Call,
    Evaluation,
    EvaluationForm,
    Flag,
    FormSection,
    Question,
    Recording,
    RecordingFlag,
    RecordingNote,
)
from recorder.playback import evaluation_report, evaluations, marks
from recorder.playback.access import evaluations_visible_to, recordings_visible_to
from recorder.playback.audio import audio_response
from recorder.playback.audit import audit, audit_search
from recorder.playback.listing import ScopedListing
from recorder.playback.search import DEFAULT_SORT, SORTS

# A recording id no URL holds otherwise, stood in for the id when a URL is reversed once.
URL_PLACEHOLDER = 918273645546372819
# The directions a recording can be filtered by: a call of unknown direction has none.
KNOWN_DIRECTIONS = [value for value in Call.Direction.values if value]


class RecordingSerializer(serializers.ModelSerializer):
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    phone = serializers.SlugRelatedField(slug_field="device_name", read_only=True)
    codec = serializers.CharField()
    audio_url = serializers.SerializerMethodField()
    waveform_url = serializers.SerializerMethodField()
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
            "waveform_url",
            "dtmf",
            "quality",
            "mos_estimate",
        ]

    def get_audio_url(self, recording: Recording) -> str | None:
        if not recording.file:
            return None
        return self.url_of("recording-audio", recording)

    def get_waveform_url(self, recording: Recording) -> str:
        return self.url_of("recording-waveform", recording)

    def url_of(self, name: str, recording: Recording) -> str:
        # Reversed once per response and filled in per row: a page of a hundred rows would
        # otherwise spend a sixth of its time resolving the same two URL patterns.
        templates = self.root.__dict__.setdefault("_url_templates", {})
        if name not in templates:
            request = self.context.get("request")
            templates[name] = reverse(name, args=[URL_PLACEHOLDER], request=request)
        return templates[name].replace(str(URL_PLACEHOLDER), str(recording.pk), 1)


class FlaggingSerializer(serializers.ModelSerializer):
    flag = serializers.SlugRelatedField(slug_field="name", queryset=Flag.objects.all())
    by = serializers.CharField(source="by.username", read_only=True, allow_null=True)

    class Meta:
        model = RecordingFlag
        fields = ["flag", "by", "at"]
        read_only_fields = ["at"]


class NoteSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author_name", read_only=True)
    recording = serializers.IntegerField(source="recording_id", read_only=True)

    class Meta:
        model = RecordingNote
        fields = ["id", "recording", "position_seconds", "text", "author", "created_at",
                  "updated_at"]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]


@contextmanager
def _as_api_errors() -> Iterator[None]:
    """The marks' refusals as the API's: 403 with the sentence, 400 with the messages."""
    try:
        yield
    except DjangoPermissionDenied as refused:
        raise PermissionDenied(str(refused)) from None
    except DjangoValidationError as error:
        raise ValidationError({"detail": error.messages}) from None


def _flags_of(recording: Recording) -> list[dict]:
    flaggings = RecordingFlag.objects.filter(recording=recording).select_related("flag", "by")
    return FlaggingSerializer(flaggings, many=True).data


def _flag_named(name: object) -> Flag:
    flag = Flag.objects.filter(name=str(name)).first() if name else None
    if flag is None:
        raise ValidationError({"flag": ["No flag has this name."]})
    return flag


class RecordingViewSet(CheckedQuery, viewsets.ReadOnlyModelViewSet):
    """Recordings the caller may see, newest first unless ?sort= says otherwise. The filters
    and sort orders are the recordings page's. Every list request is written to the audit
    trail with its filters."""

    serializer_class = RecordingSerializer
    # Seeing a recording is decided row by row in recorder/playback/access.py, not by a model
    # permission: a supervisor's teams are their grant.
    permission_classes = [permissions.IsAuthenticated]
    queryset = Recording.objects.select_related("agent", "phone")
    query_parameters = (
        ("extension", STRING, "The line's extension, exactly as the PBX writes it (rule R4)."),
        ("agent", STRING, "The agent's id or name."),
        ("team", STRING, "The id or name of a team the agent is in."),
        ("far_party", STRING, "Part of the far party's number, as on the wire."),
        ("since", DATE_TIME, "Started at or after (ISO 8601)."),
        ("until", DATE_TIME, "Started before (ISO 8601)."),
        ("longer_than", NUMBER, "At least this many seconds long."),
        ("shorter_than", NUMBER, "At most this many seconds long."),
        ("direction", {**STRING, "enum": KNOWN_DIRECTIONS}, "Direction."),
        ("status", {**STRING, "enum": Recording.Status.values}, "Recording status."),
        ("mos_below", NUMBER, "Estimated MOS below this (recordings with no estimate excluded)."),
        ("flag", STRING, "The name of a flag the recording has."),
        (
            "sort",
            {**STRING, "enum": [f"{sign}{name}" for name in SORTS for sign in ("", "-")]},
            f"Sort order, as in the pages; a leading '-' is descending. Default: {DEFAULT_SORT}.",
        ),
    )
    action_responses = {
        "audio": {
            "200": {
                "description": "The audio file (206 for a satisfiable Range request).",
                "content": {
                    kind: {"schema": {"type": "string", "format": "binary"}}
                    for kind in ("audio/wav", "audio/ogg")
                },
            }
        },
        "waveform": {
            "200": {
                "description": "The peaks of both channels, as computed when the recording "
                "was finalised. 404 while none have been computed.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }

    def get_queryset(self) -> QuerySet:
        recordings = recordings_visible_to(self.request.user, super().get_queryset())
        if self.action != "waveform":
            # The peaks are the waveform endpoint's alone: kilobytes a row nobody else reads.
            recordings = recordings.defer("peaks")
        recordings = filtered(recordings, self.request.query_params)
        return ordered(recordings, self.request.query_params.get("sort") or DEFAULT_SORT)

    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        # Counted and paged from the search indexes, not by reading the matching rows.
        page = self.paginate_queryset(ScopedListing(request.user, self.get_queryset()))
        response = self.get_paginated_response(self.get_serializer(page, many=True).data)
        audit_search(request, request.query_params)
        return response

    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        # The details are who called whom, when and from where: a view, as the page's.
        recording = self.get_object()
        response = Response(self.get_serializer(recording).data)
        audit(request, AuditEntry.Action.VIEW, recording)
        return response

    @action(detail=True, url_path="audio", url_name="audio")
    def audio(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The audio, with HTTP Range support; ?download=1 needs recorder.download_recording."""
        return audio_response(request, self.get_object(), via_api=True)

    @action(detail=True, url_path="waveform", url_name="waveform")
    def waveform(self, request: Request, pk: str | None = None) -> Response:
        """The waveform peaks the player draws, under the same rules as the audio."""
        recording = self.get_object()
        if recording.peaks is None:
            raise NotFound("This recording has no waveform yet.")
        # The peaks show when each side spoke: a look at the call's content.
        audit(request, AuditEntry.Action.VIEW, recording, {"part": "waveform"})
        return Response(recording.peaks)

    @action(detail=True, url_path="flags", url_name="flags", serializer_class=FlaggingSerializer)
    def flags(self, request: Request, pk: str | None = None) -> Response:
        """The recording's flags."""
        return Response(_flags_of(self.get_object()))

    @flags.mapping.post
    def add_flag(self, request: Request, pk: str | None = None) -> Response:
        """Put a flag on the recording: {"flag": name} (recorder.add_recordingflag). 201, or
        200 when it had it already. An audit entry."""
        recording = self.get_object()
        flag = _flag_named(request.data.get("flag"))
        with _as_api_errors():
            added = marks.add_flag(request, recording, flag)
        code = status.HTTP_201_CREATED if added else status.HTTP_200_OK
        return Response(_flags_of(recording), status=code)

    @action(detail=True, methods=["delete"], url_path=r"flags/(?P<flag_name>[^/]+)",
            url_name="flag")  # fmt: skip
    def unflag(self, request: Request, pk: str | None = None, flag_name: str = "") -> Response:
        """Take a flag off the recording (recorder.add_recordingflag). An audit entry."""
        recording = self.get_object()
        with _as_api_errors():
            if not marks.remove_flag(request, recording, _flag_named(flag_name)):
                raise NotFound("The recording does not have this flag.")
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, url_path="notes", url_name="notes", serializer_class=NoteSerializer)
    def notes(self, request: Request, pk: str | None = None) -> Response:
        """The recording's notes, by position."""
        return Response(NoteSerializer(self.get_object().notes.all(), many=True).data)

    @notes.mapping.post
    def add_note(self, request: Request, pk: str | None = None) -> Response:
        """Write a note: {"position_seconds": seconds, "text": ...}
        (recorder.add_recordingnote). An audit entry."""
        recording = self.get_object()
        with _as_api_errors():
            note = marks.add_note(request, recording, request.data.get("position_seconds"),
                                  request.data.get("text"))  # fmt: skip
        return Response(NoteSerializer(note).data, status=status.HTTP_201_CREATED)


def filtered(recordings: QuerySet, query: dict) -> QuerySet:
    """Narrow visible recordings by the API's (and the pages') search filters."""
    if "extension" in query:
        recordings = recordings.filter(extension=query["extension"])
    if "agent" in query:
        recordings = recordings.filter(**by_id_or_name("agent", query["agent"]))
    if "team" in query:
        recordings = recordings.filter(**by_id_or_name("agent__teams", query["team"]))
    if query.get("far_party"):
        recordings = recordings.filter(remote_party__contains=query["far_party"])
    for name, choices in (
        ("direction", Call.Direction.values),
        ("status", Recording.Status.values),
    ):
        if name in query:
            recordings = recordings.filter(**{name: choice(name, query[name], choices)})
    for name, lookup in (("since", "started_at__gte"), ("until", "started_at__lt")):
        if name in query:
            recordings = recordings.filter(**{lookup: moment(name, query[name])})
    for name, lookup in (
        ("longer_than", "duration_seconds__gte"),
        ("shorter_than", "duration_seconds__lte"),
        ("mos_below", "mos_estimate__lt"),
    ):
        if name in query:
            recordings = recordings.filter(**{lookup: number(name, query[name])})
    if "flag" in query:
        recordings = recordings.filter(flaggings__flag__name=query["flag"])
    return recordings


def ordered(recordings: QuerySet, sort: str) -> QuerySet:
    """Sort by one column of the recordings page; the id breaks ties so pages never
    overlap. Rows without a value (no MOS estimate, no agent) come last either way."""
    name = sort.removeprefix("-")
    if name not in SORTS:
        known = ", ".join(SORTS)
        raise ValidationError({"sort": [f"{sort!r} is not one of {known} (or -name)."]})
    descending = sort.startswith("-")
    field = F(SORTS[name])
    first: OrderBy = field.desc(nulls_last=True) if descending else field.asc(nulls_last=True)
    return recordings.order_by(first, "-pk" if descending else "pk")


class AuditEntrySerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="username", read_only=True)
    recording = serializers.IntegerField(source="recording_id", read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "user", "action", "recording", "client_ip", "detail"]


class AuditEntryViewSet(CheckedQuery, viewsets.ReadOnlyModelViewSet):
    """The audit trail, newest first, for admins (recorder.view_auditentry). Read-only:
    entries are never changed or deleted. Filters: user (login name), action, recording
    (id), since and until (ISO 8601)."""

    serializer_class = AuditEntrySerializer
    permission_classes = [ViewModelPermissions]
    queryset = AuditEntry.objects.order_by("-at", "-pk")
    query_parameters = (
        ("user", STRING, "The login name at the time."),
        ("action", {**STRING, "enum": AuditEntry.Action.values}, "What was done."),
        ("recording", {"type": "integer"}, "The recording's id."),
        ("since", DATE_TIME, "At or after (ISO 8601)."),
        ("until", DATE_TIME, "Before (ISO 8601)."),
    )

    def get_queryset(self) -> QuerySet:
        entries = super().get_queryset()
        query = self.request.query_params
        if "user" in query:
            entries = entries.filter(username=query["user"])
        if "action" in query:
            entries = entries.filter(action=query["action"])
        if "recording" in query:
            recording = row_id("recording", query["recording"], "a recording")
            entries = entries.filter(recording_id=recording)
        for name, lookup in (("since", "at__gte"), ("until", "at__lt")):
            if name in query:
                entries = entries.filter(**{lookup: moment(name, query[name])})
        return entries


class NoteViewSet(
    CheckedQuery,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """A note on a recording the caller may see: read, changed (PATCH position_seconds,
    text) or deleted by its author, or by a holder of recorder.change_recordingnote /
    delete_recordingnote. Every change is an audit entry."""

    serializer_class = NoteSerializer
    permission_classes = [permissions.IsAuthenticated]
    queryset = RecordingNote.objects.select_related("recording")
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet:
        visible = recordings_visible_to(self.request.user)
        return super().get_queryset().filter(recording__in=visible.values("pk"))

    def perform_update(self, serializer: NoteSerializer) -> None:
        data = serializer.validated_data
        with _as_api_errors():
            marks.edit_note(self.request, serializer.instance, data.get("position_seconds"),
                            data.get("text"))  # fmt: skip

    def perform_destroy(self, instance: RecordingNote) -> None:
        with _as_api_errors():
            marks.delete_note(self.request, instance)


class FlagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Flag
        fields = ["id", "name", "description", "active"]


class FlagViewSet(CheckedQuery, viewsets.ReadOnlyModelViewSet):
    """The flags administrators defined (in the admin); the active ones may be put on
    recordings."""

    serializer_class = FlagSerializer
    permission_classes = [permissions.IsAuthenticated]
    queryset = Flag.objects.order_by("name")


class QuestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["id", "order", "text", "kind", "scale_max", "weight", "allows_na", "fail_all"]


class FormSectionSerializer(serializers.ModelSerializer):
    questions = QuestionSerializer(many=True, read_only=True)

    class Meta:
        model = FormSection
        fields = ["id", "order", "title", "questions"]


class EvaluationFormSerializer(serializers.ModelSerializer):
    sections = FormSectionSerializer(many=True, read_only=True)

    class Meta:
        model = EvaluationForm
        fields = ["id", "name", "version", "description", "active", "sections"]


class EvaluationFormViewSet(CheckedQuery, viewsets.ReadOnlyModelViewSet):
    """The evaluation forms administrators built (in the admin), with their sections and
    questions; the active ones are used for new evaluations. ?active=1 for those alone."""

    serializer_class = EvaluationFormSerializer
    permission_classes = [permissions.IsAuthenticated]
    queryset = EvaluationForm.objects.prefetch_related("sections__questions").order_by(
        "name", "-version"
    )
    query_parameters = (("active", {"type": "boolean"}, "Only the forms offered (1) or not (0)."),)

    def get_queryset(self) -> QuerySet:
        forms = super().get_queryset()
        active = self.request.query_params.get("active")
        if active is not None:
            forms = forms.filter(active=active.lower() in ("1", "true", "yes"))
        return forms


class AnswerSerializer(serializers.ModelSerializer):
    question = serializers.IntegerField(source="question_id")
    value = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=10)
    not_applicable = serializers.BooleanField(required=False, default=False)
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)
    position_seconds = serializers.FloatField(required=False, allow_null=True)

    class Meta:
        model = Answer
        fields = ["question", "value", "not_applicable", "comment", "position_seconds"]


class EvaluationSerializer(serializers.ModelSerializer):
    """The score is the server's: computed from the answers, never taken from the client."""

    recording = serializers.IntegerField(source="recording_id")
    form = serializers.IntegerField(source="form_id")
    agent = serializers.CharField(source="agent.name", read_only=True, allow_null=True)
    evaluator = serializers.CharField(source="evaluator_name", read_only=True)
    status = serializers.ChoiceField(choices=Evaluation.Status.choices, required=False,
                                     default=Evaluation.Status.DRAFT)  # fmt: skip
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    answers = AnswerSerializer(many=True, required=False)

    class Meta:
        model = Evaluation
        fields = ["id", "recording", "form", "agent", "evaluator", "status", "score", "comment",
                  "answers", "created_at", "updated_at", "submitted_at"]  # fmt: skip
        read_only_fields = ["score", "created_at", "updated_at", "submitted_at"]


def _given(data: dict) -> evaluations.EvaluationGiven:
    """The serializer's validated data as the evaluation given."""
    answers = [{**answer, "question": answer["question_id"]} for answer in data.get("answers", [])]
    with _as_api_errors():
        return evaluations.given_from_api(
            answers, data.get("comment", ""), data.get("status") == Evaluation.Status.SUBMITTED
        )


def _answer_as_given(answer: Answer) -> dict:
    return {
        "question_id": answer.question_id,
        "value": answer.value,
        "not_applicable": answer.not_applicable,
        "comment": answer.comment,
        "position_seconds": answer.position_seconds,
    }


class EvaluationViewSet(
    CheckedQuery,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Evaluations of the recordings the caller may see (submitted ones, and the caller's
    own drafts; agents their own with recorder.view_own_evaluations). POST evaluates a
    recording (recorder.add_evaluation); PATCH changes one's own evaluation (answers given
    replace those of the same questions); DELETE deletes it. The score is computed by the
    server. Every change is an audit entry."""

    serializer_class = EvaluationSerializer
    permission_classes = [permissions.IsAuthenticated]
    queryset = Evaluation.objects.select_related("agent", "form").prefetch_related("answers")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # Ids are numbers: the router puts /evaluations/report/ after /evaluations/{id}/.
    lookup_value_regex = r"[0-9]+"
    query_parameters = (
        ("recording", {"type": "integer"}, "The recording's id."),
        ("agent", STRING, "The agent's id or name."),
        ("form", {"type": "integer"}, "The form's id."),
        ("status", {**STRING, "enum": Evaluation.Status.values}, "Draft or submitted."),
    )
    action_query_parameters = {
        "report": (
            ("started_from", {**STRING, "format": "date"}, "The first day of calls (default: "
             "29 days before started_to)."),
            ("started_to", {**STRING, "format": "date"}, "The last day of calls (default: today)."),
            ("form", STRING, "A form's name: all its versions count."),
        ),
    }  # fmt: skip
    action_responses = {
        "report": {
            "200": {
                "description": "Average scores per agent and per team: {started_from, "
                "started_to, form, agents: [{name, evaluations, average}], teams: [...]}.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }

    def get_queryset(self) -> QuerySet:
        rows = evaluations_visible_to(self.request.user, super().get_queryset())
        query = self.request.query_params
        if self.action != "list":
            return rows
        if "recording" in query:
            rows = rows.filter(recording_id=row_id("recording", query["recording"], "a recording"))
        if "agent" in query:
            rows = rows.filter(**by_id_or_name("agent", query["agent"]))
        if "form" in query:
            rows = rows.filter(form_id=row_id("form", query["form"], "a form"))
        if "status" in query:
            rows = rows.filter(status=choice("status", query["status"], Evaluation.Status.values))
        return rows

    def perform_create(self, serializer: EvaluationSerializer) -> None:
        data = serializer.validated_data
        visible = recordings_visible_to(self.request.user).select_related("agent")
        recording = visible.filter(pk=data["recording_id"]).first()
        if recording is None:
            raise ValidationError({"recording": ["No recording you may see has this id."]})
        form = EvaluationForm.objects.filter(pk=data["form_id"]).first()
        if form is None:
            raise ValidationError({"form": ["No form has this id."]})
        with _as_api_errors():
            serializer.instance = evaluations.evaluate(self.request, recording, form, _given(data))

    def perform_update(self, serializer: EvaluationSerializer) -> None:
        evaluation = serializer.instance
        data = serializer.validated_data
        if {"recording_id", "form_id"} & set(data):
            raise ValidationError({"detail": ["An evaluation's recording and form stay."]})
        answers = {answer.question_id: _answer_as_given(answer)
                   for answer in evaluation.answers.all()}  # fmt: skip
        answers.update((answer["question_id"], answer) for answer in data.get("answers", []))
        given = _given({
            "comment": data.get("comment", evaluation.comment),
            "status": data.get("status", evaluation.status),
            "answers": list(answers.values()),
        })  # fmt: skip
        with _as_api_errors():
            evaluations.change_evaluation(self.request, evaluation, given)

    def perform_destroy(self, instance: Evaluation) -> None:
        with _as_api_errors():
            evaluations.delete_evaluation(self.request, instance)

    @action(detail=False, url_path="report", url_name="report")
    def report(self, request: Request) -> Response:
        """Average scores per agent and per team, of the submitted evaluations of calls
        made in the period, scoped like the evaluations: as the report page."""
        form = evaluation_report.ReportForm(data=request.query_params)
        if not form.is_valid():
            raise ValidationError(form.errors)
        first, last = form.period(timezone.localdate())
        report = evaluation_report.report_for(request.user, first, last,
                                              form.cleaned_data["form"])  # fmt: skip
        audit_search(request, request.query_params, listing="evaluation report")
        return Response(report.as_dict())
