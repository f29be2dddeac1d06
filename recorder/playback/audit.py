"""Writing the audit trail: every listen, seek, download, API fetch, search and look at a
call's or a recording's metadata (docs/playback.md, "Audit")."""

from __future__ import annotations

from django.http import HttpRequest, QueryDict

from qms.lib.http import client_ip
from recorder.models import AuditEntry, Call, Recording

# Query parameters that page through results rather than choose them.
NOT_FILTERS = {"page", "page_size", "format"}


def audit(
    request: HttpRequest,
    action: AuditEntry.Action,
    recording: Recording | None = None,
    detail: dict | None = None,
) -> AuditEntry:
    user = request.user
    return AuditEntry.objects.create(
        user=user,
        username=user.get_username(),
        action=action,
        recording=recording,
        client_ip=client_ip(request),
        detail=detail or {},
    )


def audit_search(request: HttpRequest, query: QueryDict, listing: str | None = None) -> AuditEntry:
    """A listing that reveals metadata, with the filters it was asked for.

    `listing` names a list of calls rather than recordings ("calls", "live calls"); a
    recordings list is written without it, as it always was.
    """
    filters = {
        name: values[0] if len(values) == 1 else values
        for name, values in query.lists()
        if name not in NOT_FILTERS
    }
    detail: dict = {"filters": filters}
    if listing is not None:
        detail["listing"] = listing
    return audit(request, AuditEntry.Action.SEARCH, detail=detail)


def audit_call_view(request: HttpRequest, call: Call) -> AuditEntry:
    """A look at one call's signalling (who called whom, when, from which address): a view
    of its recording when it has one, and always with the call's id."""
    recording = Recording.objects.filter(signalling=call).first()
    return audit(request, AuditEntry.Action.VIEW, recording, {"call": call.pk})
