"""Calls as the signalling described them. Recordings (the audio) build on these."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from typing import NoReturn

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.db import models, router, transaction
from django.db.models import Q
from django.utils import timezone

from extensions.models import Agent, Phone
from integrations.observations import CallDirection, CallProtocol, CallState
from qms.lib.jsontext import TextKeepingEncoder
from recorder.lib import audit_chain as chain


def recordings_storage():
    """Where recordings live: settings.STORAGES["recordings"] (filesystem or S3-compatible)."""
    return storages["recordings"]


class Call(models.Model):
    # The values are the engine's own (integrations.observations), so a snapshot's state,
    # direction and protocol go into the row as they are; Django adds only the labels.
    class Protocol(models.TextChoices):
        SIP = CallProtocol.SIP, "SIP"
        SCCP = CallProtocol.SCCP, "Cisco SCCP"
        LYNC = CallProtocol.LYNC, "Lync / Skype for Business"
        TAPI = CallProtocol.TAPI, "ShoreTel TAPI"
        RTP = CallProtocol.RTP, "RTP without signalling"

    class Direction(models.TextChoices):
        INBOUND = CallDirection.INBOUND, "inbound"
        OUTBOUND = CallDirection.OUTBOUND, "outbound"
        INTERNAL = CallDirection.INTERNAL, "internal"
        UNKNOWN = CallDirection.UNKNOWN, "unknown"

    class State(models.TextChoices):
        SETUP = CallState.SETUP, "setting up"
        RINGING = CallState.RINGING, "ringing"
        CONNECTED = CallState.CONNECTED, "connected"
        HELD = CallState.HELD, "on hold"
        ENDED = CallState.ENDED, "ended"

    protocol = models.CharField(
        max_length=8,
        choices=Protocol,
        help_text="The call system the call was followed through; rtp for RTP of a known "
        "phone without signalling.",
    )
    call_id = models.CharField(
        "call id",
        max_length=255,
        help_text="The SIP Call-ID, or sccp:<device>:<call reference>.",
    )
    started_at = models.DateTimeField(db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=64, blank=True)
    capture_dropped = models.BigIntegerField(
        default=0,
        editable=False,
        help_text="Packets the capture lost (its kernel ring was full) while the call was "
        "live: gaps in its recording may be the recorder's, not the network's.",
    )
    hep_capture_id = models.BigIntegerField(
        "HEP capture id",
        null=True,
        blank=True,
        editable=False,
        help_text="The capture id (HEP chunk 0x000c) of the remote HEP agent whose packet "
        "opened the call; empty for a call captured from a mirror port.",
    )
    state = models.CharField(max_length=10, choices=State, default=State.SETUP)
    direction = models.CharField(max_length=10, choices=Direction, blank=True)
    caller = models.CharField(max_length=128, blank=True)
    caller_name = models.CharField(max_length=128, blank=True)
    callee = models.CharField(max_length=128, blank=True)
    callee_name = models.CharField(max_length=128, blank=True)
    caller_ip = models.GenericIPAddressField("caller IP", null=True, blank=True)
    callee_ip = models.GenericIPAddressField("callee IP", null=True, blank=True)
    extension = models.CharField(
        max_length=128, blank=True, help_text="The recorded phone's extension, as on the wire."
    )
    phone = models.ForeignKey(Phone, null=True, blank=True, on_delete=models.SET_NULL)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL)
    media = models.JSONField(
        default=list,
        blank=True,
        help_text="Media endpoints announced: side, address, port, payload types, mode.",
    )
    node = models.CharField(max_length=100, blank=True, help_text="The capture node.")
    conversation_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="Shared by the segments of one conversation.",
    )

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["protocol", "call_id", "started_at"], name="one_row_per_call"
            )
        ]
        indexes = [models.Index(fields=["extension", "started_at"])]

    def __str__(self) -> str:
        return f"{self.caller or '?'} → {self.callee or '?'} ({self.call_id})"

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


# The columns the recordings list filters and sorts on, carried in its search indexes
# besides each index's own key.
SEARCHED_COLUMNS = ["id", "remote_party", "duration_seconds", "direction", "status", "mos_estimate"]


class Recording(models.Model):
    """The audio of one call (or one segment of a conversation), attributed to a person."""

    class Status(models.TextChoices):
        RECORDING = "recording", "recording"
        COMPLETE = "complete", "complete"
        PARTIAL = "partial", "partial"
        NOT_DECODABLE = "not_decodable", "not decodable"
        FAILED = "failed", "failed"

    # The statuses of a recording whose audio was stored for good (is_stored).
    STORED_STATUSES = frozenset({Status.COMPLETE, Status.PARTIAL, Status.NOT_DECODABLE})

    signalling = models.OneToOneField(
        Call,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="recording",
        help_text="The call as the signalling described it.",
    )
    call_id = models.CharField("call id", max_length=255, db_index=True)
    conversation_id = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="Shared by the segments of one conversation (transfers, conferences).",
    )
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(default=0)
    direction = models.CharField(max_length=10, choices=Call.Direction, blank=True)
    extension = models.CharField(
        max_length=128, blank=True, help_text="The line's extension, as on the wire."
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="recordings"
    )
    phone = models.ForeignKey(
        Phone, null=True, blank=True, on_delete=models.SET_NULL, related_name="recordings"
    )
    remote_party = models.CharField(max_length=128, blank=True)
    remote_name = models.CharField(max_length=128, blank=True)
    local_ip = models.GenericIPAddressField("local IP", null=True, blank=True)
    remote_ip = models.GenericIPAddressField("remote IP", null=True, blank=True)
    codec = models.CharField(max_length=64, blank=True)
    audio_format = models.CharField("format", max_length=8, default="wav")
    file = models.FileField(max_length=500, blank=True, storage=recordings_storage)
    size = models.BigIntegerField(
        default=0, help_text="Bytes of the plain audio (the file a player gets), sealed or not."
    )
    sha256 = models.CharField(
        "SHA-256",
        max_length=64,
        blank=True,
        help_text="Of the plain audio (the file a player gets), sealed or not.",
    )
    encryption_key_id = models.CharField(
        "encryption key id",
        max_length=64,
        blank=True,
        # A default in the database too: a node still on the code before this column
        # (a rolling upgrade) keeps writing its plain recordings' rows.
        default="",
        db_default="",
        help_text="The master key the file's data key is wrapped under; blank: stored plain. "
        "The file's own header is the truth; this says what to rotate.",
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.RECORDING)
    status_detail = models.CharField(max_length=200, blank=True)
    dtmf = models.JSONField(
        "DTMF", default=list, blank=True, help_text="Digits with their time in the call."
    )
    quality = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per direction: packets expected, received, lost, duplicated, out of "
        "order, and RFC 3550 jitter.",
    )
    peaks = models.JSONField(
        null=True,
        blank=True,
        encoder=TextKeepingEncoder,
        help_text="Waveform of both channels for the player, computed once when the "
        "recording is finalised.",
    )
    legal_hold = models.BooleanField(
        default=False, help_text="Held for legal reasons: retention never deletes it."
    )
    mos_estimate = models.FloatField(
        "MOS (estimate)",
        null=True,
        blank=True,
        help_text="Estimated from the ITU-T G.107 E-model; an estimate, not a measurement.",
    )

    class Meta:
        ordering = ["-started_at"]
        # A supervisor's search reads these two alone (index-only): their agents' recordings,
        # and those on their agents' extensions, with every column the list filters on
        # (recorder/playback/listing.py, bench/RESULTS.md "Playback search").
        indexes = [
            models.Index(
                fields=["agent", "started_at"],
                include=["extension", *SEARCHED_COLUMNS],
                name="recording_agent_search",
            ),
            models.Index(
                fields=["extension", "started_at"],
                include=["agent", *SEARCHED_COLUMNS],
                name="recording_extension_search",
            ),
            models.Index(fields=["status", "started_at"]),
        ]
        # Who sees which recording is decided in recorder/playback/access.py (docs/playback.md).
        permissions = [
            ("view_all_recordings", "Can see and play every recording, of every team"),
            ("download_recording", "Can download the audio file of a recording they may play"),
            ("listen_live", "Can listen to the calls in progress of agents they may hear"),
        ]

    def __str__(self) -> str:
        return f"{self.extension or '?'} ↔ {self.remote_party or '?'} at {self.started_at}"

    def is_stored(self) -> bool:
        """Whether the audio of this recording is in storage for good: finishing its call
        again (a finalisation delivered twice, a recovery that finds a log its process did
        not live to remove) has nothing to redo, and must not overwrite it.

        Stored: COMPLETE, PARTIAL or NOT_DECODABLE, with its file present in storage.
        - PARTIAL counts: it was made from the log of a capture that had stopped, and
          nothing appends to that log again (a call that goes on under a restarted capture
          is a new Call row with a log of its own). Finishing it again would give the same
          audio at best; at worst a second attempt that fails would turn a playable
          recording into a failed one.
        - RECORDING does not: its row and its audio are committed together, so a row that
          still says recording never got its audio.
        - FAILED does not: it has no audio, and a new attempt (its spool put back from
          _failed, say) is exactly what may overwrite it.
        - Whatever the status, a file that is gone from storage is not stored.
        """
        return (
            self.status in self.STORED_STATUSES
            and bool(self.file.name)
            and self.file.storage.exists(self.file.name)
        )


# An entry is written as it happens, its time taken just before the insert: one further
# from now than this is back-dated (or forward-dated) and refused. The database triggers
# allow a minute (migration 0006), for clocks of other hosts than the database's.
WRITTEN_NOW_TOLERANCE = timedelta(seconds=5)


class AppendOnlyError(Exception):
    """An attempt to change or delete an audit entry, or to write one that is not new."""


def refuse_update() -> NoReturn:
    raise AppendOnlyError("Audit entries are append-only: they cannot be updated.")


def refuse_delete() -> NoReturn:
    raise AppendOnlyError("Audit entries are append-only: they cannot be deleted.")


class AuditEntryQuerySet(models.QuerySet):
    """Bulk writes that would bypass AuditEntry.save() and delete() are refused too,
    including Django's internal _update() and _raw_delete(). It is the model's base
    manager as well (Meta.base_manager_name), so _base_manager refuses alike."""

    def update(self, **kwargs: object) -> int:
        refuse_update()

    def _update(self, values: object) -> int:
        refuse_update()

    def bulk_update(self, objs: object, fields: object, batch_size: int | None = None) -> int:
        # Refused here, before bulk_update() opens its transaction, so the caller's own
        # transaction is left usable.
        refuse_update()

    def delete(self) -> tuple[int, dict[str, int]]:
        refuse_delete()

    def _raw_delete(self, using: str) -> int:
        refuse_delete()

    def bulk_create(self, objs: Iterable[AuditEntry], *args: object, **kwargs: object) -> list:
        if kwargs.get("update_conflicts"):
            refuse_update()  # An upsert would rewrite the entry it collides with.
        entries = list(objs)
        for entry in entries:
            entry.refuse_unless_written_now()
        # Chained one by one, each in its turn (AuditEntry.save).
        for entry in entries:
            entry.save(using=self.db)
        return entries


class AuditEntry(models.Model):
    """One look at recordings: a play, a seek, a download, an API fetch or a search.

    Append-only three times over: here (save() refuses updates, delete() refuses, and an
    entry whose time is not now), in the admin and API (read-only), and in the database:
    triggers refuse UPDATE and DELETE whatever the client, and an INSERT that is not now
    (PostgreSQL: migrations 0002 and 0006; SQLite: 0006). On PostgreSQL the application's
    role should hold only INSERT and SELECT on the table (docs/deployment.md).
    """

    class Action(models.TextChoices):
        PLAY = "play", "play"
        SEEK = "seek", "seek"
        DOWNLOAD = "download", "download"
        API_AUDIO = "api_audio", "API audio fetch"
        SEARCH = "search", "search"
        VIEW = "view", "view (recording page)"
        PURGE = "purge", "retention purge"
        FLAG = "flag", "flag added"
        UNFLAG = "unflag", "flag removed"
        NOTE = "note", "note added"
        NOTE_EDIT = "note_edit", "note changed"
        NOTE_DELETE = "note_delete", "note deleted"
        # At most 16 characters: widening the column would rebuild the table on SQLite,
        # and with it drop the append-only triggers (migration 0006).
        EVALUATION = "evaluation", "evaluation saved"
        EVALUATION_EDIT = "evaluation_edit", "evaluation changed"
        EVALUATION_DELETE = "evaluation_del", "evaluation deleted"
        LISTEN_START = "listen_start", "live listening started"
        LISTEN_END = "listen_end", "live listening ended"
        INTEGRITY = "integrity", "integrity failure"
        # Parked events cleared in the admin: they held calls' and bindings' numbers.
        CLEAR = "clear", "parked events cleared"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # Led by the (user, at) index below.
        help_text="Whoever did it (none for QMS itself, e.g. the retention purge). A person "
        "with audit entries is deactivated, not deleted.",
    )
    username = models.CharField(
        max_length=150, help_text="The login name at the time, kept should it change."
    )
    action = models.CharField(max_length=16, choices=Action)
    recording = models.ForeignKey(
        Recording,
        null=True,
        blank=True,
        # No database constraint and no cascade: the retention purge may delete the
        # recording, and the entry must outlive it, with its id, unchanged.
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # Led by the (recording, at) index below.
        related_name="+",
    )
    client_ip = models.GenericIPAddressField("client IP", null=True, blank=True)
    detail = models.JSONField(
        default=dict,
        blank=True,
        help_text="The Range asked for, or the filters of a search.",
    )
    # The hash chain (recorder/lib/audit_chain.py): the hash of the entry before, and this
    # entry's own over it and everything above. Empty on entries written before the chain.
    # Null, not "": SQLite adds a nullable column in place, keeping the table's triggers.
    previous_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)  # noqa: DJ001
    entry_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)  # noqa: DJ001

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"
        # Django reaches rows through the base manager too (_base_manager, save()'s UPDATE):
        # make it the append-only one.
        base_manager_name = "objects"
        indexes = [models.Index(fields=["user", "at"]), models.Index(fields=["recording", "at"])]

    def __str__(self) -> str:
        target = f" recording {self.recording_id}" if self.recording_id else ""
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action}{target}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            refuse_update()
        self.refuse_unless_written_now()
        using = kwargs.get("using") or router.db_for_write(AuditEntry, instance=self)
        # The detail as it will read back (tuples as lists), so that its hash holds.
        self.detail = json.loads(json.dumps(self.detail))
        # No savepoint of its own: an entry that cannot be written spoils what wrote it.
        with transaction.atomic(using=using, savepoint=False):
            # The head row, locked until the commit: entries are chained one at a time.
            heads = AuditChain.objects.using(using).select_for_update().filter(pk=1)
            head = heads.first()
            if head is None:  # the trail's first entry: made, then locked like any other
                AuditChain.objects.using(using).get_or_create(pk=1)
                head = heads.first()
            self.previous_hash = head.last_hash
            self.entry_hash = chain.digest_of(self, head.last_hash)
            # Always an INSERT: with a primary key given, Django would try an UPDATE first.
            super().save(*args, **{**kwargs, "force_insert": True})
            AuditChain.objects.using(using).filter(pk=1).update(
                last_hash=self.entry_hash, last_entry_id=self.pk
            )

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        refuse_delete()

    def refuse_unless_written_now(self) -> None:
        """An entry records something happening now; a back-dated one is a forgery."""
        at = self._meta.get_field("at").to_python(self.at)
        if at is not None and timezone.is_naive(at):
            at = timezone.make_aware(at)
        if at is None or abs(timezone.now() - at) > WRITTEN_NOW_TOLERANCE:
            raise AppendOnlyError(
                f"Audit entries are written as they happen: at={self.at} is not now."
            )


class AuditChain(models.Model):
    """The head of the audit trail's hash chain: the hash and id of its last entry. One
    row; whoever writes an entry holds it until the commit (recorder/lib/audit_chain.py)."""

    last_hash = models.CharField(max_length=64, default=chain.GENESIS)
    last_entry_id = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"audit chain head: entry {self.last_entry_id} {self.last_hash[:12]}"


class Flag(models.Model):
    """A mark that administrators define for supervisors to put on recordings, such as
    "complaint", "training" or "escalate" (docs/playback.md, "Flags and notes")."""

    name = models.CharField(max_length=50, unique=True)
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(
        default=True,
        help_text="Offered to supervisors. A retired flag stays on the recordings that have it.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RecordingFlag(models.Model):
    """A flag on a recording: who put it there and when."""

    recording = models.ForeignKey(Recording, on_delete=models.CASCADE, related_name="flaggings")
    flag = models.ForeignKey(Flag, on_delete=models.PROTECT, related_name="flaggings")
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["flag__name"]
        constraints = [
            models.UniqueConstraint(fields=["recording", "flag"], name="one_flag_per_recording")
        ]

    def __str__(self) -> str:
        return f"{self.flag} on recording {self.recording_id}"


NOTE_TEXT_LIMIT = 2000


class RecordingNote(models.Model):
    """A supervisor's note at a time position of a recording."""

    recording = models.ForeignKey(Recording, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_name = models.CharField(max_length=150, help_text="The author's login at the time.")
    position_seconds = models.FloatField(
        "position (s)", help_text="Where in the recording, in seconds from its start."
    )
    text = models.TextField(max_length=NOTE_TEXT_LIMIT)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position_seconds", "pk"]

    def __str__(self) -> str:
        return f"note at {self.position_seconds:.1f} s on recording {self.recording_id}"


# Evaluations (docs/playback.md, "Evaluations"): administrators build the forms in the admin,
# supervisors score recordings with them; the score is computed by recorder/playback/scoring.py.

USED_FORM_MESSAGE = (
    "This form has been used by evaluations, so its sections and questions cannot change "
    "under them. Make a new version of it (the action in the list of forms) and change that."
)


class EvaluationForm(models.Model):
    """A scorecard: sections of weighted questions. Once an evaluation uses it, its
    sections and questions are fixed; a change is made in a new version."""

    name = models.CharField(max_length=100)
    version = models.PositiveSmallIntegerField(default=1, editable=False)
    description = models.TextField(blank=True, max_length=2000)
    active = models.BooleanField(
        default=True,
        help_text="Offered to supervisors. A retired form stays on the evaluations made with it.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"],
                name="one_form_version_per_name",
                violation_error_message="A form of this name and version exists already.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})" if self.version > 1 else self.name

    def is_used(self) -> bool:
        return self.pk is not None and self.evaluations.exists()

    def new_version(self) -> EvaluationForm:
        """A copy of this form, sections and questions, as the next version of its name, to
        be changed in place of this one, which is retired."""
        with transaction.atomic():
            latest = EvaluationForm.objects.filter(name=self.name).aggregate(models.Max("version"))
            copy = EvaluationForm.objects.create(
                name=self.name, version=latest["version__max"] + 1,
                description=self.description, active=self.active,
            )  # fmt: skip
            for section in self.sections.prefetch_related("questions"):
                questions = list(section.questions.all())
                section.pk, section.form = None, copy
                section.save()
                for question in questions:
                    question.pk, question.section = None, section
                    question.save()
            EvaluationForm.objects.filter(pk=self.pk).update(active=False)
        return copy


class FormPart(models.Model):
    """A section or a question: refused, with a sentence, once its form is in use."""

    class Meta:
        abstract = True

    def save(self, *args: object, **kwargs: object) -> None:
        self.refuse_if_form_used()
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        self.refuse_if_form_used()
        return super().delete(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        self.refuse_if_form_used()

    def owning_form(self) -> EvaluationForm | None:
        """The form this part belongs to (FormSection and Question each say how)."""
        raise NotImplementedError

    def refuse_if_form_used(self) -> None:
        form = self.owning_form()
        if form is not None and form.is_used():
            raise ValidationError(USED_FORM_MESSAGE)


class FormSection(FormPart):
    form = models.ForeignKey(EvaluationForm, on_delete=models.CASCADE, related_name="sections")
    order = models.PositiveSmallIntegerField(default=1)
    title = models.CharField(max_length=200)

    class Meta:
        ordering = ["form", "order", "pk"]

    def __str__(self) -> str:
        return self.title

    def owning_form(self) -> EvaluationForm | None:
        return self.form if self.form_id else None


SCALE_LIMIT = 10


class Question(FormPart):
    class Kind(models.TextChoices):
        YES_NO = "yes_no", "yes / no"
        SCALE = "scale", "scale"

    section = models.ForeignKey(FormSection, on_delete=models.CASCADE, related_name="questions")
    order = models.PositiveSmallIntegerField(default=1)
    text = models.CharField(max_length=500)
    kind = models.CharField(max_length=8, choices=Kind, default=Kind.YES_NO)
    scale_max = models.PositiveSmallIntegerField(
        "scale top",
        default=5,
        help_text=f"A scale runs from 1 (worst) to this (best), 2 to {SCALE_LIMIT}.",
    )
    weight = models.FloatField(
        default=1.0, help_text="Its share of the score; 0 counts for nothing but a fail-all."
    )
    allows_na = models.BooleanField(
        "allows N/A",
        default=False,
        help_text="May be answered not applicable: it then counts for nothing.",
    )
    fail_all = models.BooleanField(
        "fail-all",
        default=False,
        help_text="A No (or the lowest point of a scale) makes the whole evaluation score 0.",
    )

    class Meta:
        ordering = ["section__order", "section", "order", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(weight__gte=0) & Q(weight__lte=1000),
                name="question_weight_from_0_to_1000",
                violation_error_message="A weight is a number from 0 to 1000.",
            ),
            models.CheckConstraint(
                condition=Q(kind="yes_no") | Q(scale_max__gte=2, scale_max__lte=SCALE_LIMIT),
                name="question_scale_from_2_to_10",
                violation_error_message=f"A scale's top is from 2 to {SCALE_LIMIT}.",
            ),
        ]

    def __str__(self) -> str:
        return self.text

    def owning_form(self) -> EvaluationForm | None:
        return self.section.form if self.section_id else None

    def top_value(self) -> int:
        """The best answer: Yes (1) or the top of the scale."""
        return 1 if self.kind == self.Kind.YES_NO else self.scale_max

    def bottom_value(self) -> int:
        """The worst answer: No (0) or 1, the one a fail-all question fails on."""
        return 0 if self.kind == self.Kind.YES_NO else 1


class Evaluation(models.Model):
    """A supervisor's scoring of one recording with one form."""

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        SUBMITTED = "submitted", "submitted"

    recording = models.ForeignKey(Recording, on_delete=models.CASCADE, related_name="evaluations")
    form = models.ForeignKey(EvaluationForm, on_delete=models.PROTECT, related_name="evaluations")
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="evaluations",
        help_text="The agent evaluated: the recording's, when the evaluation was made.",
    )
    evaluator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    evaluator_name = models.CharField(max_length=150, help_text="The evaluator's login then.")
    status = models.CharField(max_length=10, choices=Status, default=Status.DRAFT)
    score = models.FloatField(
        null=True,
        blank=True,
        editable=False,
        help_text="Computed by QMS from the answers, 0 to 100; empty when no answer counts.",
    )
    comment = models.TextField(blank=True, max_length=NOTE_TEXT_LIMIT)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["recording", "form", "evaluator"],
                name="one_evaluation_per_evaluator_form_recording",
                violation_error_message="You have evaluated this recording with this form "
                "already: change that evaluation.",
            ),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__gte=0, score__lte=100),
                name="evaluation_score_from_0_to_100",
                violation_error_message="A score is from 0 to 100.",
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(submitted_at__isnull=False),
                name="submitted_evaluation_has_its_time",
                violation_error_message="A submitted evaluation says when it was submitted.",
            ),
        ]
        indexes = [models.Index(fields=["agent", "status"], name="evaluation_agent_status")]
        permissions = [
            ("view_own_evaluations", "Can see the submitted evaluations of their own calls"),
        ]

    def __str__(self) -> str:
        return f"{self.form} of recording {self.recording_id} by {self.evaluator_name}"


class Answer(models.Model):
    """One question's answer: a value (Yes 1 / No 0, or a point of the scale) or N/A."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="answers")
    value = models.PositiveSmallIntegerField(null=True, blank=True)
    not_applicable = models.BooleanField("N/A", default=False)
    comment = models.CharField(max_length=500, blank=True)
    position_seconds = models.FloatField(
        "position (s)", null=True, blank=True, help_text="Where in the recording, if said."
    )

    class Meta:
        ordering = ["question__section__order", "question__order", "question"]
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation", "question"],
                name="one_answer_per_question",
                violation_error_message="A question is answered once in an evaluation.",
            ),
            models.CheckConstraint(
                condition=Q(not_applicable=True, value__isnull=True)
                | Q(not_applicable=False, value__isnull=False, value__lte=SCALE_LIMIT),
                name="answer_is_a_value_or_na",
                violation_error_message="An answer is either a value or N/A.",
            ),
        ]

    def __str__(self) -> str:
        shown = "N/A" if self.not_applicable else self.value
        return f"{self.question}: {shown}"


class LiveListen(models.Model):
    """A supervisor listening to a call in progress (docs/playback.md, "Live listening"):
    from the first segment asked for until they stop, the call ends, or their page stops
    asking. Each start and each end is an audit entry too."""

    class EndedBy(models.TextChoices):
        STOPPED = "stopped", "the listener stopped"
        CALL_ENDED = "call_ended", "the call ended"
        LAPSED = "lapsed", "the listener's page went away"
        NOT_ALLOWED = "not_allowed", "the listener may no longer hear the call"
        UNAVAILABLE = "unavailable", "the capture node could not serve the call's audio"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    call = models.ForeignKey(Call, null=True, on_delete=models.SET_NULL, related_name="+")
    call_ref = models.BigIntegerField(help_text="The call's id, kept should the call go.")
    client_ip = models.GenericIPAddressField("client IP", null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_request_at = models.DateTimeField(
        default=timezone.now, help_text="When the listener's page last asked for audio."
    )
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)
    ended_by = models.CharField(max_length=12, choices=EndedBy, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(
                fields=["last_request_at"],
                condition=models.Q(ended_at__isnull=True),
                name="live_listens_open",
            )
        ]

    def __str__(self) -> str:
        return f"live listen {self.pk} to call {self.call_ref}"
