"""Bindings come from the call system, not from callers (docs/directory.md, "Trust").

Passive capture cannot authenticate a packet, but it can ask who speaks. A REGISTER's
2xx binds an extension only when a call server answered it; an SCCP session only when its
CallManager is one; TAPI and the directory itself are the call system. A call's From is
the caller's word: it may teach where a phone is, never move an extension that a stronger
source holds, and never from an address of the call system (a trunk or gateway relays
the calls of many numbers, and is no phone).

Call servers are configured by a person (CallServer). While none is configured, QMS is
learning: the addresses that answer REGISTERs and serve SCCP are kept as learned call
servers and trusted, so a first install records from the first minute; configuring one
ends learning, and from then on only configured servers vouch.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from extensions.models import Binding, CallServer, DisputedClaim
from integrations.observations import BindingSeen, BindingSource

log = logging.getLogger(__name__)

# How strongly each source speaks for where an extension is: a claim never moves a
# binding that a stronger source holds elsewhere while it is live.
STRENGTH = {
    BindingSource.STATIC: 4,
    BindingSource.TAPI: 3,
    BindingSource.SCCP: 3,
    BindingSource.SIP_REGISTER: 2,
    BindingSource.LYNC: 2,
    BindingSource.SIP_CALL: 1,
}
# Sources that name the call server that vouched for them.
VOUCHED = {BindingSource.SIP_REGISTER, BindingSource.LYNC, BindingSource.SCCP}
SERVER_KIND = {
    BindingSource.SIP_REGISTER: CallServer.Kind.REGISTRAR,
    BindingSource.LYNC: CallServer.Kind.REGISTRAR,
    BindingSource.SCCP: CallServer.Kind.CALL_MANAGER,
}
# An address whose calls claim this many different numbers relays calls: a gateway.
GATEWAY_NUMBERS = 3
# The call servers are read again this often (a change in the admin is seen by every
# capture process within this time; at once in the process that saved it).
SERVERS_CACHE_SECONDS = 30.0
# Disputed claims kept at most; more are logged only (a flood of forged REGISTERs).
MAX_DISPUTED_CLAIMS = 10_000


def strength(source: str) -> int:
    return STRENGTH.get(source, 0)


@dataclass(frozen=True)
class CallServers:
    """The call servers as one process knows them."""

    configured: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    learned: frozenset[str]
    gateways: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @property
    def learning(self) -> bool:
        return not self.configured

    def vouches(self, address: str) -> bool:
        """Whether `address` may vouch for a registration."""
        if self.learning:
            return True
        return _within(address, self.configured)

    def knows(self, address: str) -> bool:
        return address in self.learned or _within(address, self.configured)

    def relays(self, address: str) -> bool:
        """Whether `address` belongs to the call system, so that its calls teach nothing."""
        return address in self.learned or _within(address, self.configured + self.gateways)


def _within(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == network.version and ip in network for network in networks)


_cache: dict[str, object] = {"servers": None, "read_at": 0.0}


def call_servers() -> CallServers:
    """The call servers, read at most every SERVERS_CACHE_SECONDS."""
    servers = _cache["servers"]
    if servers is None or time.monotonic() - _cache["read_at"] > SERVERS_CACHE_SECONDS:
        servers = _read_call_servers()
        _cache.update(servers=servers, read_at=time.monotonic())
    return servers


def forget_call_servers(**_: object) -> None:
    _cache["servers"] = None


post_save.connect(forget_call_servers, sender=CallServer)
post_delete.connect(forget_call_servers, sender=CallServer)


def _read_call_servers() -> CallServers:
    configured, learned, gateways = [], set(), []
    for network, kind, was_learned in CallServer.objects.values_list("network", "kind", "learned"):
        parsed = ipaddress.ip_network(network, strict=False)
        if was_learned:
            learned.add(str(parsed.network_address))
            if kind == CallServer.Kind.GATEWAY:
                gateways.append(parsed)
        elif kind == CallServer.Kind.GATEWAY:
            gateways.append(parsed)
        else:
            configured.append(parsed)
    return CallServers(tuple(configured), frozenset(learned), tuple(gateways))


def refusal(seen: BindingSeen) -> str:
    """Why the directory must not take `seen` from the wire, or "" when it may.

    Asked before apply_binding for every observation from capture. A stronger binding
    held elsewhere is settled inside apply_binding, where the extension's rows are locked.
    """
    servers = call_servers()
    if seen.source in VOUCHED:
        return _vouched_refusal(seen, servers)
    if seen.source == BindingSource.SIP_CALL and servers.relays(seen.ip):
        return DisputedClaim.Reason.GATEWAY
    return ""


def _vouched_refusal(seen: BindingSeen, servers: CallServers) -> str:
    if servers.learning:
        # Nothing is configured: the server is learned (a sighting that names none, as
        # an event queued by an earlier version, is taken as before).
        if seen.authority and not servers.knows(seen.authority):
            learn_call_server(seen.authority, SERVER_KIND[seen.source], seen.seen_at)
        return ""
    if not seen.authority or not servers.vouches(seen.authority):
        return DisputedClaim.Reason.UNTRUSTED_SERVER
    return ""


def learn_call_server(address: str, kind: str, at: datetime) -> None:
    """Keep an address of the call system seen on the wire (while learning)."""
    network = str(ipaddress.ip_network(address))
    with transaction.atomic():
        _, created = CallServer.objects.get_or_create(
            network=network,
            defaults={"kind": kind, "learned": True, "first_seen": at, "last_seen": at},
        )
    if created:
        log.info("learned %s as a call server (%s)", address, kind)
    forget_call_servers()


def relays_many_numbers(seen: BindingSeen) -> bool:
    """Whether the address of a call's claim has claimed other numbers in its calls too:
    then it relays calls (a gateway, a trunk), and is learned as a gateway."""
    bound = (
        Binding.objects.filter(ip=seen.ip, source=BindingSource.SIP_CALL, ended_at__isnull=True)
        .exclude(extension_number=seen.extension)
        .values_list("extension_number", flat=True)
        .order_by()
    )
    disputed = (
        DisputedClaim.objects.filter(ip=seen.ip, source=BindingSource.SIP_CALL)
        .exclude(extension_number=seen.extension)
        .values_list("extension_number", flat=True)
        .order_by()
    )
    # One round trip: the union is distinct, and two other numbers are enough to know.
    numbers = list(bound.union(disputed)[: GATEWAY_NUMBERS - 1])
    if len(numbers) + 1 < GATEWAY_NUMBERS:
        return False
    learn_call_server(seen.ip, CallServer.Kind.GATEWAY, seen.seen_at)
    return True


def _too_many_disputes() -> bool:
    """A flood of forged claims fills no table: past the cap, claims are only logged."""
    return DisputedClaim.objects.all()[MAX_DISPUTED_CLAIMS - 1 :].exists()


def dispute(seen: BindingSeen, reason: str, held_at: str | None = None) -> None:
    """Open, or count again, a directory-health entry for a claim not applied."""
    with transaction.atomic():
        updated = DisputedClaim.objects.filter(
            extension_number=seen.extension, ip=seen.ip, reason=reason
        ).update(count=F("count") + 1, last_seen=seen.seen_at, held_at=held_at)
        if not updated and not _too_many_disputes():
            DisputedClaim.objects.get_or_create(
                extension_number=seen.extension,
                ip=seen.ip,
                reason=reason,
                defaults={
                    "source": seen.source,
                    "vouched_by": seen.authority,
                    "held_at": held_at,
                    "first_seen": seen.seen_at,
                    "last_seen": seen.seen_at,
                },
            )
    log.warning(
        "claim of %s at %s (%s) not applied: %s", seen.extension, seen.ip, seen.source, reason
    )
