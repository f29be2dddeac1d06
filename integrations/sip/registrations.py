"""REGISTER transactions into BindingSeen (RFC 3261 §10).

A REGISTER is held until its final response (matched by Call-ID and CSeq number). Only a 2xx
makes bindings; a challenge (401/407) or a refusal (403, ...) makes none. The registrar's 2xx
lists every current binding of the address-of-record with the lifetime it granted (§10.3
step 8), so each Contact in the 2xx becomes one BindingSeen. The extension is the user part of
the To URI exactly as sent (R4, with the `;ext=` rule of parties.py). The lifetime is the
Contact's `expires` parameter, else the Expires header (of the response, then of the
request), else 3600 seconds (§10.2.1.1). A lifetime of 0, or `Contact: *`, is an
unregistration (§10.2.2).

Some registrars list none, or only a Contact of their own (its host is the address the 2xx
came from or the REGISTER's Request-URI host, §10.2: the registrar's domain). Such a Contact
is no binding of the AOR; the REGISTER's Contacts are the bindings then, each for the
lifetime the 2xx granted: its Contacts' `expires` parameter, else its Expires header, else
what the REGISTER asked for (its Contact's parameter, then its Expires header).

Which IP the binding names (the IP rule). "Where the phone is" means the source address of the
REGISTER packet as the mirror port shows it; for a REGISTER that a proxy forwarded (more than
one Via, §16.6 step 8) it is the `received` address, else the sent-by host, of the bottom Via,
which is the phone's own. Then, for each Contact:

1. a Contact host that is an IP literal equal to where the phone is: that IP;
2. a hostname Contact: where the phone is;
3. NAT shown, that is the registrar's Via in the response carries a `received` that differs
   from the sent-by host or an `rport` that differs from the sent-by port (RFC 3581 §4):
   where the phone is;
4. a private Contact host (RFC 1918, RFC 4193, link-local, loopback) that differs from where
   the phone is: where the phone is, since the phone sits behind a NAT the mirror is outside of;
5. otherwise (a public IP literal, no NAT shown): the Contact host.

A Contact in the 2xx that the REGISTER did not carry is some other binding of the same AOR
(another device); it is reported with its own host when that is an IP literal and skipped
otherwise, since the packet says nothing about where that device is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import datetime

from integrations.observations import BindingSeen, BindingSource, CallProtocol, direct_init
from integrations.sip.errors import SipDecodeError
from integrations.sip.lync import binding_source, extension_aliases, protocol_of
from integrations.sip.message import SipMessage
from integrations.sip.parties import extension_of, sip_instance
from integrations.sip.uri import NameAddr, Via, normalize_ip, parse_uri

DEFAULT_EXPIRES = 3600  # RFC 3261 §10.2.1.1 leaves the default to the registrar; 3600 is usual


@direct_init
@dataclass(frozen=True, slots=True)
class PendingRegister:
    """A REGISTER request waiting for its final response."""

    at: datetime
    phone_ip: str
    extension: str
    contacts: tuple[NameAddr, ...]
    contact_star: bool
    expires: int | None
    protocol: CallProtocol
    aliases: tuple[str, ...] = ()
    # The Request-URI host: the domain (or the address) of the registrar (§10.2).
    registrar_host: str = ""


def pending_register(request: SipMessage, packet_source: str, at: datetime) -> PendingRegister:
    return PendingRegister(
        at=at,
        phone_ip=phone_address(request.vias, packet_source),
        extension=extension_of(request.to.uri),
        contacts=request.contacts,
        contact_star=request.contact_star,
        expires=parse_expires(request.header("expires")),
        protocol=protocol_of(request),
        aliases=extension_aliases(request.to.uri),
        registrar_host=request_uri_host(request),
    )


def request_uri_host(request: SipMessage) -> str:
    """The Request-URI's host, IPs compressed; empty when it is no URI."""
    try:
        host = parse_uri(request.request_uri).host
    except SipDecodeError:
        return ""
    return normalize_ip(host) or host.lower()


def phone_address(vias: tuple[Via, ...], packet_source: str) -> str:
    """The packet source, or for a forwarded REGISTER the phone's own (bottom) Via."""
    if len(vias) <= 1:
        return packet_source
    phone_via = vias[-1]
    received = normalize_ip(phone_via.param("received") or "")
    return received or normalize_ip(phone_via.host) or packet_source


def parse_expires(text: str | None) -> int | None:
    """A delta-seconds value (§20.19, §20.10), or None when absent or not a number."""
    value = (text or "").strip()
    if not value.isdigit() or len(value) > 10:
        return None
    return int(value)


def bindings_from_response(
    pending: PendingRegister, response: SipMessage, at: datetime, registrar: str = ""
) -> list[BindingSeen]:
    """BindingSeen for a 2xx to a REGISTER (the caller checks the status), vouched for by
    `registrar`, the address the 2xx came from."""
    bindings = _bindings_of_2xx(pending, response, at, registrar)
    return [replace(seen, authority=registrar) for seen in bindings]


def _bindings_of_2xx(
    pending: PendingRegister, response: SipMessage, at: datetime, registrar: str
) -> list[BindingSeen]:
    if not pending.extension:
        return []
    # Either half of the transaction may be the one that shows Lync's signs.
    dialect = pending.protocol if pending.protocol == CallProtocol.LYNC else protocol_of(response)
    source = binding_source(dialect, BindingSource.SIP_REGISTER)
    if pending.contact_star:
        return [
            BindingSeen(
                pending.extension, pending.phone_ip, source, at, 0, True, aliases=pending.aliases
            )
        ]
    nat_shown = bool(response.vias) and via_shows_nat(response.vias[0])
    granted = parse_expires(response.header("expires"))
    listed = [c for c in response.contacts if not is_registrar_contact(c, pending, registrar)]
    if listed or not pending.contacts:
        # A REGISTER that carried no Contact (a query, §10.2.3, or one the capture missed)
        # leaves the 2xx's Contacts, all of them, as the only word on its bindings.
        contacts = listed or response.contacts
        return _contact_bindings(pending, contacts, source, at, nat_shown, granted)
    # None listed, or the registrar's own alone: the REGISTER's, for what the 2xx granted.
    stated = (parse_expires(contact.param("expires")) for contact in response.contacts)
    granted = next((value for value in stated if value is not None), granted)
    return _contact_bindings(pending, pending.contacts, source, at, nat_shown, granted, True)


def _contact_bindings(
    pending: PendingRegister,
    contacts: list[NameAddr] | tuple[NameAddr, ...],
    source: BindingSource,
    at: datetime,
    nat_shown: bool,
    granted: int | None,
    requested: bool = False,
) -> list[BindingSeen]:
    """One BindingSeen per Contact (32 at most); `requested` when they are the REGISTER's,
    whose own `expires` parameter asks for a lifetime that the 2xx's grant overrides."""
    seen = []
    for contact in contacts[:32]:
        binding = contact_binding(pending, contact, source, at, nat_shown, granted, requested)
        if binding is not None:
            seen.append(binding)
    return seen


def is_registrar_contact(contact: NameAddr, pending: PendingRegister, registrar: str) -> bool:
    """A Contact in the 2xx that names the registrar itself: the address the 2xx came from,
    or the host of the REGISTER's Request-URI. It is no binding of the AOR."""
    host = contact.uri.host_ip or contact.uri.host.lower()
    return bool(host) and host in (registrar, pending.registrar_host)


def contact_binding(
    pending: PendingRegister,
    contact: NameAddr,
    source: BindingSource,
    at: datetime,
    nat_shown: bool,
    granted: int | None,
    requested: bool = False,
) -> BindingSeen | None:
    ip = binding_ip(contact, pending, nat_shown)
    if ip is None:
        return None
    asked = parse_expires(contact.param("expires"))
    if requested:
        expires = first_of(granted, asked, pending.expires)
    else:
        expires = first_of(asked, granted, pending.expires)
    return BindingSeen(
        extension=pending.extension,
        ip=ip,
        source=source,
        seen_at=at,
        expires_in=expires,
        unregister=expires == 0,
        device=sip_instance(contact) or requested_instance(contact, pending),
        aliases=pending.aliases,
    )


def first_of(*values: int | None) -> int:
    return next((value for value in values if value is not None), DEFAULT_EXPIRES)


def binding_ip(contact: NameAddr, pending: PendingRegister, nat_shown: bool) -> str | None:
    """The IP rule of the module docstring."""
    host = contact.uri.host_ip
    if not is_own_contact(contact, pending):
        return host
    if host is None or host == pending.phone_ip:
        return pending.phone_ip
    if nat_shown or is_private(host):
        return pending.phone_ip
    return host


def is_own_contact(contact: NameAddr, pending: PendingRegister) -> bool:
    """Whether a Contact of the 2xx is one the REGISTER itself carried (or it carried none)."""
    if not pending.contacts:
        return True
    return any(same_binding(requested, contact) for requested in pending.contacts)


def requested_instance(contact: NameAddr, pending: PendingRegister) -> str:
    """RFC 5626: registrars often drop +sip.instance from the 2xx; the REGISTER had it."""
    for requested in pending.contacts:
        if same_binding(requested, contact):
            return sip_instance(requested)
    return ""


def same_binding(first: NameAddr, second: NameAddr) -> bool:
    """Contacts name the same binding when user, host and port agree (§10.3 step 6 compares
    whole URIs; parameters such as `;ob` or `;transport` are left out here on purpose)."""
    return (first.uri.user, first.uri.host.lower(), first.uri.port) == (
        second.uri.user,
        second.uri.host.lower(),
        second.uri.port,
    )


def via_shows_nat(via: Via) -> bool:
    """RFC 3581 §4 / RFC 3261 §18.2.1: the registrar saw another address than sent-by."""
    received = normalize_ip(via.param("received") or "")
    if received is not None and received != normalize_ip(via.host):
        return True
    rport = via.param("rport") or ""
    return rport.isdigit() and int(rport) != (via.port or 5060)


def is_private(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_private or address.is_link_local or address.is_loopback
