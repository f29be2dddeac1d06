"""Facts about an HTTP request that several apps need."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: the socket peer, or, when the peer is a trusted proxy
    (QMS_TRUSTED_PROXIES), the address that proxy names in QMS_CLIENT_IP_HEADER.

    A peer that is no trusted proxy is the client whatever its headers say, so nobody can
    name another address to spread password guesses or to blame someone in the audit
    trail. Of a comma-separated header (X-Forwarded-For) the nearest address that is not
    a trusted proxy counts: each proxy appends the address it heard from, and what stands
    left of that is whatever the client chose to send.
    """
    if request is None:
        return None
    peer = _ip(request.META.get("REMOTE_ADDR", ""))
    header = settings.QMS_CLIENT_IP_HEADER
    if peer is None or not header or not is_trusted_proxy(peer):
        return None if peer is None else str(peer)
    forwarded = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
    nearest = peer
    for item in reversed(forwarded.split(",")):
        hop = _ip(item.strip())
        if hop is None:
            break  # A forged or broken entry: nothing left of it can be believed.
        nearest = hop
        if not is_trusted_proxy(hop):
            break
    return str(nearest)


def is_trusted_proxy(address: IPAddress) -> bool:
    return any(address in network for network in settings.QMS_TRUSTED_PROXIES)


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
