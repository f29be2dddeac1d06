"""The lease on a capture interface: one worker at a time, taken over only once expired."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from recorder.nodes import leases
from recorder.nodes.models import CaptureInterface

SECONDS = 60


@pytest.fixture
def eth1(postgresql: None) -> CaptureInterface:
    return CaptureInterface.objects.create(node="node-a", interface="eth1")


def owner_of(interface: CaptureInterface) -> str:
    interface.refresh_from_db()
    return interface.lease_owner


def test_a_second_worker_cannot_take_an_interface_whose_lease_is_held(
    eth1: CaptureInterface,
) -> None:
    assert leases.claim(eth1.pk, "worker-a", SECONDS)
    assert not leases.claim(eth1.pk, "worker-b", SECONDS)
    assert leases.claim(eth1.pk, "worker-a", SECONDS)  # its own, again
    assert leases.renew(eth1.pk, "worker-a", SECONDS, running=True)
    assert owner_of(eth1) == "worker-a"


def test_an_expired_lease_is_taken_over_and_the_old_holder_learns_it_at_its_renewal(
    eth1: CaptureInterface,
) -> None:
    assert leases.claim(eth1.pk, "worker-a", SECONDS)
    CaptureInterface.objects.filter(pk=eth1.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert leases.claim(eth1.pk, "worker-b", SECONDS)
    assert not leases.renew(eth1.pk, "worker-a", SECONDS, running=True)
    assert owner_of(eth1) == "worker-b"


def test_the_lease_runs_for_its_seconds_by_the_database_clock(eth1: CaptureInterface) -> None:
    before = timezone.now()
    leases.claim(eth1.pk, "worker-a", SECONDS)
    eth1.refresh_from_db()
    assert timedelta(seconds=SECONDS - 5) < eth1.lease_expires_at - before
    assert eth1.lease_expires_at - before < timedelta(seconds=SECONDS + 5)


def test_a_disabled_interface_is_claimed_by_nobody(eth1: CaptureInterface) -> None:
    CaptureInterface.objects.filter(pk=eth1.pk).update(enabled=False)
    assert not leases.claim(eth1.pk, "worker-a", SECONDS)


def test_a_released_lease_is_free_and_the_interface_shown_stopped(
    eth1: CaptureInterface,
) -> None:
    leases.claim(eth1.pk, "worker-a", SECONDS)
    leases.renew(eth1.pk, "worker-a", SECONDS, running=True, live_calls=3)

    leases.release(eth1.pk, "worker-a")

    eth1.refresh_from_db()
    assert (eth1.lease_owner, eth1.running, eth1.live_calls) == ("", False, 0)
    assert leases.claim(eth1.pk, "worker-b", SECONDS)


def test_of_workers_claiming_at_the_same_moment_exactly_one_wins(eth1: CaptureInterface) -> None:
    barrier = threading.Barrier(6)
    won: list[str] = []

    def claim(owner: str) -> None:
        barrier.wait()
        try:
            if leases.claim(eth1.pk, owner, SECONDS):
                won.append(owner)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f"worker-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    assert owner_of(eth1) == won[0]
