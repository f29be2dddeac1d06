"""Who a SIP message names: extensions from URIs, the caller and the callee.

Extensions are written exactly as the call system wrote them (rule R4), with one choice
documented in docs/sip.md: a telephone number that carries an extension (RFC 3966 §5.1.5
`;ext=`, as Lync line URIs do: `tel:+14255550100;ext=100`) gives the `ext` value, `100`,
because that is the number the PBX dials the phone by. The same applies to a sip: URI whose
user part is a telephone-subscriber (`sip:+14255550100;ext=100@example.com;user=phone`,
RFC 3261 §19.1.6). Without `;ext=` the number is kept whole: `+33360653674`. The other
forms of a user that such a URI gives, and whether a message is Lync's, are in lync.py.
"""

from __future__ import annotations

from integrations.sip.errors import SipDecodeError
from integrations.sip.message import SipMessage
from integrations.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri


def extension_of(uri: SipUri) -> str:
    """The extension a URI names (see the module docstring for `;ext=`)."""
    if uri.scheme == "tel":
        return uri.param("ext") or uri.user
    number, _, subscriber_params = uri.user.partition(";")
    if subscriber_params:
        for item in subscriber_params.split(";"):
            name, _, value = item.partition("=")
            if name.strip().lower() == "ext" and value.strip():
                return value.strip()
        return number if uri.param("user") == "phone" else uri.user
    return uri.user


def asserted_identity(message: SipMessage) -> NameAddr | None:
    """The first P-Asserted-Identity (RFC 3325 §9.1) that names someone, if any."""
    for value in message.header_values("p-asserted-identity")[:4]:
        identity = parse_name_addr(value)
        if extension_of(identity.uri):
            return identity
    return None


def caller_of(message: SipMessage) -> NameAddr:
    """RFC 3325: a PBX's asserted identity says who calls better than From does."""
    return asserted_identity(message) or message.from_


def callee_of(message: SipMessage) -> str:
    """To names the called party; a request-URI is the fallback when To has no user."""
    callee = extension_of(message.to.uri)
    if callee or not message.is_request:
        return callee
    return request_uri_extension(message)


def request_uri_extension(message: SipMessage) -> str:
    try:
        return extension_of(parse_uri(message.request_uri))
    except SipDecodeError:
        return ""


def sip_instance(contact: NameAddr) -> str:
    """RFC 5626 `+sip.instance="<urn:uuid:...>"` as `urn:uuid:...`, or empty."""
    return (contact.param("+sip.instance") or "").strip("<>")
