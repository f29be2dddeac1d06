"""Flags and notes on recordings: the one place that changes them, for the pages and the
API alike (docs/playback.md, "Flags and notes").

A supervisor marks only recordings they may see (recorder/playback/access.py decides that
before these are called), with the permission to: recorder.add_recordingflag to flag and
unflag, recorder.add_recordingnote to write notes. A note is changed or deleted by its
author, or by a holder of recorder.change_recordingnote / delete_recordingnote. Every
change is an audit entry.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from integrations.bounds import clean_text
from recorder.models import (
    NOTE_TEXT_LIMIT,
    AuditEntry,
    Flag,
    Recording,
    RecordingFlag,
    RecordingNote,
)
from recorder.playback.audit import audit


def may_flag(user) -> bool:
    return bool(user.is_active and user.has_perm("recorder.add_recordingflag"))


def may_note(user) -> bool:
    return bool(user.is_active and user.has_perm("recorder.add_recordingnote"))


def may_change_note(user, note: RecordingNote, action: str = "change") -> bool:
    own = note.author_id is not None and note.author_id == user.pk
    return bool(user.is_active and (own or user.has_perm(f"recorder.{action}_recordingnote")))


def add_flag(request: HttpRequest, recording: Recording, flag: Flag) -> bool:
    """Put `flag` on `recording`; False when it was there already (nothing audited)."""
    if not may_flag(request.user):
        raise PermissionDenied("You may not flag recordings.")
    if not flag.active:
        raise ValidationError("This flag is retired: it is no longer put on recordings.")
    try:
        with transaction.atomic():
            RecordingFlag.objects.create(recording=recording, flag=flag, by=request.user)
            audit(request, AuditEntry.Action.FLAG, recording, {"flag": flag.name})
    except IntegrityError:
        return False
    return True


def remove_flag(request: HttpRequest, recording: Recording, flag: Flag) -> bool:
    """Take `flag` off `recording`; False when it was not on it (nothing audited)."""
    if not may_flag(request.user):
        raise PermissionDenied("You may not flag recordings.")
    with transaction.atomic():
        removed, _ = RecordingFlag.objects.filter(recording=recording, flag=flag).delete()
        if removed:
            audit(request, AuditEntry.Action.UNFLAG, recording, {"flag": flag.name})
    return bool(removed)


def checked_note(recording: Recording, position: object, text: object) -> tuple[float, str]:
    """A note's position and text as given, or ValidationError with the sentence."""
    try:
        seconds = float(position)
    except (TypeError, ValueError):
        raise ValidationError("The position is a number of seconds.") from None
    length = recording.duration_seconds or 0.0
    if not 0.0 <= seconds <= max(length, 0.0) + 0.5 or seconds != seconds:
        raise ValidationError(
            f"The position is a time in the recording: 0 to {length:.1f} seconds."
        )
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("A note needs some text.")
    if len(text) > NOTE_TEXT_LIMIT:
        raise ValidationError(f"A note holds at most {NOTE_TEXT_LIMIT} characters.")
    return round(min(seconds, length) if length else seconds, 3), clean_text(
        text.strip(), NOTE_TEXT_LIMIT
    )


def add_note(request: HttpRequest, recording: Recording, position: object, text: object):
    if not may_note(request.user):
        raise PermissionDenied("You may not write notes on recordings.")
    seconds, body = checked_note(recording, position, text)
    with transaction.atomic():
        note = RecordingNote.objects.create(
            recording=recording, author=request.user, author_name=request.user.get_username(),
            position_seconds=seconds, text=body,
        )  # fmt: skip
        audit(request, AuditEntry.Action.NOTE, recording,
              {"note": note.pk, "position": seconds, "text": body})  # fmt: skip
    return note


def edit_note(
    request: HttpRequest, note: RecordingNote, position: object = None, text: object = None
) -> RecordingNote:
    if not may_change_note(request.user, note):
        raise PermissionDenied("Only its author may change this note.")
    seconds, body = checked_note(
        note.recording,
        note.position_seconds if position is None else position,
        note.text if text is None else text,
    )
    with transaction.atomic():
        before = {"position": note.position_seconds, "text": note.text}
        note.position_seconds, note.text, note.updated_at = seconds, body, timezone.now()
        note.save(update_fields=["position_seconds", "text", "updated_at"])
        audit(request, AuditEntry.Action.NOTE_EDIT, note.recording,
              {"note": note.pk, "before": before, "position": seconds, "text": body})  # fmt: skip
    return note


def delete_note(request: HttpRequest, note: RecordingNote) -> None:
    if not may_change_note(request.user, note, "delete"):
        raise PermissionDenied("Only its author may delete this note.")
    with transaction.atomic():
        audit(request, AuditEntry.Action.NOTE_DELETE, note.recording,
              {"note": note.pk, "position": note.position_seconds, "text": note.text})  # fmt: skip
        note.delete()
