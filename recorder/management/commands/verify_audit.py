"""python manage.py verify_audit"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from recorder.lib.audit_chain import verify
from recorder.models import AuditChain, AuditEntry

FIELDS = ("pk", "at", "user_id", "username", "action", "recording_id", "client_ip", "detail",
          "previous_hash", "entry_hash")  # fmt: skip


class Command(BaseCommand):
    help = (
        "Check the audit trail's hash chain: every entry's hash, its link to the entry "
        "before, and the chain's head. Lists each entry changed, deleted around or "
        "inserted, and exits with status 1 if there is any."
    )

    def handle(self, *args: object, **options: object) -> None:
        rows = AuditEntry.objects.order_by("pk").values_list(*FIELDS).iterator(chunk_size=2000)
        head = AuditChain.objects.filter(pk=1).values_list("last_hash", "last_entry_id").first()
        verdict = verify(rows, *(head or (None, None)))
        for entry, problem in verdict.problems:
            self.stdout.write(f"entry {entry}: {problem}" if entry is not None else problem)
        before = (
            f"; {verdict.before_chain:,} written before the chain began, not covered"
            if verdict.before_chain
            else ""
        )
        self.stdout.write(f"audit trail: {verdict.entries:,} entries{before}")
        if not verdict.intact:
            raise CommandError(
                f"the audit trail does not verify: {len(verdict.problems)} problem(s) above"
            )
        last = head[1] if head else None
        self.stdout.write(
            f"the chain holds; its head is entry {last}, {verdict.head} (keep this line "
            "somewhere the database's owner cannot write, to check the trail's end later)"
        )
