"""The Lync dialect of SIP (integrations/sip/lync.py): which messages are Lync's, the
protocol and binding source that follow, and the other forms of a user a line URI gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from integrations.observations import BindingSeen, BindingSource, CallProtocol, Endpoint
from integrations.sip.lync import (
    binding_source,
    extension_aliases,
    identity_aliases,
    is_lync,
    protocol_of,
)
from integrations.sip.message import parse_message
from integrations.sip.tracker import SipTracker
from integrations.sip.uri import parse_uri

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def request(*extra: str, sender: str = "From: <sip:alice@contoso.com>;tag=1") -> bytes:
    lines = [
        "OPTIONS sip:contoso.com SIP/2.0",
        "Via: SIP/2.0/TCP 10.0.0.31:50123;branch=z9hG4bKo",
        sender,
        "To: <sip:contoso.com>",
        "Call-ID: lync-options",
        "CSeq: 1 OPTIONS",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


EPID = "From: <sip:alice@contoso.com>;tag=1;epid=01010101"


@pytest.mark.parametrize(
    "payload",
    [
        request("ms-keep-alive: UAC;hop-hop=yes"),
        request("Ms-Conversation-ID: AcZ"),
        request('Contact: <sip:alice@10.0.0.31:50123>;+sip.instance="<urn:uuid:a1>"', sender=EPID),
        request("User-Agent: UCCAPI/16.0 OC/16.0 (Skype for Business)", sender=EPID),
        request("Server: RTCC/6.0.0.0 MediationServer", sender=EPID),
    ],
    ids=["ms-header", "ms-header-any-case", "epid-and-instance", "epid-and-ucc", "epid-and-server"],
)
def test_a_microsoft_message_is_lync(payload: bytes) -> None:
    message = parse_message(payload)
    assert is_lync(message)
    assert protocol_of(message) is CallProtocol.LYNC


@pytest.mark.parametrize(
    "payload",
    [
        request("User-Agent: Yealink SIP-T46S 66.86.0.15"),
        # Microsoft Response Point (rtpparsing-voip.pcap) sends an epid and is not Lync.
        request("User-Agent: MSFTRP/1.0", sender=EPID),
        # A Lync product name without the epid is no sign either.
        request("User-Agent: UCCAPI/16.0 OC/16.0 (Skype for Business)"),
    ],
    ids=["plain-sip", "epid-alone", "user-agent-alone"],
)
def test_any_other_message_is_plain_sip(payload: bytes) -> None:
    message = parse_message(payload)
    assert not is_lync(message)
    assert protocol_of(message) is CallProtocol.SIP


def test_a_lync_sighting_is_lyncs_whatever_the_plain_sip_source() -> None:
    assert binding_source(CallProtocol.LYNC, BindingSource.SIP_CALL) is BindingSource.LYNC
    assert binding_source(CallProtocol.LYNC, BindingSource.SIP_REGISTER) is BindingSource.LYNC
    assert binding_source(CallProtocol.SIP, BindingSource.SIP_CALL) is BindingSource.SIP_CALL
    assert binding_source(CallProtocol.SIP, BindingSource.SIP_REGISTER) is (
        BindingSource.SIP_REGISTER
    )


def test_a_line_uri_gives_its_whole_number_as_another_form() -> None:
    assert extension_aliases(parse_uri("tel:+14255550100;ext=100")) == ("+14255550100",)
    assert extension_aliases(parse_uri("sip:+14255550100;ext=100@contoso.com;user=phone")) == (
        "+14255550100",
    )
    assert extension_aliases(parse_uri("tel:+14255550100")) == ()
    assert extension_aliases(parse_uri("sip:9001@pbx")) == ()


def test_the_asserted_line_uri_gives_the_forms_of_a_user_named_by_sip_name() -> None:
    message = parse_message(request("P-Asserted-Identity: <tel:+14255550100;ext=100>"))
    assert identity_aliases(message, message.from_.uri) == ("100", "+14255550100")
    plain = parse_message(request())
    assert identity_aliases(plain, plain.from_.uri) == ()


def test_a_register_is_lyncs_when_only_its_2xx_shows_it() -> None:
    register = (
        b"REGISTER sip:contoso.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 10.0.0.21:50000;branch=z9hG4bKr\r\n"
        b"From: <sip:alice@contoso.com>;tag=1;epid=01010101\r\n"
        b"To: <sip:alice@contoso.com>\r\n"
        b"Call-ID: lync-reg-2\r\n"
        b"CSeq: 1 REGISTER\r\n"
        b"Contact: <sip:10.0.0.21:50000;transport=tcp>\r\n"
        b"Expires: 3600\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    ok = register.replace(b"REGISTER sip:contoso.com SIP/2.0", b"SIP/2.0 200 OK").replace(
        b"Expires: 3600\r\n", b"Expires: 3600\r\nms-keep-alive: UAS;tcp=no;hop-hop=yes\r\n"
    )
    client, front_end = Endpoint("10.0.0.21", 50000), Endpoint("10.0.0.2", 5060)
    tracker = SipTracker()
    assert not is_lync(parse_message(register))
    tracker.feed(register, client, front_end, T0, "tcp")
    seen = tracker.feed(ok, front_end, client, T0, "tcp")
    assert [(s.extension, s.source) for s in seen if isinstance(s, BindingSeen)] == [
        ("alice", BindingSource.LYNC)
    ]
