"""python manage.py verify_recordings"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from recorder.models import Recording
from recorder.recordings.integrity import IntegrityState, verify

FAILED = {IntegrityState.MISMATCH, IntegrityState.MISSING, IntegrityState.UNREADABLE}


class Command(BaseCommand):
    help = (
        "Check every stored recording: a sealed file's header and every chunk's tag, and "
        "the SHA-256 of its plain audio against the one stored when it was recorded. Lists "
        "each recording that fails, and exits with status 1 if there is any."
    )

    def handle(self, *args: object, **options: object) -> None:
        rows = Recording.objects.exclude(file="").order_by("pk").iterator(chunk_size=500)
        counts = dict.fromkeys(IntegrityState, 0)
        for recording in rows:
            integrity = verify(recording)
            counts[integrity.state] += 1
            if integrity.state in FAILED:
                why = integrity.problem or integrity.message
                self.stdout.write(f"recording {recording.pk} ({recording.file.name}): {why}")
        summary = ", ".join(f"{count:,} {state}" for state, count in counts.items() if count)
        self.stdout.write(f"recordings: {summary or 'none stored'}")
        failed = sum(counts[state] for state in FAILED)
        if failed:
            raise CommandError(f"{failed} recording(s) do not verify: listed above")
