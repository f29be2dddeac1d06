"""python manage.py import_directory FILE.csv [--dry-run]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from extensions.directory_import import ImportRefused, import_directory


class Command(BaseCommand):
    help = (
        "Import a phone export (device,protocol,ip,static_ip,agent,line1,line2,...) all or "
        "nothing: one bad row rolls everything back and every error is listed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV file exported from the PBX.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate the file without writing anything."
        )

    def handle(self, *args: object, **options: object) -> None:
        path = options["file"]
        try:
            with open(path, newline="", encoding="utf-8-sig") as export:
                report = import_directory(
                    export, dry_run=options["dry_run"], progress=self.progress
                )
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror}.") from None
        except UnicodeDecodeError as error:
            raise CommandError(
                f"{path} is not UTF-8 text (byte {error.start}); export the file as UTF-8 CSV."
            ) from None
        except ImportRefused as refused:
            listed = "\n".join(refused.errors)
            raise CommandError(
                f"{path} has {len(refused.errors)} error(s); nothing was imported.\n{listed}"
            ) from None
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {path} is valid; it would give {report.summary()}.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Imported {path}: {report.summary()}."))

    def progress(self, what: str, done: int, total: int) -> None:
        """A line on stderr now and then for a large file, so a long import shows it is
        working (stdout keeps only the outcome)."""
        self.stderr.write(f"{what}: {done:,} of {total:,}")
