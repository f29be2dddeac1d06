"""Listening to a call while it happens (docs/playback.md, "Live listening").

The page asks for the call's audio a segment at a time: each request answers with what
the capture node has decoded since the last (about a second of stereo WAV, the agent on
the left), waiting up to a second for it, and the page plays the segments back to back
through Web Audio. Short requests rather than one endless response: each one is checked
(the listener may still hear the call) and renews the listener's interest, a sync web
worker is held a second at most, and nothing between the browser and Django (a proxy that
buffers, a load balancer's idle timeout) can stall it.

Who may: holders of recorder.listen_live, for the calls calls_visible_to() shows them. The
agent is told nothing: QMS only ever reads a copy of the call's packets. Every listen is
two audit entries, its start and its end (with when it started and how it ended), and a
LiveListen row from which a listen that its page abandoned is ended by beat.
"""

from __future__ import annotations

import struct
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from qms.lib.http import client_ip
from recorder.media.live import LiveAudio
from recorder.models import AuditEntry, Call, LiveListen, Recording
from recorder.playback.access import calls_visible_to, may_listen_live
from recorder.recordings.live_relay import (
    ENDED,
    RELAY_ERRORS,
    UNAVAILABLE,
    Segment,
    next_segment,
    node_capturing,
    node_down,
    relay_client,
    want,
)

LISTEN_PERMISSION = "recorder.listen_live"
# How long a segment request waits for new audio before it answers "nothing yet".
WAIT_MS = 1000
# A listen whose page has not asked for audio this long is ended by beat (lapsed).
LAPSE_SECONDS = 30
# The listener's last request is written at most this often.
TOUCH_SECONDS = 5
RELAY_DOWN = "Live audio is unavailable: the relay (QMS_LIVE_AUDIO_URL) cannot be reached."


def live_calls_of(user: object):
    """The calls in progress `user` may listen to."""
    return calls_visible_to(user).filter(ended_at__isnull=True).exclude(state=Call.State.ENDED)


@login_required
@permission_required(LISTEN_PERMISSION, raise_exception=True)
@require_GET
def listen_page(request: HttpRequest, pk: int) -> HttpResponse:
    call = get_object_or_404(live_calls_of(request.user).select_related("agent"), pk=pk)
    context = {
        "call": call,
        "relay": settings.QMS_LIVE_AUDIO_URL != "",
        "available": settings.QMS_LIVE_AUDIO_URL != "" and bool(call.node),
        "start_url": reverse("recorder:listen_start", args=[call.pk]),
    }
    return render(request, "recorder/listen.html", context)


@login_required
@permission_required(LISTEN_PERMISSION, raise_exception=True)
@require_POST
def listen_start(request: HttpRequest, pk: int) -> JsonResponse:
    """A listen begins: its row and its audit entry, and the node asked for the audio."""
    call = get_object_or_404(live_calls_of(request.user), pk=pk)
    client = relay_client()
    if client is None:
        return _refusal("Live listening is off: QMS_LIVE_AUDIO_URL is not set.", 503)
    if not call.node:
        why = "This call is captured by a foreground sniff, which serves no live audio."
        return _refusal(why, 409)
    if not node_capturing(call.node):
        return _refusal(f"Live audio is unavailable: {node_down(call.node)}.", 503)
    try:
        want(client, call.node, call.pk)
    except RELAY_ERRORS:
        return _refusal(RELAY_DOWN, 503)
    with transaction.atomic():
        listen = LiveListen.objects.create(
            user=request.user, call=call, call_ref=call.pk, client_ip=client_ip(request)
        )
        _audit(listen, AuditEntry.Action.LISTEN_START, _detail(listen))
    return JsonResponse(
        {
            "listen": listen.pk,
            "segments": reverse("recorder:listen_segment", args=[listen.pk]),
            "stop": reverse("recorder:listen_stop", args=[listen.pk]),
        },
        status=201,
    )


@login_required
@require_GET
def listen_segment(request: HttpRequest, pk: int) -> HttpResponse:
    """The call's audio after ?after= (a stream position), as WAV; 204 when none came in
    time. X-QMS-Live says whether it goes on (live) or is over (ended, unavailable), and
    X-QMS-After where to ask from next."""
    listen = _open_listen(request, pk)
    heard = calls_visible_to(request.user).filter(pk=listen.call_ref).exists()
    if not (heard and may_listen_live(request.user)):
        _end(listen, LiveListen.EndedBy.NOT_ALLOWED)
        raise Http404("You may no longer listen to this call.")
    client = relay_client()
    if client is None:
        return _refusal("Live listening is off: QMS_LIVE_AUDIO_URL is not set.", 503)
    try:
        want(client, listen.call.node, listen.call_ref)
        segment = next_segment(client, listen.call_ref, request.GET.get("after", ""), WAIT_MS)
    except RELAY_ERRORS:
        return _refusal(RELAY_DOWN, 503)
    _touch(listen)
    return _segment_response(listen, segment)


@login_required
@require_POST
def listen_stop(request: HttpRequest, pk: int) -> HttpResponse:
    """The listener stopped (or left the page: it sends this as it goes)."""
    listen = _open_listen(request, pk)
    _end(listen, LiveListen.EndedBy.STOPPED)
    return HttpResponse(status=204)


def end_lapsed_listens(now: object | None = None) -> int:
    """End the listens whose page stopped asking for audio (beat, every 30 s): their end
    is the last time they asked. How many were ended."""
    now = now or timezone.now()
    lapsed = LiveListen.objects.filter(
        ended_at__isnull=True, last_request_at__lt=now - timedelta(seconds=LAPSE_SECONDS)
    )
    return sum(_end(listen, LiveListen.EndedBy.LAPSED, listen.last_request_at) for listen in lapsed)


def _open_listen(request: HttpRequest, pk: int) -> LiveListen:
    """The requester's own listen, not yet ended; 404 for anyone else's, as if none."""
    return get_object_or_404(
        LiveListen.objects.select_related("call"), pk=pk, user=request.user, ended_at__isnull=True
    )


def _segment_response(listen: LiveListen, segment: Segment) -> HttpResponse:
    if _node_gone(listen, segment):
        # Nothing came, and nothing will: the node's worker stopped (or its machine).
        segment = Segment(None, segment.position, UNAVAILABLE, node_down(listen.call.node))
    state = segment.state or ("ended" if _call_ended(listen) and segment.audio is None else "live")
    if state != "live":
        how = LiveListen.EndedBy.CALL_ENDED if state == ENDED else LiveListen.EndedBy.UNAVAILABLE
        _end(listen, how)
    if segment.audio is None:
        response = HttpResponse(status=204)
    else:
        response = HttpResponse(wav_of(segment.audio), content_type="audio/wav")
        response["X-QMS-Frame"] = str(segment.audio.first)
    response["X-QMS-Live"] = state
    response["X-QMS-After"] = segment.position
    if segment.why:
        response["X-QMS-Why"] = segment.why
    response["Cache-Control"] = "no-store"
    return response


def _node_gone(listen: LiveListen, segment: Segment) -> bool:
    """No audio came for a call still going on, and its node does not capture now."""
    if segment.audio is not None or segment.state or _call_ended(listen):
        return False
    return not node_capturing(listen.call.node)


def wav_of(audio: LiveAudio) -> bytes:
    """Stereo PCM16 as a WAV file of its own (RIFF, one fmt and one data chunk)."""
    data = len(audio.pcm)
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, audio.rate, audio.rate * 4, 4, 16)
    return header + b"data" + struct.pack("<I", data) + audio.pcm


def _call_ended(listen: LiveListen) -> bool:
    call = Call.objects.filter(pk=listen.call_ref).only("ended_at", "state").first()
    return call is None or call.ended_at is not None or call.state == Call.State.ENDED


def _touch(listen: LiveListen) -> None:
    now = timezone.now()
    if now - listen.last_request_at >= timedelta(seconds=TOUCH_SECONDS):
        LiveListen.objects.filter(pk=listen.pk).update(last_request_at=now)


def _end(listen: LiveListen, how: LiveListen.EndedBy, at: object | None = None) -> bool:
    """The listen ended, once: whoever ends it first writes its end entry."""
    ended_at = at or timezone.now()
    with transaction.atomic():
        ended = LiveListen.objects.filter(pk=listen.pk, ended_at__isnull=True).update(
            ended_at=ended_at, ended_by=how
        )
        if ended:
            listen.ended_at, listen.ended_by = ended_at, how
            _audit(listen, AuditEntry.Action.LISTEN_END, _detail(listen))
    return bool(ended)


def _detail(listen: LiveListen) -> dict:
    detail = {"call": listen.call_ref, "listen": listen.pk}
    detail["started"] = listen.started_at.isoformat()
    if listen.ended_at is not None:
        detail["ended"] = listen.ended_at.isoformat()
        detail["seconds"] = round((listen.ended_at - listen.started_at).total_seconds(), 1)
        detail["ended_by"] = listen.get_ended_by_display()
    return detail


def _audit(listen: LiveListen, action: AuditEntry.Action, detail: dict) -> AuditEntry:
    """Written for the listener, also when beat ends their listen: the user, their address,
    and the call's recording when its row exists already."""
    recording = Recording.objects.filter(signalling_id=listen.call_ref).first()
    return AuditEntry.objects.create(
        user=listen.user,
        username=listen.user.get_username(),
        action=action,
        recording=recording,
        client_ip=listen.client_ip,
        detail=detail,
    )


def _refusal(why: str, status: int) -> JsonResponse:
    return JsonResponse({"detail": why}, status=status)
