"""Playback for the pages: the audio of a recording, behind the same access rules as the API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from recorder.access import recordings_visible_to
from recorder.playback import audio_response


@login_required
@require_GET
def recording_audio(request: HttpRequest, pk: int) -> HttpResponseBase:
    """Play (or, with ?download=1 and the permission, download) one recording's audio.

    A recording the person may not see answers 404, exactly as one that does not exist.
    """
    recording = get_object_or_404(recordings_visible_to(request.user), pk=pk)
    return audio_response(request, recording, via_api=False)
