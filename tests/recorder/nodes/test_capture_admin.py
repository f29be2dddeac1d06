"""Capture interfaces in the admin: configured there, their live state shown read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from recorder.nodes.models import CaptureInterface

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "x" * 20))
    return client


def test_the_list_shows_each_interface_with_its_live_state(
    admin_client_logged_in: Client, settings
) -> None:
    settings.QMS_CAPTURE_LEASE_SECONDS = 60
    now = timezone.now()
    CaptureInterface.objects.create(
        node="node-a", interface="eth1", running=True, running_since=now - timedelta(hours=2),
        packets_per_second=1234.5, kernel_drops=17, live_calls=42, outbox_backlog=3,
        heartbeat_at=now,
    )  # fmt: skip
    CaptureInterface.objects.create(
        node="node-b", interface="eth2", running=True, heartbeat_at=now - timedelta(minutes=5)
    )

    page = admin_client_logged_in.get("/admin/capture/captureinterface/").content.decode()

    assert "eth1" in page and "node-a" in page
    assert "1234.5" in page and ">17<" in page and ">42<" in page
    # A heartbeat older than a lease is not believed: eth2 is not shown capturing.
    assert page.count('alt="True"') == 3  # eth1's enabled and capturing, eth2's enabled
    assert page.count('alt="False"') == 1


def test_an_interface_is_configured_in_the_admin_and_its_live_state_is_read_only(
    admin_client_logged_in: Client,
) -> None:
    response = admin_client_logged_in.post(
        "/admin/capture/captureinterface/add/",
        {"node": "node-a", "kind": "interface", "interface": "eth1",
         "bpf_filter": "udp or tcp port 2000", "enabled": "on", "running": "on",
         "live_calls": "99"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]

    (interface,) = CaptureInterface.objects.all()
    assert (interface.node, interface.interface, interface.bpf_filter, interface.enabled) == (
        "node-a",
        "eth1",
        "udp or tcp port 2000",
        True,
    )
    assert (interface.running, interface.live_calls) == (False, 0)


def test_a_node_name_that_cannot_name_a_queue_is_refused(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.post(
        "/admin/capture/captureinterface/add/",
        {"node": "node a/b", "kind": "interface", "interface": "eth1", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "A node name is letters, digits" in response.content.decode()
    assert not CaptureInterface.objects.exists()


def test_a_hep_listener_is_configured_in_the_admin_by_its_address(
    admin_client_logged_in: Client,
) -> None:
    response = admin_client_logged_in.post(
        "/admin/capture/captureinterface/add/",
        {"node": "node-a", "kind": "hep", "interface": "0.0.0.0:9060", "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    (listener,) = CaptureInterface.objects.all()
    assert (listener.kind, listener.interface, listener.bpf_filter) == ("hep", "0.0.0.0:9060", "")
    assert str(listener) == "HEP 0.0.0.0:9060 on node-a"


@pytest.mark.parametrize(
    ("kind", "interface", "bpf", "said"),
    [
        ("hep", "eth1", "", "A HEP address is an IP address and a UDP port"),
        ("hep", "0.0.0.0:99999", "", "A HEP address is an IP address and a UDP port"),
        ("hep", "0.0.0.0:9060", "udp", "A HEP listener takes no BPF filter"),
        ("interface", "0.0.0.0 9060", "", "An interface name is written as"),
    ],
)
def test_a_capture_its_kind_cannot_take_is_refused_with_a_sentence(
    admin_client_logged_in: Client, kind: str, interface: str, bpf: str, said: str
) -> None:
    response = admin_client_logged_in.post(
        "/admin/capture/captureinterface/add/",
        {"node": "node-a", "kind": kind, "interface": interface, "bpf_filter": bpf,
         "enabled": "on"},
    )  # fmt: skip

    assert response.status_code == 200
    assert said in response.content.decode()
    assert not CaptureInterface.objects.exists()


def test_the_call_log_shows_and_filters_by_the_node_that_saw_each_call(
    admin_client_logged_in: Client,
) -> None:
    from recorder.models import Call

    for call_id, node in (("seen-at-a@pbx", "site-a"), ("seen-at-b@pbx", "site-b")):
        Call.objects.create(call_id=call_id, protocol="sip", started_at=timezone.now(), node=node)
    page = admin_client_logged_in.get("/admin/recorder/call/", {"node": "site-a"})
    assert page.status_code == 200
    assert "column-node" in page.content.decode()  # the node is a column of the list
    listed = page.context["cl"].result_list
    assert [call.call_id for call in listed] == ["seen-at-a@pbx"]
