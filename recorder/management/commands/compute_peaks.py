"""python manage.py compute_peaks [--all]: waveforms for recordings that have none.

The recorder computes a recording's waveform once, when it is finalised; this fills in
the recordings made before that, or whose waveform could not be computed then.
"""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import QuerySet

from recorder.models import Recording
from recorder.recordings.waveform import DRAWABLE_FORMATS, UnreadableAudio, peaks_for_recording

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Compute the waveform of every recording with audio that has none yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all", action="store_true", help="Recompute every waveform, not only missing ones."
        )

    def handle(self, *args: object, **options: object) -> None:
        computed = failed = 0
        for recording in self.recordings(bool(options["all"])).iterator(chunk_size=500):
            if self.compute(recording):
                computed += 1
            else:
                failed += 1
        self.stdout.write(f"Waveforms computed: {computed}; audio unreadable: {failed}.")

    @staticmethod
    def recordings(everything: bool) -> QuerySet:
        recordings = Recording.objects.filter(audio_format__in=DRAWABLE_FORMATS).exclude(file="")
        if not everything:
            recordings = recordings.filter(peaks__isnull=True)
        return recordings.only("pk", "file", "audio_format").order_by("pk")

    def compute(self, recording: Recording) -> bool:
        try:
            peaks = peaks_for_recording(recording)
        except (OSError, UnreadableAudio) as error:
            # One missing or damaged file never stops the backfill of the others.
            log.warning("recording %s: no waveform: %s", recording.pk, error)
            self.stderr.write(f"recording {recording.pk}: {error}")
            return False
        Recording.objects.filter(pk=recording.pk).update(peaks=peaks)
        return True
