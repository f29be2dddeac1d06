"""The SIP tracker on hand-built dialogs: hold, transfer, cancel, failures, Lync, NAT."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallEvent,
    CallSignal,
    Endpoint,
    Observation,
)
from integrations.sip.tracker import SipTracker, compressed
from integrations.sip.uri import normalize_ip

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
PHONE_A = Endpoint("10.0.0.11", 5060)
PHONE_B = Endpoint("10.0.0.12", 5060)
PBX = Endpoint("10.0.0.1", 5060)


def message(start: str, *headers: str, sdp: str = "") -> bytes:
    body = sdp.strip("\n").replace("\n", "\r\n") + "\r\n" if sdp else ""
    lines = [start, *headers]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def offer(ip: str, port: int, direction: str = "sendrecv") -> str:
    session = f"v=0\no=- 1 1 IN IP4 {ip}\ns=-\nc=IN IP4 {ip}\nt=0 0\n"
    return session + f"m=audio {port} RTP/AVP 0\na={direction}"


DIALOG = ("Call-ID: call-7", "From: <sip:9001@pbx>;tag=a", "To: <sip:9002@pbx>;tag=b")


def invite(cseq: int = 1, sdp: str = "", to_tag: bool = False) -> bytes:
    to = "To: <sip:9002@pbx>;tag=b" if to_tag else "To: <sip:9002@pbx>"
    return message(
        "INVITE sip:9002@pbx SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bK" + str(cseq),
        '"John" <sip:9001@pbx>;tag=a'.join(("From: ", "")),
        to,
        "Call-ID: call-7",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:9001@10.0.0.11:5060>",
        sdp=sdp,
    )


def response(status: str, cseq: str, sdp: str = "", contact: str = "10.0.0.12") -> bytes:
    return message(
        f"SIP/2.0 {status}",
        "Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bK1",
        *DIALOG,
        f"CSeq: {cseq}",
        f"Contact: <sip:9002@{contact}:5060>",
        sdp=sdp,
    )


def events(observations: list[Observation]) -> list[tuple[str, str]]:
    return [
        (o.event.value, o.reason or " ".join(str(m.receive_at) for m in o.media))
        for o in observations
        if isinstance(o, CallSignal)
    ]


def feed(tracker: SipTracker, payload: bytes, src: Endpoint, dst: Endpoint, second: int = 0):
    return tracker.feed(payload, src, dst, T0 + timedelta(seconds=second), "udp")


def test_a_call_with_hold_resume_and_transfer() -> None:
    tracker = SipTracker()
    seen: list[Observation] = []
    seen += feed(tracker, invite(sdp=offer("10.0.0.11", 4000)), PHONE_A, PHONE_B)
    seen += feed(tracker, invite(sdp=offer("10.0.0.11", 4000)), PHONE_A, PHONE_B)  # retransmit
    seen += feed(tracker, response("180 Ringing", "1 INVITE"), PHONE_B, PHONE_A, 1)
    seen += feed(
        tracker, response("200 OK", "1 INVITE", offer("10.0.0.12", 5000)), PHONE_B, PHONE_A, 2
    )
    seen += feed(
        tracker, response("200 OK", "1 INVITE", offer("10.0.0.12", 5000)), PHONE_B, PHONE_A, 2
    )
    held = offer("10.0.0.11", 4000, "sendonly")
    seen += feed(tracker, invite(2, held, to_tag=True), PHONE_A, PHONE_B, 10)
    seen += feed(tracker, invite(3, offer("10.0.0.11", 4000), to_tag=True), PHONE_A, PHONE_B, 20)
    seen += feed(tracker, invite(4, offer("10.0.0.11", 4002), to_tag=True), PHONE_A, PHONE_B, 30)
    refer = message(
        "REFER sip:9002@10.0.0.12 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.11;branch=z9hG4bKr",
        *DIALOG,
        "CSeq: 5 REFER",
        "r: <sip:9003@pbx?Replaces=abc>",
    )
    seen += feed(tracker, refer, PHONE_A, PHONE_B, 40)
    bye = message(
        "BYE sip:9002@10.0.0.12 SIP/2.0",
        "Via: SIP/2.0/UDP x;branch=z9hG4bKb",
        *DIALOG,
        "CSeq: 6 BYE",
    )
    seen += feed(tracker, bye, PHONE_A, PHONE_B, 50)
    seen += feed(tracker, bye, PHONE_A, PHONE_B, 51)
    assert events(seen) == [
        ("start", "10.0.0.11:4000"),
        ("ringing", ""),
        ("answer", "10.0.0.12:5000"),
        ("hold", "10.0.0.11:4000"),
        ("resume", "10.0.0.11:4000"),
        ("media", "10.0.0.11:4002"),
        ("transfer", "sip:9003@pbx"),
        ("end", "bye"),
    ]
    bindings = [(b.extension, b.ip, b.source) for b in seen if isinstance(b, BindingSeen)]
    assert bindings == [
        ("9001", "10.0.0.11", BindingSource.SIP_CALL),
        ("9002", "10.0.0.12", BindingSource.SIP_CALL),
    ]
    start = next(o for o in seen if isinstance(o, CallSignal))
    assert (start.caller, start.caller_name, start.callee, start.protocol) == (
        "9001",
        "John",
        "9002",
        "sip",
    )


def test_cancel_ends_the_call_and_the_487_adds_nothing() -> None:
    tracker = SipTracker()
    seen = feed(tracker, invite(), PHONE_A, PBX)
    cancel = message(
        "CANCEL sip:9002@pbx SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bK1",
        "From: <sip:9001@pbx>;tag=a",
        "To: <sip:9002@pbx>",
        "Call-ID: call-7",
        "CSeq: 1 CANCEL",
    )
    seen += feed(tracker, cancel, PHONE_A, PBX, 3)
    seen += feed(tracker, response("487 Request Terminated", "1 INVITE"), PBX, PHONE_A, 3)
    assert events(seen) == [("start", ""), ("end", "cancel")]


def test_busy_ends_the_call_but_a_proxy_challenge_waits_for_the_retry() -> None:
    tracker = SipTracker()
    seen = feed(tracker, invite(), PHONE_A, PBX)
    seen += feed(tracker, response("407 Proxy Authentication Required", "1 INVITE"), PBX, PHONE_A)
    seen += feed(tracker, invite(2), PHONE_A, PBX, 1)
    seen += feed(tracker, response("486 Busy Here", "2 INVITE"), PBX, PHONE_A, 2)
    assert events(seen) == [("start", ""), ("end", "486")]


def test_a_call_picked_up_mid_way_starts_from_its_200_ok() -> None:
    tracker = SipTracker()
    seen = feed(tracker, response("200 OK", "1 INVITE", offer("10.0.0.12", 5000)), PHONE_B, PHONE_A)
    assert events(seen) == [("start", ""), ("answer", "10.0.0.12:5000")]
    assert tracker.expire(T0 + timedelta(hours=5)) != []  # idle answered call: END timeout


def test_expire_ends_calls_nobody_answered_and_forgets_them() -> None:
    tracker = SipTracker(ringing_timeout=timedelta(minutes=1))
    feed(tracker, invite(), PHONE_A, PBX)
    assert events(tracker.expire(T0 + timedelta(seconds=30))) == []
    assert events(tracker.expire(T0 + timedelta(minutes=2))) == [("end", "timeout")]
    assert tracker.live_calls == 0


LYNC_REGISTER = message(
    "REGISTER sip:contoso.com SIP/2.0",
    "Via: SIP/2.0/TCP 10.0.0.21:50000;branch=z9hG4bKl",
    "From: <sip:alice@contoso.com>;tag=1;epid=01010101",
    "To: <sip:alice@contoso.com>",
    "Call-ID: lync-reg",
    "CSeq: 1 REGISTER",
    'Contact: <sip:10.0.0.21:50000;transport=tcp;ms-opaque=d3>;methods="INVITE, BYE";'
    '+sip.instance="<urn:uuid:11111111-2222-3333-4444-555555555555>"',
    "ms-keep-alive: UAC;hop-hop=yes",
    "Expires: 3600",
)


def test_a_lync_register_binds_the_sip_aor_with_its_instance() -> None:
    tracker = SipTracker()
    client, front_end = Endpoint("10.0.0.21", 50000), Endpoint("10.0.0.2", 5060)
    tracker.feed(LYNC_REGISTER, client, front_end, T0, "tcp")
    ok = LYNC_REGISTER.replace(b"REGISTER sip:contoso.com SIP/2.0", b"SIP/2.0 200 OK").replace(
        b"Expires: 3600", b"Expires: 1200"
    )
    seen = tracker.feed(ok, front_end, client, T0, "tcp")
    assert seen == [
        BindingSeen(
            "alice",
            "10.0.0.21",
            BindingSource.LYNC,
            T0,
            1200,
            device="urn:uuid:11111111-2222-3333-4444-555555555555",
            authority="10.0.0.2",
        )
    ]


def test_a_lync_invite_takes_the_caller_from_the_asserted_tel_uri_with_ext() -> None:
    lync_invite = message(
        "INVITE sip:+14255550199@gw.contoso.com;user=phone SIP/2.0",
        "Via: SIP/2.0/TCP 10.0.0.3:5068;branch=z9hG4bKm",
        "From: <sip:alice@contoso.com>;tag=9;epid=01010101",
        "To: <sip:+14255550199@gw.contoso.com;user=phone>",
        'P-Asserted-Identity: "Alice" <sip:alice@contoso.com>, <tel:+14255550100;ext=100>',
        "Call-ID: lync-call",
        "CSeq: 1 INVITE",
        "Ms-Conversation-ID: AcZ",
    )
    seen = SipTracker().feed(lync_invite, Endpoint("10.0.0.3", 5068), PBX, T0, "tcp")
    start = next(o for o in seen if isinstance(o, CallSignal))
    # PAI wins over From; its first value names `alice`, a user, so that one is used.
    assert (start.protocol, start.caller, start.callee) == ("lync", "alice", "+14255550199")
    tel_first = lync_invite.replace(
        b'"Alice" <sip:alice@contoso.com>, <tel:+14255550100;ext=100>',
        b"<tel:+14255550100;ext=100>",
    )
    start = next(
        o
        for o in SipTracker().feed(tel_first, PHONE_A, PBX, T0, "tcp")
        if isinstance(o, CallSignal)
    )
    assert start.caller == "100"


def register(contact: str, via: str = "Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKn") -> bytes:
    return message(
        "REGISTER sip:pbx SIP/2.0",
        via,
        "From: <sip:9001@pbx>;tag=1",
        "To: <sip:9001@pbx>",
        "Call-ID: nat-reg",
        "CSeq: 1 REGISTER",
        f"Contact: {contact}",
    )


def registered_ip(
    contact: str, source: str, response_via: str = ""
) -> list[tuple[str, int | None, bool]]:
    tracker = SipTracker()
    request = register(contact)
    tracker.feed(request, Endpoint(source, 5060), PBX, T0, "udp")
    ok = request.replace(b"REGISTER sip:pbx SIP/2.0", b"SIP/2.0 200 OK")
    if response_via:
        ok = ok.replace(b"Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKn", response_via.encode())
    seen = tracker.feed(ok, PBX, Endpoint(source, 5060), T0, "udp")
    return [(b.ip, b.expires_in, b.unregister) for b in seen if isinstance(b, BindingSeen)]


def test_the_ip_rule_for_register_contacts() -> None:
    # Contact equals the packet source: the Contact.
    assert registered_ip("<sip:9001@192.168.1.5>", "192.168.1.5") == [("192.168.1.5", 3600, False)]
    # Private Contact behind a NAT the mirror is outside of: the packet source.
    assert registered_ip("<sip:9001@192.168.1.5>", "203.0.113.9") == [("203.0.113.9", 3600, False)]
    # A hostname Contact: the packet source.
    assert registered_ip("<sip:9001@desk.example.com>", "10.1.1.1") == [("10.1.1.1", 3600, False)]
    # A public Contact and no NAT shown: the Contact.
    assert registered_ip("<sip:9001@93.184.216.34>", "203.0.113.9") == [
        ("93.184.216.34", 3600, False)
    ]
    # The registrar's Via shows NAT (received/rport differ): the packet source.
    nat_via = "Via: SIP/2.0/UDP 93.184.216.34:5060;branch=z9hG4bKn;received=203.0.113.9;rport=1024"
    assert registered_ip("<sip:9001@93.184.216.34>", "203.0.113.9", nat_via) == [
        ("203.0.113.9", 3600, False)
    ]
    # `Contact: *` unregisters everything.
    assert registered_ip("*", "192.168.1.5") == [("192.168.1.5", 0, True)]
    # expires=0 on the Contact unregisters that binding.
    assert registered_ip("<sip:9001@192.168.1.5>;expires=0", "192.168.1.5") == [
        ("192.168.1.5", 0, True)
    ]


def test_garbage_is_counted_not_raised() -> None:
    tracker = SipTracker()
    for payload in (
        b"",
        b"\x00" * 40,
        b"INVITE sip:x SIP/2.0\r\nl: -1\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
    ):
        assert tracker.feed(payload, PHONE_A, PBX, T0, "udp") == []
    assert tracker.errors == {"not-sip": 2, "bad-content-length": 1, "bad-cseq": 1}


def stranger_invite(cseq: int, from_tag: str) -> bytes:
    return message(
        "INVITE sip:9002@pbx SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.66:5060;branch=z9hG4bKs" + str(cseq),
        f"From: <sip:9001@pbx>;tag={from_tag}",
        "To: <sip:9002@pbx>",
        "Call-ID: call-7",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:9001@10.0.0.66:5060>",
        sdp=offer("10.0.0.66", 7000),
    )


def test_a_refused_call_goes_on_with_the_callers_retry_only() -> None:
    """After a 422 (RFC 4028 §6) the caller's INVITE with a higher CSeq continues the call;
    another From tag, or a CSeq not higher, is nobody's retry."""
    tracker = SipTracker()
    seen = feed(tracker, invite(2, offer("10.0.0.11", 4000)), PHONE_A, PBX)
    seen += feed(tracker, response("422 Session Interval Too Small", "2 INVITE"), PBX, PHONE_A)
    seen += feed(tracker, stranger_invite(3, "other"), Endpoint("10.0.0.66", 5060), PBX, 1)
    seen += feed(tracker, stranger_invite(1, "a"), Endpoint("10.0.0.66", 5060), PBX, 1)
    assert events(tracker.expire(T0 + timedelta(seconds=10))) == []
    seen += feed(tracker, invite(3, offer("10.0.0.11", 4002)), PHONE_A, PBX, 11)
    seen += feed(
        tracker, response("200 OK", "3 INVITE", offer("10.0.0.12", 5000)), PHONE_B, PHONE_A, 12
    )
    assert events(tracker.expire(T0 + timedelta(seconds=60))) == []
    assert events(seen) == [
        ("start", "10.0.0.11:4000"),
        ("media", "10.0.0.11:4002"),
        ("answer", "10.0.0.12:5000"),
    ]
    assert tracker.ignored["not-a-retry"] == 2


def test_a_challenge_waits_for_a_person_typing_the_password() -> None:
    """A softphone may ask its user for the password (33 s in rtppcap-aaa.pcap): the retry
    after a 407 continues the call for as long as a call may ring, not only 32 s."""
    tracker = SipTracker()
    seen = feed(tracker, invite(1, offer("10.0.0.11", 4000)), PHONE_A, PBX)
    seen += feed(tracker, response("407 Proxy Authentication Required", "1 INVITE"), PBX, PHONE_A)
    assert events(tracker.expire(T0 + timedelta(seconds=60))) == []
    seen += feed(tracker, invite(2, offer("10.0.0.11", 4000)), PHONE_A, PBX, 61)
    seen += feed(tracker, response("486 Busy Here", "2 INVITE"), PBX, PHONE_A, 62)
    ends = [(o.reason, o.at) for o in seen if getattr(o, "event", None) is CallEvent.END]
    assert ends == [("486", T0 + timedelta(seconds=62))]  # one call, ended by the retry's answer


def test_a_refusal_nobody_retries_ends_the_call_at_the_refusal() -> None:
    tracker = SipTracker()
    seen = feed(tracker, invite(), PHONE_A, PBX)
    seen += feed(tracker, response("302 Moved Temporarily", "1 INVITE"), PBX, PHONE_A, 1)
    assert events(tracker.expire(T0 + timedelta(seconds=20))) == []
    (end,) = tracker.expire(T0 + timedelta(seconds=40))
    assert (end.event.value, end.reason, end.at) == ("end", "302", T0 + timedelta(seconds=1))
    assert tracker.end_refused() == [] and tracker.live_calls == 0


def far_request(method: str, cseq: int, sdp: str = "") -> bytes:
    """A request of the called party's in the dialog: its From is the dialog's To."""
    return message(
        f"{method} sip:9001@10.0.0.11 SIP/2.0",
        f"Via: SIP/2.0/UDP 10.0.0.12:5060;branch=z9hG4bKf{method}{cseq}",
        "From: <sip:9002@pbx>;tag=b",
        "To: <sip:9001@pbx>;tag=a",
        "Call-ID: call-7",
        f"CSeq: {cseq} {method}",
        sdp=sdp,
    )


def far_request_answered(cseq: int, sdp: str) -> bytes:
    """The caller's 200 to a request of the called party's (it copies From, To, CSeq)."""
    return message(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 10.0.0.12:5060;branch=z9hG4bKf",
        "From: <sip:9002@pbx>;tag=b",
        "To: <sip:9001@pbx>;tag=a",
        "Call-ID: call-7",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:9001@10.0.0.11:5060>",
        sdp=sdp,
    )


def test_hold_and_resume_by_late_offer_follow_the_answer_in_the_ack() -> None:
    """RFC 3261 §14.1: a re-INVITE without SDP, the offer in the 200, the answer in the ACK.
    The called party numbers its requests from 1 too: its 1 INVITE is no retransmission of
    the caller's (§12.2.1.1)."""
    tracker = SipTracker()
    seen = feed(tracker, invite(sdp=offer("10.0.0.11", 4000)), PHONE_A, PHONE_B)
    seen += feed(
        tracker, response("200 OK", "1 INVITE", offer("10.0.0.12", 5000)), PHONE_B, PHONE_A, 1
    )
    for cseq, answer, second in ((1, "inactive", 10), (2, "sendrecv", 20)):
        seen += feed(tracker, far_request("INVITE", cseq), PHONE_B, PHONE_A, second)
        ok = far_request_answered(cseq, offer("10.0.0.11", 4000))
        seen += feed(tracker, ok, PHONE_A, PHONE_B, second)
        seen += feed(tracker, ok, PHONE_A, PHONE_B, second)  # retransmitted
        ack = far_request("ACK", cseq, offer("10.0.0.12", 5000, answer))
        seen += feed(tracker, ack, PHONE_B, PHONE_A, second)
        seen += feed(tracker, ack, PHONE_B, PHONE_A, second)  # retransmitted
    assert events(seen) == [
        ("start", "10.0.0.11:4000"),
        ("answer", "10.0.0.12:5000"),
        ("hold", "10.0.0.12:5000"),
        ("resume", "10.0.0.12:5000"),
    ]


@given(
    st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: a.exploded)),
    st.integers(0, 65535),
)
def test_an_endpoint_comes_out_as_a_copy_with_its_compressed_address_would(
    ip: str, port: int
) -> None:
    endpoint = Endpoint(ip, port)
    assert compressed(endpoint) == Endpoint(normalize_ip(ip) or ip, port)
