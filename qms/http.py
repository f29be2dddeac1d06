"""Facts about an HTTP request that several apps need."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: from QMS_CLIENT_IP_HEADER behind nginx, else the socket peer.

    Of a comma-separated header (X-Forwarded-For) the last item counts: it is the one the
    nearest proxy appended; the earlier ones are whatever the client chose to send.
    """
    if request is None:
        return None
    header = settings.QMS_CLIENT_IP_HEADER
    if header:
        forwarded = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        candidate = forwarded.split(",")[-1].strip()
        if _is_ip(candidate):
            return candidate
    peer = request.META.get("REMOTE_ADDR", "")
    return peer if _is_ip(peer) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
