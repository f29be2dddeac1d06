"""Admin pages whose looks are audited like playback's: the list is a search, audited with
its filters, and an object's page or its history a view of it. Mixed into the read-only
admins of calls and recordings (recorder/admin.py) and of parked events, which hold a
call's or a binding's fields as the wire gave them (recorder/nodes/admin.py)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Model, QuerySet
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


class AuditedClears:
    """For a ClearableReadOnlyAdmin whose rows hold what the wire said of calls: clearing
    them (one from its page, or several by the list's action) is audited, in the deletion's
    transaction, with the ids cleared (the first MAX_IDS_NAMED of them) and how many."""

    MAX_IDS_NAMED = 1000
    # What the entry's detail calls the rows.
    audit_cleared: str = "objects"

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        with transaction.atomic():
            self.audit_clear(request, [obj.pk])
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            self.audit_clear(request, sorted(queryset.values_list("pk", flat=True)))
            super().delete_queryset(request, queryset)

    def audit_clear(self, request: HttpRequest, ids: list) -> None:
        detail = {
            "cleared": self.audit_cleared,
            "count": len(ids),
            "ids": ids[: self.MAX_IDS_NAMED],
        }
        audit(request, AuditEntry.Action.CLEAR, detail=detail)
