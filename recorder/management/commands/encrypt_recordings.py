"""python manage.py encrypt_recordings"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from recorder.media.sealed import SealedFileError
from recorder.recordings.archive import STORAGE_ERRORS
from recorder.recordings.keys import new_recordings_sealing
from recorder.recordings.rekeying import NotGenuine, recordings_to_seal, seal_recording


class Command(BaseCommand):
    help = (
        "Seal (encrypt) every plain recording in place under QMS_RECORDING_KEY_ID, one file "
        "at a time, crash-safely: stop it at any moment and run it again to go on. A file "
        "whose SHA-256 is not its row's is listed and left plain."
    )

    def handle(self, *args: object, **options: object) -> None:
        sealing = new_recordings_sealing()
        if sealing is None:
            raise CommandError("QMS_RECORDING_KEY_ID is not set: there is no key to seal with.")
        sealed = failed = 0
        for recording in recordings_to_seal():
            try:
                seal_recording(recording, sealing)
            except (NotGenuine, SealedFileError, *STORAGE_ERRORS) as error:
                failed += 1
                self.stdout.write(f"recording {recording.pk} ({recording.file.name}): {error}")
                continue
            sealed += 1
        self.stdout.write(f"{sealed:,} recording(s) sealed under {sealing.key_id}")
        if failed:
            raise CommandError(f"{failed} recording(s) could not be sealed: listed above")
