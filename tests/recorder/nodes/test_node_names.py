"""One QMS_NODE, one machine (issue 15, section 3): a worker whose QMS_NODE another machine
runs now captures nothing and says why, in its log and as the node's alert; it takes over
once the other machine's leases lapse (a standby). Workers of one machine share a node as
before. The node's rounds are driven here one by one, on PostgreSQL, without sniffers."""

from __future__ import annotations

import logging

import pytest

from recorder.nodes.models import CaptureAlert, CaptureInterface
from recorder.nodes.node import NODE_NAME_IN_USE, CaptureNode, machine_of

NODE = "site-a"


def worker(machine: str, number: int = 1) -> CaptureNode:
    return CaptureNode(NODE, None, f"qms-worker{number}@{machine}", machine=machine)


def interfaces(*names: str) -> list[CaptureInterface]:
    return [CaptureInterface.objects.create(node=NODE, interface=name) for name in names]


def holders() -> dict[str, str]:
    return {row.interface: machine_of(row.lease_owner) for row in CaptureInterface.objects.all()}


def test_a_second_machine_with_the_same_node_name_is_refused_and_takes_over_as_a_standby(
    postgresql: None, caplog: pytest.LogCaptureFixture
) -> None:
    interfaces("eth1")
    alpha, beta = worker("alpha"), worker("beta")
    alpha._reconcile()
    with caplog.at_level(logging.ERROR, logger="qms.capture"):
        beta._reconcile()
        beta._reconcile()
    assert holders() == {"eth1": "alpha"} and not beta.sniffers
    (alert,) = CaptureAlert.objects.filter(node=NODE, kind=NODE_NAME_IN_USE)
    assert alert.message.startswith(
        "QMS_NODE=site-a is already in use on machine alpha (worker qms-worker1@alpha), so "
        "this worker on beta captures nothing: give each capture machine a QMS_NODE of its own."
    )
    assert alert.count == 1  # said once, not at every heartbeat
    assert [record.getMessage() for record in caplog.records] == [f"capture node {NODE}: " +
                                                                  alert.message]  # fmt: skip

    for sniffer in list(alpha.sniffers.values()):
        alpha._drop(sniffer)  # alpha stops: its lease is released
    beta._reconcile()
    assert holders() == {"eth1": "beta"} and beta.refused_by == ""


def test_workers_of_one_machine_share_its_node_without_an_alert(postgresql: None) -> None:
    interfaces("eth1", "eth2")
    first, second = worker("alpha", 1), worker("alpha", 2)
    first._reconcile()
    second._reconcile()
    assert holders() == {"eth1": "alpha", "eth2": "alpha"}
    assert len(first.sniffers) == 2 and not second.sniffers  # the second stands by
    assert not CaptureAlert.objects.exists()


def test_of_two_machines_that_took_leases_at_once_one_gives_them_up(postgresql: None) -> None:
    eth1, eth2 = interfaces("eth1", "eth2")
    alpha, beta = worker("alpha"), worker("beta")
    # Each took one interface in the same moment, before either saw the other's lease.
    alpha._take(eth1)
    beta._take(eth2)
    beta._reconcile()
    alpha._reconcile()
    assert not beta.sniffers and holders() == {"eth1": "alpha", "eth2": "alpha"}
    assert CaptureAlert.objects.get(kind=NODE_NAME_IN_USE).message.startswith(
        "QMS_NODE=site-a is already in use on machine alpha"
    )


def test_a_lease_owner_names_its_machine() -> None:
    assert machine_of(worker("alpha").owner) == "alpha"
    assert machine_of("qms-worker1@old:1234:abcdef") == ""  # written before machines were named
