"""The lease that keeps two workers off one interface.

A worker captures on an interface only while it holds the interface's lease: a conditional
UPDATE takes it when it is free, already the worker's, or expired, so of two workers
claiming at once exactly one row update succeeds. The holder renews it with every
heartbeat, and a renewal that updates no row means another worker took the interface over:
the holder stops its sniffer. Expiry is judged by the database's clock, so the nodes'
clocks need not agree.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from recorder.nodes.models import CaptureInterface


def _expiry(seconds: int) -> ExpressionWrapper:
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def claim(interface_id: int, owner: str, seconds: int) -> bool:
    """Take the interface's lease for `seconds`, unless another worker holds it unexpired."""
    claimable = Q(lease_owner="") | Q(lease_owner=owner) | Q(lease_expires_at__lt=Now())
    updated = CaptureInterface.objects.filter(claimable, pk=interface_id, enabled=True).update(
        lease_owner=owner, lease_expires_at=_expiry(seconds)
    )
    return updated == 1


def renew(interface_id: int, owner: str, seconds: int, **state: object) -> bool:
    """Extend the lease and write the live state with it; False if it is no longer ours."""
    updated = CaptureInterface.objects.filter(pk=interface_id, lease_owner=owner).update(
        lease_expires_at=_expiry(seconds), heartbeat_at=Now(), **state
    )
    return updated == 1


def release(interface_id: int, owner: str, **state: object) -> None:
    """Give the lease up, saying the sniffer no longer runs."""
    CaptureInterface.objects.filter(pk=interface_id, lease_owner=owner).update(
        lease_owner="",
        lease_expires_at=None,
        running=False,
        live_calls=0,
        packets_per_second=0,
        heartbeat_at=Now(),
        **state,
    )


def take_back(interface_id: int, stale_owner: str, owner: str, seconds: int) -> bool:
    """Take over a lease from `stale_owner`, a holder known to be dead, unless another
    worker took it meanwhile."""
    updated = CaptureInterface.objects.filter(
        pk=interface_id, enabled=True, lease_owner=stale_owner
    ).update(lease_owner=owner, lease_expires_at=_expiry(seconds))
    return updated == 1
