"""Writing the audit trail: every listen, seek, download, API fetch and search."""

from __future__ import annotations

from django.http import HttpRequest, QueryDict

from qms.http import client_ip
from recorder.models import AuditEntry, Recording

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


def audit_search(request: HttpRequest, query: QueryDict) -> AuditEntry:
    """A listing that reveals metadata, with the filters it was asked for."""
    filters = {
        name: values[0] if len(values) == 1 else values
        for name, values in query.lists()
        if name not in NOT_FILTERS
    }
    return audit(request, AuditEntry.Action.SEARCH, detail={"filters": filters})
