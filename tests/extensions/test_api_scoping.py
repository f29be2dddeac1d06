"""The directory API sees what the recordings do (issue 6, sections 1 and 4): the matrix of
roles against every directory endpoint, writes under the admin's rules, and pagination."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.test import override_settings
from rest_framework.test import APIClient

from extensions.models import Agent, Binding, Extension, LineAppearance, Phone, Team
from extensions.services import apply_binding, assign_line
from integrations.observations import BindingSeen, BindingSource
from qms.management.commands.load_demo import SUPERVISOR_PERMISSIONS
from tests.recorder.playback.support import PlaybackWorld, build_world, login

pytestmark = pytest.mark.django_db

JOHNS_PHONE = "SEP00000000A001"
MARYS_PHONE = "SEP00000000A002"
CARLS_PHONE = "SEP00000000B003"
DAVES_PHONE = "SEP00000000B004"
SEEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Directory:
    world: PlaybackWorld
    dave: Agent


@pytest.fixture
def directory() -> Directory:
    """The rules' own example (John, Mary and Carl share lines 9001-9003), John also in a
    team nobody here supervises, and Dave of team B alone on his phone with 9004."""
    world = build_world()
    dave = Agent.objects.create(name="Dave")
    dave.teams.add(world.support)
    Extension.objects.create(number="9004", agent=dave)
    world.john.teams.add(Team.objects.create(name="Night shift"))
    example = {
        JOHNS_PHONE: ["9001", "9002", "9003"],
        MARYS_PHONE: ["9002", "9001", "9003"],
        CARLS_PHONE: ["9003", "9002"],
        DAVES_PHONE: ["9004"],
    }
    for device, numbers in example.items():
        phone = Phone.objects.create(device_name=device, protocol=Phone.Protocol.SCCP)
        for line_number, number in enumerate(numbers, start=1):
            assign_line(phone, line_number, number)
    for number, ip in (("9001", "10.0.0.11"), ("9004", "10.0.0.14")):
        apply_binding(BindingSeen(number, ip, BindingSource.SIP_REGISTER, SEEN))
    return Directory(world, dave)


def client_of(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def listed(client: APIClient, endpoint: str, key: str) -> set:
    response = client.get(f"/api/{endpoint}/", {"page_size": 500})
    assert response.status_code == 200, response.content
    return {describe(row, key) for row in response.json()["results"]}


def describe(row: dict, key: str) -> object:
    if key == "line":
        return (row["phone"], row["line_number"], row["extension"])
    if key == "binding":
        return (row["extension"], row["ip"])
    return row[key]


EVERYTHING = {
    "teams": {"Sales", "Support", "Night shift"},
    "agents": {"John", "Mary", "Carl", "Dave"},
    "extensions": {"9001", "9002", "9003", "9004"},
    "phones": {JOHNS_PHONE, MARYS_PHONE, CARLS_PHONE, DAVES_PHONE},
    "line-appearances": {
        (JOHNS_PHONE, 1, "9001"),
        (JOHNS_PHONE, 2, "9002"),
        (JOHNS_PHONE, 3, "9003"),
        (MARYS_PHONE, 1, "9002"),
        (MARYS_PHONE, 2, "9001"),
        (MARYS_PHONE, 3, "9003"),
        (CARLS_PHONE, 1, "9003"),
        (CARLS_PHONE, 2, "9002"),
        (DAVES_PHONE, 1, "9004"),
    },
    "bindings": {("9001", "10.0.0.11"), ("9004", "10.0.0.14")},
}
TEAM_A = {
    "teams": {"Sales"},
    "agents": {"John", "Mary"},
    "extensions": {"9001", "9002"},
    # Every phone a line of John's or Mary's rings on; not Dave's.
    "phones": {JOHNS_PHONE, MARYS_PHONE, CARLS_PHONE},
    "line-appearances": {
        (JOHNS_PHONE, 1, "9001"),
        (JOHNS_PHONE, 2, "9002"),
        (MARYS_PHONE, 1, "9002"),
        (MARYS_PHONE, 2, "9001"),
        (CARLS_PHONE, 2, "9002"),
    },
    "bindings": {("9001", "10.0.0.11")},
}
TEAM_B = {
    "teams": {"Support"},
    "agents": {"Carl", "Dave"},
    "extensions": {"9003", "9004"},
    "phones": {JOHNS_PHONE, MARYS_PHONE, CARLS_PHONE, DAVES_PHONE},
    "line-appearances": {
        (JOHNS_PHONE, 3, "9003"),
        (MARYS_PHONE, 3, "9003"),
        (CARLS_PHONE, 1, "9003"),
        (DAVES_PHONE, 1, "9004"),
    },
    "bindings": {("9004", "10.0.0.14")},
}
JOHN_HIMSELF = {
    "teams": {"Sales", "Night shift"},
    "agents": {"John"},
    "extensions": {"9001"},
    "phones": {JOHNS_PHONE, MARYS_PHONE},
    "line-appearances": {(JOHNS_PHONE, 1, "9001"), (MARYS_PHONE, 2, "9001")},
    "bindings": {("9001", "10.0.0.11")},
}
NOTHING = {endpoint: set() for endpoint in EVERYTHING}
KEYS = {
    "teams": "name",
    "agents": "name",
    "extensions": "number",
    "phones": "device_name",
    "line-appearances": "line",
    "bindings": "binding",
}

MATRIX = [
    ("admin", False, EVERYTHING),
    ("supervisor_a", False, TEAM_A),
    ("supervisor_b", False, TEAM_B),
    ("agent", True, JOHN_HIMSELF),
    ("agent", False, NOTHING),
    ("outsider", True, NOTHING),
]


@pytest.mark.parametrize(("role", "agents_hear_own", "expected"), MATRIX)
@pytest.mark.parametrize("endpoint", list(KEYS))
def test_each_role_lists_exactly_its_scope(
    directory: Directory, role: str, agents_hear_own: bool, expected: dict, endpoint: str
) -> None:
    with override_settings(QMS_AGENTS_HEAR_OWN=agents_hear_own):
        client = client_of(getattr(directory.world, role))
        assert listed(client, endpoint, KEYS[endpoint]) == expected[endpoint]


def team_b_only_rows(directory: Directory) -> dict[str, int]:
    """One row of each endpoint that only team B's supervisor (and the admin) may see."""
    return {
        "teams": directory.world.support.pk,
        "agents": directory.world.carl.pk,
        "extensions": Extension.objects.get(number="9003").pk,
        "phones": Phone.objects.get(device_name=DAVES_PHONE).pk,
        "line-appearances": LineAppearance.objects.get(phone__device_name=DAVES_PHONE).pk,
        "bindings": Binding.objects.get(extension_number="9004").pk,
    }


@pytest.mark.parametrize(
    ("role", "status"),
    [("admin", 200), ("supervisor_b", 200), ("supervisor_a", 404), ("outsider", 404)],
)
def test_a_row_outside_ones_scope_answers_404_like_a_missing_one(
    directory: Directory, role: str, status: int
) -> None:
    client = client_of(getattr(directory.world, role))
    for endpoint, pk in team_b_only_rows(directory).items():
        assert client.get(f"/api/{endpoint}/{pk}/").status_code == status, endpoint
        missing = client.get(f"/api/{endpoint}/999999/")
        assert missing.status_code == 404, endpoint


@pytest.mark.parametrize("endpoint", [*KEYS, "recordings", "audit"])
def test_anonymous_callers_are_refused_everywhere(directory: Directory, endpoint: str) -> None:
    assert APIClient().get(f"/api/{endpoint}/").status_code == 403
    detail_pk = team_b_only_rows(directory).get(endpoint, 1)
    assert APIClient().get(f"/api/{endpoint}/{detail_pk}/").status_code == 403


def test_the_audit_trail_is_for_admins_only(directory: Directory) -> None:
    assert client_of(directory.world.admin).get("/api/audit/").status_code == 200
    for role in ("supervisor_a", "supervisor_b", "agent", "outsider"):
        response = client_of(getattr(directory.world, role)).get("/api/audit/")
        assert response.status_code == 403, role


def test_a_telephony_admin_with_a_write_permission_reads_every_row(
    directory: Directory,
) -> None:
    clerk = client_of(login("telephony", "change_agent", "delete_phone"))
    assert listed(clerk, "agents", "name") == EVERYTHING["agents"]
    assert listed(clerk, "phones", "device_name") == EVERYTHING["phones"]
    assert listed(clerk, "extensions", "number") == set()  # no write permission on them


@pytest.mark.parametrize("endpoint", list(KEYS))
def test_a_supervisor_with_the_demo_roles_view_permissions_still_lists_only_their_teams(
    directory: Directory, endpoint: str
) -> None:
    # The view permissions open the admin's directory pages; they are no grant of rows
    # (finding M1: the demo's Supervisors group once showed every team's directory).
    supervisor = directory.world.supervisor_a
    supervisor.user_permissions.set(Permission.objects.filter(codename__in=SUPERVISOR_PERMISSIONS))
    assert listed(client_of(supervisor), endpoint, KEYS[endpoint]) == TEAM_A[endpoint]


def test_an_auditor_who_hears_every_recording_reads_the_whole_directory(
    directory: Directory,
) -> None:
    auditor = client_of(login("auditor", "view_all_recordings"))
    for endpoint, key in KEYS.items():
        assert listed(auditor, endpoint, key) == EVERYTHING[endpoint], endpoint


# What a row shows of others is scoped too. ---------------------------------------------------


def test_an_agent_shows_only_the_teams_one_may_see(directory: Directory) -> None:
    john = f"/api/agents/{directory.world.john.pk}/"
    assert client_of(directory.world.supervisor_a).get(john).json()["teams"] == ["Sales"]
    assert client_of(directory.world.admin).get(john).json()["teams"] == ["Night shift", "Sales"]


def test_a_phone_shows_only_the_lines_one_may_see(directory: Directory) -> None:
    carls_phone = Phone.objects.get(device_name=CARLS_PHONE).pk
    seen_by_a = client_of(directory.world.supervisor_a).get(f"/api/phones/{carls_phone}/")
    assert seen_by_a.json()["lines"] == [{"line_number": 2, "extension": "9002"}]
    seen_by_b = client_of(directory.world.supervisor_b).get(f"/api/phones/{carls_phone}/")
    assert seen_by_b.json()["lines"] == [{"line_number": 1, "extension": "9003"}]


def test_a_team_shows_its_agents_and_an_extension_where_it_rings(directory: Directory) -> None:
    client = client_of(directory.world.supervisor_a)
    sales = client.get(f"/api/teams/{directory.world.sales.pk}/").json()
    assert sales["agents"] == ["John", "Mary"]
    [mine] = client.get("/api/extensions/", {"number": "9002"}).json()["results"]
    assert mine["agent"] == "Mary"
    assert mine["appearances"] == [
        {"phone": MARYS_PHONE, "line_number": 1},
        {"phone": JOHNS_PHONE, "line_number": 2},
        {"phone": CARLS_PHONE, "line_number": 2},
    ]


def test_filters_narrow_the_scope_and_never_widen_it(directory: Directory) -> None:
    client = client_of(directory.world.supervisor_a)
    assert client.get("/api/agents/", {"team": "Support"}).json()["count"] == 0
    assert client.get("/api/agents/", {"team": "Sales"}).json()["count"] == 2
    assert client.get("/api/extensions/", {"number": "9003"}).json()["count"] == 0
    assert client.get("/api/line-appearances/", {"phone": DAVES_PHONE}).json()["count"] == 0
    assert client.get("/api/bindings/", {"ip": "10.0.0.14"}).json()["count"] == 0
    refused = client.get("/api/phones/", {"ip": "not-an-address"})
    assert refused.status_code == 400 and "ip" in refused.json()


# Writes: line appearances under the admin's rules; the rest is read-only. --------------------


@pytest.fixture
def telephony_admin() -> APIClient:
    return client_of(
        login("lines-admin", "view_lineappearance", "add_lineappearance", "delete_lineappearance")
    )


def test_the_rules_example_is_accepted_line_by_line(telephony_admin: APIClient) -> None:
    for device in (JOHNS_PHONE, MARYS_PHONE, CARLS_PHONE):
        Phone.objects.create(device_name=device, protocol=Phone.Protocol.SCCP)
    example = [
        (JOHNS_PHONE, 1, "9001"),
        (JOHNS_PHONE, 2, "9002"),
        (JOHNS_PHONE, 3, "9003"),
        (MARYS_PHONE, 1, "9002"),
        (MARYS_PHONE, 2, "9001"),
        (MARYS_PHONE, 3, "9003"),
        (CARLS_PHONE, 1, "9003"),
        (CARLS_PHONE, 2, "9002"),
    ]
    for phone, line_number, number in example:
        payload = {"phone": phone, "line_number": line_number, "extension": number}
        response = telephony_admin.post("/api/line-appearances/", payload, format="json")
        assert response.status_code == 201, (payload, response.json())
    assert LineAppearance.objects.count() == 8


@pytest.mark.parametrize(
    ("number", "holder"), [("9001", JOHNS_PHONE), ("9002", MARYS_PHONE), ("9003", CARLS_PHONE)]
)
def test_a_second_line_one_is_refused_naming_the_phone_that_has_it(
    directory: Directory, telephony_admin: APIClient, number: str, holder: str
) -> None:
    further = Phone.objects.create(device_name="SEP00000000C005", protocol=Phone.Protocol.SCCP)
    payload = {"phone": further.device_name, "line_number": 1, "extension": number}

    response = telephony_admin.post("/api/line-appearances/", payload, format="json")

    assert response.status_code == 400
    [message] = response.json()["detail"]
    assert message.startswith(f"Extension {number} is already line 1 on phone {holder}")
    assert "rule R2" in message
    assert not LineAppearance.objects.filter(phone=further).exists()


def test_the_same_extension_as_a_higher_line_is_accepted(
    directory: Directory, telephony_admin: APIClient
) -> None:
    payload = {"phone": DAVES_PHONE, "line_number": 2, "extension": "9001"}
    response = telephony_admin.post("/api/line-appearances/", payload, format="json")
    assert response.status_code == 201, response.json()


def test_deleting_a_line_needs_the_delete_permission(
    directory: Directory, telephony_admin: APIClient
) -> None:
    line = LineAppearance.objects.get(phone__device_name=DAVES_PHONE)
    supervisor = client_of(directory.world.supervisor_b)  # Sees the line; may not delete it.
    assert supervisor.get(f"/api/line-appearances/{line.pk}/").status_code == 200
    assert supervisor.delete(f"/api/line-appearances/{line.pk}/").status_code == 403
    assert telephony_admin.delete(f"/api/line-appearances/{line.pk}/").status_code == 204
    assert not LineAppearance.objects.filter(pk=line.pk).exists()


def test_a_supervisor_cannot_add_lines(directory: Directory) -> None:
    payload = {"phone": DAVES_PHONE, "line_number": 2, "extension": "9003"}
    response = client_of(directory.world.supervisor_b).post(
        "/api/line-appearances/", payload, format="json"
    )
    assert response.status_code == 403
    assert LineAppearance.objects.filter(phone__device_name=DAVES_PHONE).count() == 1


@pytest.mark.parametrize("endpoint", ["teams", "agents", "extensions", "phones", "bindings"])
def test_the_rest_of_the_directory_is_read_only(directory: Directory, endpoint: str) -> None:
    admin = client_of(directory.world.admin)
    assert admin.post(f"/api/{endpoint}/", {}, format="json").status_code == 405
    pk = team_b_only_rows(directory)[endpoint]
    assert admin.delete(f"/api/{endpoint}/{pk}/").status_code == 405


# Pagination on every list. --------------------------------------------------------------------

LISTS = ["recordings", "agents", "teams", "extensions", "phones", "line-appearances", "bindings"]


@pytest.mark.parametrize("endpoint", [*LISTS, "audit"])
def test_every_list_is_paginated(directory: Directory, endpoint: str) -> None:
    admin = client_of(directory.world.admin)
    admin.get("/api/recordings/")  # Two searches, so the audit trail has two entries.
    admin.get("/api/recordings/")

    first = admin.get(f"/api/{endpoint}/", {"page_size": 1}).json()

    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] >= 2 and len(first["results"]) == 1
    assert first["previous"] is None and "page=2" in first["next"]
    second = admin.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["results"] != first["results"]


def test_a_page_is_never_larger_than_the_maximum(directory: Directory) -> None:
    Team.objects.bulk_create(Team(name=f"Team {n:03d}") for n in range(600))
    admin = client_of(directory.world.admin)

    asked_for_all = admin.get("/api/teams/", {"page_size": 10_000}).json()
    by_default = admin.get("/api/teams/").json()

    assert asked_for_all["count"] == 603
    assert len(asked_for_all["results"]) == 500
    assert len(by_default["results"]) == 100
