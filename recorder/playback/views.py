"""The supervisor's pages: search recordings, play one, watch the calls in progress.

Every recording and call shown comes from recorder/playback/access.py; a recording the person may
not see answers 404 on every page, exactly as one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from extensions.models import Agent
from qms.lib.login_throttle import is_locked, lockout_message
from recorder.models import (
    AuditEntry,
    Call,
    Evaluation,
    EvaluationForm,
    Flag,
    Recording,
    RecordingNote,
)
from recorder.playback import evaluation_report, evaluations, marks
from recorder.playback.access import (
    VIEW_OWN_EVALUATIONS,
    calls_visible_to,
    evaluations_visible_to,
    may_download,
    may_listen_live,
    recordings_visible_to,
)
from recorder.playback.audio import audio_response
from recorder.playback.audit import audit, audit_search
from recorder.playback.listing import ScopedListing
from recorder.playback.search import DEFAULT_SORT, PAGE_SIZE, SORTS, RecordingSearchForm
from recorder.recordings.integrity import verify
from recorder.recordings.waveform import DRAWABLE_FORMATS

# The list's columns: (heading, sort key or None).
LIST_COLUMNS = [
    ("Started", "started"),
    ("Duration", "duration"),
    ("Agent", "agent"),
    ("Extension", "extension"),
    ("Far party", "far_party"),
    ("Direction", "direction"),
    ("Status", "status"),
    ("MOS (est.)", "mos"),
]
QUALITY_DIRECTIONS = [("agent_to_far", "Agent → far party"), ("far_to_agent", "Far party → agent")]


class LoginForm(AuthenticationForm):
    """The pages' login, for every active user (the admin's admits staff only), saying
    plainly when too many failures have locked it (qms/lib/login_throttle.py)."""

    def clean(self) -> dict:
        username = self.cleaned_data.get("username")
        if username and is_locked(username, self.request):
            raise forms.ValidationError(lockout_message(), code="locked")
        return super().clean()


@login_required
@require_GET
def recording_list(request: HttpRequest) -> HttpResponse:
    """Search the recordings one may see; every search is written to the audit trail."""
    form = RecordingSearchForm(request.user, data=request.GET)
    # The waveform, DTMF and packet figures are the recording page's, not the list's.
    rows = Recording.objects.select_related("agent").defer("peaks", "dtmf", "quality")
    recordings = recordings_visible_to(request.user, rows)
    if form.is_valid():
        found = form.search(recordings)
        audit(request, AuditEntry.Action.SEARCH, detail={"filters": form.used_filters()})
    else:
        found = recordings.none()
    # Counted and paged part by part (recorder/playback/listing.py): fast on a large archive.
    page = Paginator(ScopedListing(request.user, found), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    current_sort = form.cleaned_data.get("sort") if form.is_valid() else ""
    context = {
        "form": form,
        "page": page,
        "columns": sort_columns(current_sort or DEFAULT_SORT),
    }
    return render(request, "recorder/recording_list.html", context)


@dataclass(frozen=True)
class SortColumn:
    heading: str
    key: str | None
    next_sort: str = ""
    arrow: str = ""


def sort_columns(current: str) -> list[SortColumn]:
    """Each column's heading, the sort its link asks for (the reverse of the current one
    when it is this column), and an arrow on the column the list is sorted by."""
    columns = []
    for heading, key in LIST_COLUMNS:
        if key is None or key not in SORTS:
            columns.append(SortColumn(heading, None))
        elif current == key:
            columns.append(SortColumn(heading, key, f"-{key}", "▲"))
        elif current == f"-{key}":
            columns.append(SortColumn(heading, key, key, "▼"))
        else:
            columns.append(SortColumn(heading, key, key))
    return columns


@login_required
@require_GET
def recording_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One recording: player, waveform, details, DTMF, quality, segments, integrity."""
    visible = recordings_visible_to(request.user)
    recording = get_object_or_404(visible.select_related("agent", "phone"), pk=pk)
    # The page shows who called whom and when: a look at the recording, audited as such.
    audit(request, AuditEntry.Action.VIEW, recording)
    context = {
        "recording": recording,
        "playable": bool(recording.file) and recording.audio_format in DRAWABLE_FORMATS,
        "duration": recording.duration_seconds,
        "dtmf": dtmf_marks(recording),
        "quality": quality_rows(recording),
        "segments": other_segments(visible, recording),
        "integrity": verify(recording),
        "may_download": may_download(request.user),
        "agent_admin_url": admin_url(request.user, recording.agent, "extensions.view_agent"),
        "phone_admin_url": admin_url(request.user, recording.phone, "extensions.view_phone"),
        "recording_admin_url": admin_url(request.user, recording, "recorder.view_recording"),
        "flaggings": recording.flaggings.select_related("flag", "by"),
        "flags_to_add": Flag.objects.filter(active=True).exclude(flaggings__recording=recording),
        "may_flag": marks.may_flag(request.user),
        "notes": [
            (note, marks.may_change_note(request.user, note, "delete"))
            for note in recording.notes.all()
        ],
        "may_note": marks.may_note(request.user),
        "evaluations": [
            (evaluation, evaluations.may_change_evaluation(request.user, evaluation, "delete"))
            for evaluation in evaluations_of(request.user, recording)
        ],
        "evaluation_sheets": evaluations.sheets_for(request.user, recording),
    }
    return render(request, "recorder/recording_detail.html", context)


def evaluations_of(user: AbstractBaseUser, recording: Recording) -> QuerySet:
    """The evaluations of `recording` the person may read, with their answers."""
    rows = recording.evaluations.select_related("form").prefetch_related(
        "answers__question__section"
    )
    return evaluations_visible_to(user, rows).order_by("created_at", "pk")


# Flags and notes (recorder/playback/marks.py): each a form of the recording page, which it
# returns to, with what went wrong said there.


def _marked(request: HttpRequest, pk: int, change, anchor: str) -> HttpResponse:
    recording = get_object_or_404(recordings_visible_to(request.user), pk=pk)
    try:
        change(recording)
    except PermissionDenied as refused:
        raise PermissionDenied(str(refused)) from None
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return HttpResponseRedirect(reverse("recorder:detail", args=[recording.pk]) + anchor)


@login_required
@require_POST
def recording_flags(request: HttpRequest, pk: int) -> HttpResponse:
    """Add (flag=<id>) or remove (flag=<id>, remove=1) a flag."""

    def change(recording: Recording) -> None:
        flag = Flag.objects.filter(pk=_number(request.POST.get("flag"))).first()
        if flag is None:
            raise ValidationError("Choose a flag.")
        if request.POST.get("remove"):
            marks.remove_flag(request, recording, flag)
        else:
            marks.add_flag(request, recording, flag)

    return _marked(request, pk, change, "#flags")


@login_required
@require_POST
def recording_notes(request: HttpRequest, pk: int) -> HttpResponse:
    """Add a note (position, text), or delete one (delete=<note id>)."""

    def change(recording: Recording) -> None:
        if request.POST.get("delete"):
            note = get_object_or_404(
                RecordingNote, pk=_number(request.POST["delete"]), recording=recording
            )
            marks.delete_note(request, note)
        else:
            marks.add_note(request, recording, request.POST.get("position"),
                           request.POST.get("text"))  # fmt: skip

    return _marked(request, pk, change, "#notes")


@login_required
@require_POST
def recording_evaluations(request: HttpRequest, pk: int) -> HttpResponse:
    """Save one's evaluation with a form (form=<id>, answer-<question id>..., comment,
    status=draft|submitted), new or changed; or delete one (delete=<evaluation id>)."""

    def change(recording: Recording) -> None:
        if request.POST.get("delete"):
            visible = evaluations_visible_to(request.user, recording.evaluations.all())
            evaluation = get_object_or_404(visible, pk=_number(request.POST["delete"]))
            evaluations.delete_evaluation(request, evaluation)
            return
        form = EvaluationForm.objects.filter(pk=_number(request.POST.get("form"))).first()
        if form is None:
            raise ValidationError("Choose a form.")
        given = evaluations.given_from_page(form, request.POST)
        mine = Evaluation.objects.filter(recording=recording, form=form, evaluator=request.user)
        if mine.exists():
            evaluations.change_evaluation(request, mine.get(), given)
        else:
            evaluations.evaluate(request, recording, form, given)

    return _marked(request, pk, change, "#evaluations")


def _number(value: object) -> int | None:
    text = str(value or "")
    return int(text) if text.isdigit() and len(text) < 18 else None


def dtmf_marks(recording: Recording) -> list[dict]:
    """The digits with their place on the timeline, in per cent of the recording."""
    length = recording.duration_seconds or 0
    marks = []
    for event in recording.dtmf:
        at = float(event.get("at", 0.0))
        place = min(max(at / length * 100, 0.0), 100.0) if length > 0 else 0.0
        marks.append({**event, "at": at, "place": round(place, 3)})
    return marks


def quality_rows(recording: Recording) -> list[dict]:
    rows = []
    for key, label in QUALITY_DIRECTIONS:
        figures = recording.quality.get(key)
        if not figures:
            continue
        expected = figures.get("expected") or 0
        loss = figures.get("lost", 0) / expected * 100 if expected else None
        rows.append({"label": label, "loss_percent": loss, **figures})
    return rows


def other_segments(visible: QuerySet, recording: Recording) -> QuerySet:
    """The other segments of this conversation that the person may see, in order."""
    if not recording.conversation_id:
        return visible.none()
    return (
        visible.filter(conversation_id=recording.conversation_id)
        .exclude(pk=recording.pk)
        .select_related("agent")
        .order_by("started_at", "pk")
    )


def admin_url(user: AbstractBaseUser, target: Model | None, permission: str) -> str:
    """The admin page of `target`, for staff holding the permission to view it."""
    if target is None or not (user.is_active and user.is_staff and user.has_perm(permission)):
        return ""
    meta = target._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[target.pk])


@login_required
@require_GET
def live_calls(request: HttpRequest) -> HttpResponse:
    """The calls in progress now, by agent, under the recordings' rules."""
    calls = (
        calls_visible_to(request.user)
        .filter(ended_at__isnull=True)
        .exclude(state=Call.State.ENDED)
        .select_related("agent", "phone")
        .order_by("agent__name", "started_at", "pk")
    )
    # Who is on the phone with whom, now: a search of calls, written at every refresh.
    audit(request, AuditEntry.Action.SEARCH, detail={"filters": {}, "listing": "live calls"})
    context = {"calls": calls, "may_listen": may_listen_live(request.user)}
    return render(request, "recorder/live_calls.html", context)


@login_required
@require_GET
def recording_audio(request: HttpRequest, pk: int) -> HttpResponseBase:
    """Play (or, with ?download=1 and the permission, download) one recording's audio.

    A recording the person may not see answers 404, exactly as one that does not exist.
    """
    recording = get_object_or_404(recordings_visible_to(request.user), pk=pk)
    return audio_response(request, recording, via_api=False)


@login_required
@require_GET
def my_evaluations(request: HttpRequest) -> HttpResponse:
    """An agent's own evaluations, with their answers and their average: what the agent
    may read of them (evaluations_visible_to), whether or not they may hear the calls."""
    agent = Agent.objects.filter(user=request.user).first()
    allowed = request.user.has_perm(VIEW_OWN_EVALUATIONS)
    evaluations = _own_evaluations(request, agent) if agent is not None and allowed else []
    scores = [evaluation.score for evaluation in evaluations if evaluation.score is not None]
    context = {
        "agent": agent,
        "allowed": allowed,
        "evaluations": evaluations,
        "average": sum(scores) / len(scores) if scores else None,
    }
    return render(request, "recorder/my_evaluations.html", context)


def _own_evaluations(request: HttpRequest, agent: Agent) -> list[Evaluation]:
    """The submitted evaluations of the agent's calls, newest first; a look at them is a
    search of the trail, as the report is."""
    rows = Evaluation.objects.filter(agent=agent, status=Evaluation.Status.SUBMITTED)
    rows = rows.select_related("form", "recording").prefetch_related("answers__question__section")
    found = evaluations_visible_to(request.user, rows).order_by("-submitted_at", "-pk")
    audit_search(request, request.GET, "my evaluations")
    return list(found)


@login_required
@require_GET
def evaluation_report_page(request: HttpRequest) -> HttpResponse:
    """Average scores per agent and per team over a period: a table and a bar chart."""
    form, report = _report(request)
    context = {
        "form": form,
        "report": report,
        "agent_chart": evaluation_report.chart(report.agents) if report else None,
        "team_chart": evaluation_report.chart(report.teams) if report else None,
    }
    return render(request, "recorder/evaluation_report.html", context)


@login_required
@require_GET
def evaluation_report_csv(request: HttpRequest) -> HttpResponse:
    """The report's table as CSV: kind (agent or team), name, evaluations, average score."""
    form, report = _report(request)
    if report is None:
        return HttpResponse(" ".join(form.errors.get("started_to", ["Invalid period."])),
                            status=400, content_type="text/plain")  # fmt: skip
    response = HttpResponse(evaluation_report.as_csv(report), content_type="text/csv")
    name = f"evaluations-{report.first_day}-{report.last_day}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _report(request: HttpRequest) -> tuple:
    """The period form and its report (None while the form is invalid), audited as a search:
    the report shows agents' names and scores."""
    form = evaluation_report.ReportForm(data=request.GET)
    if not form.is_valid():
        return form, None
    first, last = form.period(timezone.localdate())
    report = evaluation_report.report_for(request.user, first, last, form.cleaned_data["form"])
    audit_search(request, request.GET, listing="evaluation report")
    return form, report
