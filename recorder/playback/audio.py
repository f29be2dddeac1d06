"""Serving a recording's audio to someone recordings_visible_to() has already let through.

The file is opened through the recording's storage by the name stored in its row, never by
anything in the request, so a path from outside cannot reach it. Django streams it, one
HTTP range at a time (recorder/playback/ranges.py), or, with QMS_AUDIO_ACCEL_REDIRECT set, hands the
same stored name to nginx's internal location and nginx streams it (filesystem storage only).
From a bucket only the bytes of the range are fetched, a ranged GET read as it is sent
(recordings/archive.py open_range), never the whole object first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.storage import Storage
from django.core.files.utils import validate_file_name
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from recorder.models import AuditEntry, Recording
from recorder.playback.access import may_download
from recorder.playback.audit import audit
from recorder.playback.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    requested_range,
    starts_past_zero,
)
from recorder.recordings.archive import open_range

AUDIO_TYPES = {"wav": "audio/wav", "opus": "audio/ogg", "rtp": "application/octet-stream"}
CHUNK_BYTES = 64 * 1024
YES = {"1", "true", "yes"}


def audio_response(request: HttpRequest, recording: Recording, via_api: bool) -> HttpResponseBase:
    """The audio of a recording the requester may play; ?download=1 asks for an attachment."""
    download = request.GET.get("download", "").lower() in YES
    if download and not may_download(request.user):
        raise PermissionDenied("Downloading recordings needs a permission of its own.")
    name = stored_name(recording)
    if settings.QMS_AUDIO_ACCEL_REDIRECT:
        return _accel_response(request, recording, name, download, via_api)
    return _streamed_response(request, recording, name, download, via_api)


def stored_name(recording: Recording) -> str:
    if not recording.file:
        raise Http404("This recording has no audio file.")
    # Names are written by the recorder; refuse one that climbs out of the storage anyway.
    return validate_file_name(recording.file.name, allow_relative_path=True)


def _accel_response(
    request: HttpRequest, recording: Recording, name: str, download: bool, via_api: bool
) -> HttpResponse:
    # nginx answers the Range itself; the request's header still tells a seek from a play.
    seek = starts_past_zero(request.headers.get("Range"))
    _audit_fetch(request, recording, download, via_api, seek)
    response = HttpResponse(content_type=_content_type(recording))
    response["X-Accel-Redirect"] = settings.QMS_AUDIO_ACCEL_REDIRECT + quote(name)
    _describe(response, recording, name, download)
    return response


def _streamed_response(
    request: HttpRequest, recording: Recording, name: str, download: bool, via_api: bool
) -> HttpResponseBase:
    storage = recording.file.storage
    try:
        size = storage.size(name)
    except FileNotFoundError:
        raise Http404("The audio file of this recording is missing from storage.") from None
    try:
        byte_range = requested_range(_honoured_range(request, recording), size)
    except RangeNotSatisfiable:
        return _not_satisfiable(size)
    seek = byte_range is not None and byte_range.first > 0
    _audit_fetch(request, recording, download, via_api, seek)
    served = byte_range or ByteRange(0, size - 1)
    # A HEAD is answered without a body, so the file is not opened (nor a GET sent).
    sends_body = served.length > 0 and request.method != "HEAD"
    response = StreamingHttpResponse(
        FileChunks(_opened(storage, name, served), served) if sends_body else iter(()),
        status=206 if byte_range else 200,
        content_type=_content_type(recording),
    )
    response["Content-Length"] = str(served.length)
    if byte_range:
        response["Content-Range"] = byte_range.content_range(size)
    _describe(response, recording, name, download)
    return response


def _opened(storage: Storage, name: str, served: ByteRange) -> IO[bytes]:
    try:
        return open_range(storage, name, served.first, served.last)
    except FileNotFoundError:
        raise Http404("The audio file of this recording is missing from storage.") from None


def _honoured_range(request: HttpRequest, recording: Recording) -> str | None:
    # If-Range (RFC 9110, 13.1.5): the range only holds for the version the client has.
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != _etag(recording):
        return None
    return request.headers.get("Range")


def _not_satisfiable(size: int) -> HttpResponse:
    response = HttpResponse(status=416)
    response["Content-Range"] = f"bytes */{size}"
    response["Accept-Ranges"] = "bytes"
    return response


def _audit_fetch(
    request: HttpRequest, recording: Recording, download: bool, via_api: bool, seek: bool
) -> None:
    if request.method == "HEAD":
        # No audio is sent, but the headers give the file's name, size and hash: a view.
        audit(request, AuditEntry.Action.VIEW, recording, {"method": "HEAD"})
        return
    if download:
        action = AuditEntry.Action.DOWNLOAD
    elif via_api:
        action = AuditEntry.Action.API_AUDIO
    else:
        action = AuditEntry.Action.SEEK if seek else AuditEntry.Action.PLAY
    asked = request.headers.get("Range")
    audit(request, action, recording, {"range": asked} if asked else {})


def _describe(response: HttpResponseBase, recording: Recording, name: str, download: bool) -> None:
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(download, name.rsplit("/", 1)[-1])
    # Call audio is personal: no shared cache may keep it.
    response["Cache-Control"] = "private"
    etag = _etag(recording)
    if etag:
        response["ETag"] = etag


def _etag(recording: Recording) -> str | None:
    return f'"{recording.sha256}"' if recording.sha256 else None


def _content_type(recording: Recording) -> str:
    return AUDIO_TYPES.get(recording.audio_format, "application/octet-stream")


class FileChunks:
    """The bytes of one range of a file opened at its first byte, read as sent; closed
    when the response is."""

    def __init__(self, audio_file: IO[bytes], byte_range: ByteRange) -> None:
        self.audio_file = audio_file
        self.byte_range = byte_range

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.byte_range.length
        while remaining > 0:
            chunk = self.audio_file.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.audio_file.close()
