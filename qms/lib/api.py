"""What every endpoint of the API shares: pagination, the OpenAPI schema and its page.

The schema is DRF's own generator (it needs only `uritemplate`); the page at /api/docs/ is
rendered here from the same document, with no JavaScript and nothing fetched from elsewhere.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from rest_framework import permissions
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONOpenAPIRenderer
from rest_framework.schemas import get_schema_view
from rest_framework.schemas.openapi import AutoSchema, SchemaGenerator

TITLE = "QMS API"
VERSION = "1"
DESCRIPTION = (
    "Recordings, their audio and waveform, their flags, notes and evaluations (with the forms "
    "and the report of scores), the directory (teams, agents, extensions, phones, line "
    "appearances, observed ext/IP bindings) and the audit trail. Session or token "
    "authentication (`Authorization: Token <key>`). Everything is scoped as in the pages: a "
    "supervisor sees their teams' agents and what belongs to them, and a row one may not see "
    "answers 404 like a missing one. Every list is paginated: `page`, `page_size`."
)


class Pagination(PageNumberPagination):
    """Pages of PAGE_SIZE rows by default; a client may ask for up to max_page_size."""

    page_size_query_param = "page_size"
    max_page_size = 500


class QMSAutoSchema(AutoSchema):
    """DRF's inspector, told about the query filters each list documents in
    `query_parameters` and about actions that answer other than JSON."""

    def get_filter_parameters(self, path: str, method: str) -> list[dict]:
        # A list's filters are its `query_parameters`; another action's (such as a report)
        # are under its name in `action_query_parameters`.
        action = getattr(self.view, "action", None)
        declared = getattr(self.view, "action_query_parameters", {}).get(action)
        if declared is None:
            declared = getattr(self.view, "query_parameters", ()) if action == "list" else ()
        return [
            {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
            for name, schema, text in declared
        ]

    def get_operation_id_base(self, path: str, method: str, action: str) -> str:
        # DRF pluralises list names with the `inflection` package; the model's own plural
        # needs no dependency.
        meta = self.view.queryset.model._meta
        name = meta.verbose_name_plural if action == "list" else meta.verbose_name
        return "".join(word.title() for word in str(name).split())

    def get_tags(self, path: str, method: str) -> list[str]:
        # /api/recordings/{id}/ is tagged "recordings", not "api".
        segments = path.strip("/").split("/")
        return [segments[1] if segments[0] == "api" and len(segments) > 1 else segments[0]]

    def get_responses(self, path: str, method: str) -> dict:
        custom = getattr(self.view, "action_responses", {}).get(getattr(self.view, "action", None))
        return custom if custom is not None else super().get_responses(path, method)


def schema_generator() -> SchemaGenerator:
    return SchemaGenerator(title=TITLE, version=VERSION, description=DESCRIPTION)


schema_view = get_schema_view(
    title=TITLE,
    version=VERSION,
    description=DESCRIPTION,
    public=True,
    renderer_classes=[JSONOpenAPIRenderer],
    permission_classes=[permissions.IsAuthenticated],
)


@login_required
@require_GET
def docs_view(request: HttpRequest) -> HttpResponse:
    """The schema as a page a person reads: each path with its operations and parameters."""
    document = schema_generator().get_schema(request=None, public=True)
    return render(
        request,
        "api/docs.html",
        {"document": document, "paths": sorted(readable_paths(document).items())},
    )


def readable_paths(document: dict) -> dict[str, list[dict]]:
    return {
        path: [
            {
                "method": method.upper(),
                "operation_id": operation["operationId"],
                "description": operation.get("description", ""),
                "parameters": operation.get("parameters", []),
            }
            for method, operation in operations.items()
        ]
        for path, operations in document["paths"].items()
    }


# Schema fragments for the apps' extend_schema-style hints.
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
DATE_TIME = {"type": "string", "format": "date-time"}


class ViewModelPermissions(permissions.DjangoModelPermissions):
    """Reading needs the model's view permission too, not only a login."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }
