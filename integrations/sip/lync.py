"""Lync / Skype for Business: the Microsoft dialect of SIP.

Lync's clear-text signalling is SIP, so the SIP decoder reads it; this module holds what
is Lync's own. A message is Lync's when it carries `ms-` headers ([MS-SIPRE]), or an `epid`
in From together with another Microsoft sign (an RFC 5626 `+sip.instance`, a Lync
User-Agent or Server). A Lync call has protocol CallProtocol.LYNC and its sightings
BindingSource.LYNC, so the directory tells them from plain SIP (rule R6 names Lync as a
source of its own).

Lync names a user two ways in one message: by SIP user name in From (`sip:alice@contoso.com`)
and by line URI (`tel:+14255550100;ext=100`, RFC 3966 §5.1.5) in P-Asserted-Identity. The
extension of a line URI is its `ext` (parties.extension_of); its whole number and the other
header's forms go with a sighting as aliases, which the directory tries when it does not
hold the extension (R4: each form exactly as written, none reformatted). The alias rules
apply to any SIP message: a PBX that writes line URIs the same way is read the same way.
"""

from __future__ import annotations

import re

from integrations.observations import BindingSource, CallProtocol
from integrations.sip.message import SipMessage
from integrations.sip.parties import asserted_identity, extension_of
from integrations.sip.uri import SipUri

LYNC_USER_AGENTS = re.compile(r"UCCAPI|Lync|Skype for Business|OCS|RTCC/|Mediation Server", re.I)


def is_lync(message: SipMessage) -> bool:
    """Lync / Skype for Business: `ms-` headers ([MS-SIPRE]), or an `epid` in From together
    with another Microsoft sign. An `epid` alone is not enough: Microsoft Response Point
    (rtpparsing-voip.pcap) sends one too and is not Lync."""
    if message.has_header_prefix("ms-"):
        return True
    if message.from_.param("epid") is None:
        return False
    if any(contact.param("+sip.instance") for contact in message.contacts):
        return True
    product = f"{message.header('user-agent') or ''} {message.header('server') or ''}"
    return LYNC_USER_AGENTS.search(product) is not None


def protocol_of(message: SipMessage) -> CallProtocol:
    """The protocol of the call (or registration) a SIP message belongs to."""
    return CallProtocol.LYNC if is_lync(message) else CallProtocol.SIP


def binding_source(protocol: CallProtocol, plain: BindingSource) -> BindingSource:
    """Where a sighting was learned: from Lync for a Lync endpoint, else `plain` (a SIP
    REGISTER or a SIP call)."""
    return BindingSource.LYNC if protocol == CallProtocol.LYNC else plain


def extension_aliases(uri: SipUri) -> tuple[str, ...]:
    """The whole number of a URI whose extension came from `;ext=`, as another form the
    directory may hold for the same user."""
    number = uri.user if uri.scheme == "tel" else uri.user.partition(";")[0]
    return (number,) if number and number != extension_of(uri) else ()


def identity_aliases(message: SipMessage, uri: SipUri) -> tuple[str, ...]:
    """Every other form of the user a request names: its URI's whole number, and the
    extension and number of its P-Asserted-Identity (RFC 3325), which Lync fills with the
    user's line URI while From carries the SIP user name."""
    forms = list(extension_aliases(uri))
    identity = asserted_identity(message)
    if identity is not None:
        forms += [extension_of(identity.uri), *extension_aliases(identity.uri)]
    main = extension_of(uri)
    return tuple(dict.fromkeys(form for form in forms if form and form != main))
