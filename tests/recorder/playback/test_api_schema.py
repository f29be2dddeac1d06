"""The API describes itself: an OpenAPI document at /api/schema/ and a page at /api/docs/."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from openapi_spec_validator import validate
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ENDPOINTS = {
    "/api/recordings/": {"get"},
    "/api/recordings/{id}/": {"get"},
    "/api/recordings/{id}/audio/": {"get"},
    "/api/recordings/{id}/waveform/": {"get"},
    "/api/agents/": {"get"},
    "/api/agents/{id}/": {"get"},
    "/api/teams/": {"get"},
    "/api/teams/{id}/": {"get"},
    "/api/extensions/": {"get"},
    "/api/extensions/{id}/": {"get"},
    "/api/phones/": {"get"},
    "/api/phones/{id}/": {"get"},
    "/api/line-appearances/": {"get", "post"},
    "/api/line-appearances/{id}/": {"get", "delete"},
    "/api/bindings/": {"get"},
    "/api/bindings/{id}/": {"get"},
    "/api/audit/": {"get"},
    "/api/audit/{id}/": {"get"},
    "/api/flags/": {"get"},
    "/api/flags/{id}/": {"get"},
    "/api/notes/{id}/": {"get", "patch", "delete"},
    "/api/recordings/{id}/flags/": {"get", "post"},
    "/api/recordings/{id}/flags/{flag_name}/": {"delete"},
    "/api/recordings/{id}/notes/": {"get", "post"},
    "/api/evaluation-forms/": {"get"},
    "/api/evaluation-forms/{id}/": {"get"},
    "/api/evaluations/": {"get", "post"},
    "/api/evaluations/{id}/": {"get", "patch", "delete"},
    "/api/evaluations/report/": {"get"},
}
# Paths that answer one object, though they hold no id.
NOT_LISTS = {"/api/evaluations/report/"}


@pytest.fixture
def reader() -> User:
    # Any login may read the schema: it describes the API, not anybody's data.
    return User.objects.create_user("schema-reader", password="a-long-test-password-1")


@pytest.fixture
def document(reader: User) -> dict:
    client = APIClient()
    client.force_login(reader)
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def test_the_schema_is_a_valid_openapi_document(document: dict) -> None:
    validate(document)  # Raises on anything the OpenAPI 3.0 specification forbids.
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "QMS API"


def test_the_schema_lists_every_endpoint_with_its_methods(document: dict) -> None:
    assert {path: set(operations) for path, operations in document["paths"].items()} == ENDPOINTS


def test_every_list_documents_its_pagination(document: dict) -> None:
    for path, operations in document["paths"].items():
        if "{id}" in path or path in NOT_LISTS:
            continue
        get = operations["get"]
        assert {"page", "page_size"} <= {p["name"] for p in get["parameters"]}, path
        body = get["responses"]["200"]["content"]["application/json"]["schema"]
        assert {"count", "next", "previous", "results"} <= set(body["properties"]), path


def test_the_recordings_search_documents_its_filters(document: dict) -> None:
    parameters = document["paths"]["/api/recordings/"]["get"]["parameters"]
    assert {p["name"] for p in parameters} >= {
        "extension",
        "agent",
        "team",
        "far_party",
        "since",
        "until",
        "longer_than",
        "shorter_than",
        "direction",
        "status",
        "mos_below",
        "sort",
    }


def test_operations_are_tagged_by_resource(document: dict) -> None:
    tags = {op["tags"][0] for ops in document["paths"].values() for op in ops.values()}
    assert tags == {
        "recordings",
        "agents",
        "teams",
        "extensions",
        "phones",
        "line-appearances",
        "bindings",
        "audit",
        "flags",
        "notes",
        "evaluation-forms",
        "evaluations",
    }


def test_the_evaluations_document_their_filters_and_the_report_its_period(document: dict) -> None:
    evaluations = document["paths"]["/api/evaluations/"]
    assert {p["name"] for p in evaluations["get"]["parameters"]} >= {
        "recording", "agent", "form", "status"}  # fmt: skip
    body = evaluations["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Evaluation"}
    evaluation = document["components"]["schemas"]["Evaluation"]
    assert evaluation["properties"]["score"]["readOnly"] is True  # the server computes it
    report = document["paths"]["/api/evaluations/report/"]["get"]
    assert {p["name"] for p in report["parameters"]} == {"started_from", "started_to", "form"}


def test_the_schema_needs_a_login() -> None:
    assert APIClient().get("/api/schema/").status_code == 403


def test_the_docs_page_shows_every_path_to_a_logged_in_person(reader: User) -> None:
    client = Client()
    client.force_login(reader)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    for path in ENDPOINTS:
        assert f'<h2 id="{path}">{path}</h2>' in html
    assert "far_party" in html and "/api/schema/" in html


def test_the_docs_page_sends_a_stranger_to_log_in() -> None:
    page = Client().get("/api/docs/")
    assert page.status_code == 302
    assert "next=/api/docs/" in page["Location"]


def test_a_token_issued_by_the_command_opens_the_api(reader: User) -> None:
    call_command("drf_create_token", reader.username, stdout=io.StringIO())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=reader).key}")
    assert client.get("/api/recordings/").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    refused = client.get("/api/recordings/")
    # 403, not 401: session authentication comes first and names no WWW-Authenticate scheme.
    assert (refused.status_code, refused.json()) == (403, {"detail": "Invalid token."})
