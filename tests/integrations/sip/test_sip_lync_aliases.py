"""A Lync INVITE names its caller by SIP user name (From) and by line URI (P-Asserted-
Identity): the call binding carries every form so the directory can match its own."""

from __future__ import annotations

from datetime import UTC, datetime

from integrations.observations import BindingSeen, Endpoint
from integrations.sip.tracker import SipTracker

INVITE = (
    b"INVITE sip:+14255550199@gw.contoso.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.31:50123;branch=z9hG4bKlync1\r\n"
    b"From: <sip:alice@contoso.com>;tag=7a1;epid=01010101\r\n"
    b"To: <sip:+14255550199@gw.contoso.com;user=phone>\r\n"
    b"P-Asserted-Identity: <tel:+14255550100;ext=100>\r\n"
    b"Call-ID: lync-call-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b'Contact: <sip:alice@10.0.0.31:50123;transport=tcp>;+sip.instance="<urn:uuid:a1>"\r\n'
    b"ms-endpoint-location-data: NetworkScope;ms-media-location-type=Intranet\r\n"
    b"User-Agent: UCCAPI/16.0 OC/16.0 (Skype for Business)\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_the_call_binding_carries_the_line_uri_forms_as_aliases() -> None:
    tracker = SipTracker()
    observations = tracker.feed(
        INVITE,
        Endpoint("10.0.0.31", 50123),
        Endpoint("10.0.0.5", 5060),
        datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        "tcp",
    )
    bindings = [seen for seen in observations if isinstance(seen, BindingSeen)]
    assert [(seen.extension, seen.ip, seen.aliases) for seen in bindings] == [
        ("alice", "10.0.0.31", ("100", "+14255550100"))
    ]
    assert bindings[0].source == "lync"


def test_an_invite_with_replaces_names_the_call_it_takes_over() -> None:
    invite = (
        b"INVITE sip:9002@10.0.0.12 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bKrepl\r\n"
        b"From: <sip:9001@pbx>;tag=a\r\n"
        b"To: <sip:9002@pbx>\r\n"
        b"Call-ID: joined-call\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Replaces: consult-call;to-tag=7743;from-tag=6472\r\n"
        b"Contact: <sip:9001@10.0.0.11>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    observations = SipTracker().feed(
        invite,
        Endpoint("10.0.0.11", 5060),
        Endpoint("10.0.0.12", 5060),
        datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        "udp",
    )
    starts = [seen for seen in observations if getattr(seen, "event", None) == "start"]
    assert [start.replaces_call_id for start in starts] == ["consult-call"]
