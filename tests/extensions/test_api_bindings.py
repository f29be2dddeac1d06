"""GET /api/bindings/ and /api/agents/: what the wire taught QMS, behind a login."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from extensions.models import Agent, Extension, Phone
from extensions.services import apply_binding, assign_line
from integrations.observations import BindingSeen, BindingSource

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def directory() -> None:
    phone = Phone.objects.create(device_name="SEP001122334455", protocol="sccp")
    assign_line(phone, 1, "9001")
    Extension.objects.filter(number="9001").update(agent=Agent.objects.create(name="John"))
    seen = BindingSeen(
        "9001", "10.0.0.11", BindingSource.SCCP, T0, device="SEP001122334455", line_number=1
    )
    apply_binding(seen)
    apply_binding(
        BindingSeen("9001", "10.0.0.13", BindingSource.SIP_REGISTER, T0 + timedelta(hours=1))
    )
    apply_binding(BindingSeen("6175551234", "10.0.0.77", BindingSource.SIP_REGISTER, T0))


def reader(*codenames: str) -> APIClient:
    name = "reader-" + "-".join(codenames)
    user = User.objects.create_user(name, password="a-long-test-password-1")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.django_db
def test_bindings_list_with_every_field(directory: None) -> None:
    response = reader("change_binding").get("/api/bindings/", {"extension": "9001"})
    assert response.status_code == 200
    items = response.json()["results"]
    assert [(item["ip"], item["active"]) for item in items] == [
        ("10.0.0.13", True),
        ("10.0.0.11", False),
    ]
    old = items[1]
    assert old["extension"] == "9001"
    assert (old["source"], old["phone"], old["line"]) == ("sccp", "SEP001122334455", 1)
    assert old["end_reason"] == "moved"
    assert set(old) >= {"first_seen", "last_seen"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"ip": "10.0.0.77"}, {("6175551234", "10.0.0.77")}),
        ({"active": "true"}, {("9001", "10.0.0.13"), ("6175551234", "10.0.0.77")}),
        ({"active": "false"}, {("9001", "10.0.0.11")}),
        ({"extension": "1234"}, set()),
    ],
)
def test_bindings_filters(directory: None, query: dict, expected: set) -> None:
    items = reader("change_binding").get("/api/bindings/", query).json()["results"]
    assert {(item["extension"], item["ip"]) for item in items} == expected


@pytest.mark.django_db
def test_agents_carry_their_current_ip(directory: None) -> None:
    items = reader("change_agent").get("/api/agents/").json()["results"]
    assert items == [
        {
            "id": items[0]["id"],
            "name": "John",
            "ip": "10.0.0.13",
            "ip_updated_at": "2026-11-02T10:00:00Z",
            "extensions": ["9001"],
            "teams": [],
        }
    ]


@pytest.mark.django_db
def test_reading_needs_a_login_and_shows_nothing_without_a_grant(directory: None) -> None:
    assert APIClient().get("/api/bindings/").status_code in (401, 403)
    # Logged in, supervising nobody and holding no write permission: empty lists, as for
    # recordings (recorder/playback/access.py), rather than an error that would say the rows exist.
    assert reader().get("/api/bindings/").json()["count"] == 0
    binding_reader = reader("change_binding")
    assert binding_reader.get("/api/agents/").json()["count"] == 0
    assert binding_reader.get("/api/bindings/").json()["count"] == 3
