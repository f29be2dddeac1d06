"""Serving a recording's audio to someone recordings_visible_to() has already let through.

The file is opened through the recording's storage by the name stored in its row, never by
anything in the request, so a path from outside cannot reach it. Django streams it, one
HTTP range at a time (recorder/playback/ranges.py), or, with QMS_AUDIO_ACCEL_REDIRECT set, hands the
same stored name to nginx's internal location and nginx streams it (filesystem storage only).
From a bucket only the bytes of the range are fetched, a ranged GET read as it is sent
(recordings/archive.py open_range), never the whole object first.

A sealed (encrypted) recording is decrypted here, the chunks covering the range alone
(recordings/encryption.py): the Range is over the plain file, which is what the browser
gets. nginx cannot decrypt, so with QMS_AUDIO_ACCEL_REDIRECT set a sealed recording is
still streamed by Django. The first chunk is opened before the response starts, so a
tampered one answers 409 with a sentence; a later one ends the stream where it is. Both
are logged and written to the audit trail, and no byte of a chunk whose tag fails is sent.
"""

from __future__ import annotations

import logging
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

from recorder.media.sealed import SealedFileError, UnknownKey
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
from recorder.recordings.encryption import StoredAudio, stored_audio

log = logging.getLogger(__name__)

AUDIO_TYPES = {"wav": "audio/wav", "opus": "audio/ogg", "rtp": "application/octet-stream"}
CHUNK_BYTES = 64 * 1024
YES = {"1", "true", "yes"}


def audio_response(request: HttpRequest, recording: Recording, via_api: bool) -> HttpResponseBase:
    """The audio of a recording the requester may play; ?download=1 asks for an attachment."""
    download = request.GET.get("download", "").lower() in YES
    if download and not may_download(request.user):
        raise PermissionDenied("Downloading recordings needs a permission of its own.")
    name = stored_name(recording)
    try:
        audio = stored_audio(recording)
    except FileNotFoundError:
        if settings.QMS_AUDIO_ACCEL_REDIRECT:
            # nginx answers for a file that is not there, as for any other.
            return _accel_response(request, recording, name, download, via_api)
        raise Http404("The audio file of this recording is missing from storage.") from None
    except SealedFileError as error:
        return unreadable_audio(request, recording, error)
    if settings.QMS_AUDIO_ACCEL_REDIRECT and not audio.sealed:
        return _accel_response(request, recording, name, download, via_api)
    return _streamed_response(request, recording, audio, download, via_api)


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
    request: HttpRequest, recording: Recording, audio: StoredAudio, download: bool, via_api: bool
) -> HttpResponseBase:
    storage, name, size = audio.storage, audio.name, audio.plain_size
    try:
        byte_range = requested_range(_honoured_range(request, recording), size)
    except RangeNotSatisfiable:
        return _not_satisfiable(size)
    seek = byte_range is not None and byte_range.first > 0
    _audit_fetch(request, recording, download, via_api, seek)
    served = byte_range or ByteRange(0, size - 1)
    # A HEAD is answered without a body, so the file is not opened (nor a GET sent).
    sends_body = served.length > 0 and request.method != "HEAD"
    if sends_body and audio.sealed:
        try:
            content = SealedChunks(request, recording, audio, served)
        except SealedFileError as error:
            return unreadable_audio(request, recording, error)
    elif sends_body:
        content = FileChunks(_opened(storage, name, served), served)
    else:
        content = iter(())
    response = StreamingHttpResponse(
        content,
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


class SealedChunks:
    """The plain bytes of one range of a sealed file, decrypted chunk by chunk as sent.
    The first chunk is opened when this is made, before the response starts, so that a
    tamper there is an error page; a later chunk that fails ends the stream, logged and
    audited (a 206 already on its way cannot change its status)."""

    def __init__(
        self, request: HttpRequest, recording: Recording, audio: StoredAudio, served: ByteRange
    ) -> None:
        self.request, self.recording = request, recording
        self.blocks = audio.plain_bytes(served.first, served.last)
        try:
            self.first = next(self.blocks)
        except SealedFileError:
            self.blocks.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        try:
            yield from self.blocks
        except SealedFileError as error:
            log.error("recording %s: playback stopped: %s", self.recording.pk, error)
            _audit_failure(self.request, self.recording, error)

    def close(self) -> None:
        self.blocks.close()


def unreadable_audio(
    request: HttpRequest, recording: Recording, error: SealedFileError
) -> HttpResponse:
    """A sealed recording that cannot be opened: an error page that says why, an audit
    entry, and a log line; never a byte of its audio."""
    log.error("recording %s cannot be played: %s", recording.pk, error)
    _audit_failure(request, recording, error)
    # A key this server lacks is its own configuration's fault (503); a file that fails
    # its tags is in a state that playing cannot resolve (409).
    status = 503 if isinstance(error, UnknownKey) else 409
    sentence = f"This recording cannot be played: {error}. No audio of it was sent."
    return HttpResponse(sentence, status=status, content_type="text/plain; charset=utf-8")


def _audit_failure(request: HttpRequest, recording: Recording, error: SealedFileError) -> None:
    detail = {"error": str(error)}
    if request.headers.get("Range"):
        detail["range"] = request.headers["Range"]
    audit(request, AuditEntry.Action.INTEGRITY, recording, detail)
