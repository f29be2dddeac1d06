"""The TAPI poll, run by celery beat every QMS_TAPI_POLL_SECONDS (or in-process)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from integrations.shoretel.poller import poll_due_bridges

TASK_NAME = "integrations.shoretel.tasks.poll_tapi_bridges"


@shared_task(name=TASK_NAME, acks_late=True, ignore_result=True)
def poll_tapi_bridges() -> dict[str, str]:
    """Poll every enabled TAPI bridge that is due. A bridge's failures are its own state
    (and log lines), never this task's: the next beat simply polls again."""
    return {report.bridge: report.outcome for report in poll_due_bridges(timezone.now())}
