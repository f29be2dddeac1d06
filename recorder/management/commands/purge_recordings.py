"""python manage.py purge_recordings [--dry-run]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from recorder.recordings.retention import purge_expired


class Command(BaseCommand):
    help = (
        "Delete the recordings past their retention (QMS_RETENTION_DAYS, or their team's), "
        "file and row, each with an audit entry; recordings on legal hold are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be deleted; delete nothing."
        )

    def handle(self, *args: object, **options: object) -> None:
        dry_run = options["dry_run"]
        report = purge_expired(timezone.now(), dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for found in report.purged:
            self.stdout.write(
                f"{verb} recording {found.recording_id} of {found.started_at:%Y-%m-%d %H:%M} "
                f"(extension {found.extension or '?'}, kept {found.retention_days} days)"
            )
        total = "would be deleted" if dry_run else "deleted"
        self.stdout.write(f"{len(report.purged)} recording(s) {total}.")
        if report.failures:
            # Every other scope has been purged by now; the exit status tells cron.
            raise CommandError(
                "retention failed for " + "; ".join(report.failures) + " (see the log)."
            )
