"""python manage.py rotate_recording_keys --to KEY_ID [--dry-run]"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from recorder.media.sealed import SealedFileError
from recorder.recordings.keys import key_provider
from recorder.recordings.rekeying import recordings_to_rotate, rotate


class Command(BaseCommand):
    help = (
        "Rewrap every sealed recording's data key under the master key KEY_ID (the audio "
        "is not encrypted again). Safe to stop at any moment: run it again to go on. Keep "
        "the old key in QMS_RECORDING_KEYS until it has finished."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", required=True, metavar="KEY_ID", dest="to_key_id")
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")

    def handle(self, *args: object, to_key_id: str, dry_run: bool, **options: object) -> None:
        if not key_provider().knows(to_key_id):
            raise CommandError(f"{to_key_id!r} is not a key id of QMS_RECORDING_KEYS.")
        if dry_run:
            count = sum(1 for _ in recordings_to_rotate(to_key_id))
            self.stdout.write(f"{count:,} recording(s) would be rewrapped under {to_key_id}")
            return
        rotated = failed = 0
        for recording in recordings_to_rotate(to_key_id):
            try:
                rotate(recording, to_key_id)
            except (SealedFileError, OSError) as error:
                failed += 1
                self.stdout.write(f"recording {recording.pk} ({recording.file.name}): {error}")
                continue
            rotated += 1
        self.stdout.write(f"{rotated:,} recording(s) rewrapped under {to_key_id}")
        if to_key_id != settings.QMS_RECORDING_KEY_ID:
            self.stdout.write(f"new recordings are sealed under QMS_RECORDING_KEY_ID, "
                              f"{settings.QMS_RECORDING_KEY_ID or 'not set'}")  # fmt: skip
        if failed:
            raise CommandError(f"{failed} recording(s) could not be rewrapped: listed above")
