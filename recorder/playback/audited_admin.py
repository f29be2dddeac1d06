"""Admin pages whose looks are audited like playback's: the list is a search, audited with
its filters, and an object's page or its history a view of it. Mixed into the read-only
admins of calls and recordings (recorder/admin.py) and of parked events, which hold a
call's or a binding's fields as the wire gave them (recorder/nodes/admin.py)."""

from __future__ import annotations

from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from recorder.models import AuditEntry
from recorder.playback.audit import audit, audit_search


def shown(request: HttpRequest, response: HttpResponseBase) -> bool:
    # A redirect (an object one may not see, a bad filter) or a HEAD shows nothing.
    return request.method == "GET" and response.status_code == 200


class AuditedLooks:
    """For a ModelAdmin: the list is a search; an object's page and its history a view."""

    # Written into a search entry's detail; None for a list of recordings.
    audit_listing: str | None = None
    # The key under which a look at one object names it, when it is not a recording.
    audit_key: str = "object"

    def audit_look(self, request: HttpRequest, obj: Model) -> None:
        audit(request, AuditEntry.Action.VIEW, detail={self.audit_key: obj.pk})

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if shown(request, response):
            audit_search(request, request.GET, self.audit_listing)
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        if shown(request, response):
            self.audit_look(request, response.context_data["original"])
        return response

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        response = super().history_view(request, object_id, extra_context)
        if shown(request, response):
            self.audit_look(request, response.context_data["object"])
        return response
