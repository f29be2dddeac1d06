"""Least privilege in the directory (issue 11, finding M1): a supervisor holding the demo's
Supervisors permissions reads only their teams' directory in the admin and the recordings
page, directory health is for telephony admins, and the demo ships both roles."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.test import Client

from extensions.models import Agent, EncryptedSignalling, Extension, Phone, Team
from extensions.services import apply_binding, assign_line
from integrations.observations import BindingSeen, BindingSource
from qms.management.commands.load_demo import (
    SUPERVISOR_PERMISSIONS,
    TELEPHONY_ADMIN_APPS,
)
from tests.recorder.playback.support import PlaybackWorld, build_world, login

SEEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def world() -> PlaybackWorld:
    """Sales (John, Mary) and Support (Carl), each on a phone of their own, each heard."""
    world = build_world()
    for device, number, ip in (
        ("SEP00000000A001", "9001", "10.0.0.11"),
        ("SEP00000000B003", "9003", "10.0.0.13"),
    ):
        assign_line(Phone.objects.create(device_name=device, protocol="sccp"), 1, number)
        apply_binding(BindingSeen(number, ip, BindingSource.SIP_REGISTER, SEEN))
    EncryptedSignalling.objects.create(
        ip="10.0.0.50", protocol="sip-tls", first_seen=SEEN, last_seen=SEEN
    )
    return world


def as_demo_supervisor(user: User) -> Client:
    """`user` with the demo's Supervisors group, as load_demo sets it up, and staff."""
    group, _ = Group.objects.get_or_create(name="Supervisors")
    group.permissions.set(Permission.objects.filter(codename__in=SUPERVISOR_PERMISSIONS))
    user.groups.add(group)
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def as_telephony_admin() -> Client:
    group = Group.objects.create(name="Telephony admins")
    group.permissions.set(
        Permission.objects.filter(content_type__app_label__in=TELEPHONY_ADMIN_APPS)
    )
    user = login("telco")
    user.is_staff = True
    user.save()
    user.groups.add(group)
    client = Client()
    client.force_login(user)
    return client


NAMED_BY = {
    "agent": "name",
    "team": "name",
    "extension": "number",
    "phone": "device_name",
    "binding": "extension_number",
    "seenextension": "number",
    "encryptedsignalling": "ip",
}


def rows(client: Client, model: str) -> set[str]:
    """What an admin changelist lists, by each row's name."""
    response = client.get(f"/admin/extensions/{model}/")
    assert response.status_code == 200
    return {getattr(row, NAMED_BY[model]) for row in response.context["cl"].result_list}


@pytest.mark.django_db
def test_the_admins_directory_lists_show_a_supervisor_only_their_teams(
    world: PlaybackWorld,
) -> None:
    sales_lead = as_demo_supervisor(world.supervisor_a)
    assert rows(sales_lead, "agent") == {"John", "Mary"}
    assert rows(sales_lead, "team") == {"Sales"}
    assert rows(sales_lead, "extension") == {"9001", "9002"}
    assert rows(sales_lead, "phone") == {"SEP00000000A001"}
    assert rows(sales_lead, "binding") == {"9001"}
    assert rows(sales_lead, "seenextension") == {"9001"}
    # Encrypted addresses belong to no team: not even their list opens.
    assert sales_lead.get("/admin/extensions/encryptedsignalling/").status_code == 403
    # Another team's agent is not found, as in the API and the pages.
    carl = sales_lead.get(f"/admin/extensions/agent/{world.carl.pk}/change/")
    assert carl.status_code == 302
    # A telephony admin keeps the whole directory, so reads all of it.
    telco = as_telephony_admin()
    assert rows(telco, "agent") == {"John", "Mary", "Carl"}
    assert rows(telco, "phone") == {"SEP00000000A001", "SEP00000000B003"}
    assert rows(telco, "binding") == {"9001", "9003"}
    assert rows(telco, "encryptedsignalling") == {"10.0.0.50"}


@pytest.mark.django_db
def test_the_admins_team_filter_offers_a_supervisor_only_their_teams(
    world: PlaybackWorld,
) -> None:
    page = as_demo_supervisor(world.supervisor_a).get("/admin/extensions/agent/")
    offered = {
        choice["display"]
        for spec in page.context["cl"].filter_specs
        for choice in spec.choices(page.context["cl"])
    }
    assert "Sales" in offered and "Support" not in offered


@pytest.mark.django_db
def test_the_recordings_page_offers_a_demo_supervisor_only_their_teams(
    world: PlaybackWorld,
) -> None:
    form = as_demo_supervisor(world.supervisor_a).get("/recordings/").context["form"]
    assert {agent.name for agent in form.fields["agent"].queryset} == {"John", "Mary"}
    assert {team.name for team in form.fields["team"].queryset} == {"Sales"}
    assert form.extension_suggestions == ["9001", "9002"]


@pytest.mark.django_db
def test_directory_health_needs_a_directory_permission_not_only_staff(
    world: PlaybackWorld,
) -> None:
    auditor = login("auditor", "view_auditentry")
    auditor.is_staff = True
    auditor.save()
    auditors = Client()
    auditors.force_login(auditor)
    for refused in (auditors, as_demo_supervisor(world.supervisor_a)):
        assert refused.get("/admin/directory-health/").status_code == 403
        assert "/admin/directory-health/" not in refused.get("/admin/").content.decode()
    telco = as_telephony_admin()
    assert telco.get("/admin/directory-health/").status_code == 200
    assert "/admin/directory-health/" in telco.get("/admin/").content.decode()


@pytest.mark.django_db(transaction=True)  # load_demo records through a thread of its own
def test_the_demo_supervisor_reads_only_their_teams_and_telephony_admins_are_a_group() -> None:
    output = io.StringIO()
    call_command("load_demo", stdout=output)
    password = re.search(r"^\s+supervisor\s+password (\S+)", output.getvalue(), re.M).group(1)
    # The demo supervisor supervises every recorded team; made Sales' alone, they must no
    # longer read Support's people.
    Team.objects.get(name="Support").supervisors.clear()
    client = Client()
    assert client.login(username="supervisor", password=password)
    supervised = Agent.objects.filter(teams__supervisors__username="supervisor").distinct()
    listed = {agent["name"] for agent in client.get("/api/agents/").json()["results"]}
    assert listed == set(supervised.values_list("name", flat=True))
    assert listed != set(Agent.objects.values_list("name", flat=True))
    numbers = {row["number"] for row in client.get("/api/extensions/").json()["results"]}
    assert numbers == set(
        Extension.objects.filter(agent__in=supervised).values_list("number", flat=True)
    )
    telephony = Group.objects.get(name="Telephony admins")
    assert telephony.permissions.filter(codename="change_phone").exists()
    assert not Group.objects.get(name="Supervisors").permissions.filter(
        codename__startswith="change_"
    )
