"""The SIP message parser: start lines, headers, addresses, SDP and hostile input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.sip import message, uri
from integrations.sip.errors import SipDecodeError
from integrations.sip.message import HEADER_END, empty_line, looks_like_sip, parse_message
from integrations.sip.parties import extension_of
from integrations.sip.sdp import parse_sdp
from integrations.sip.uri import parse_name_addr, parse_uri
from tests.conftest import PUBLIC_CAPTURES, need
from tests.integrations.sip_packets import sip_datagrams


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


def with_length(message: bytes) -> bytes:
    """Fill in `l: {length}` with the real body length."""
    body = message.partition(b"\r\n\r\n")[2]
    return message.replace(b"{length}", str(len(body)).encode())


INVITE_WITH_TWO_STREAMS = with_length(
    crlf(
        """
INVITE sip:2001@pbx.example.com SIP/2.0
v: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bK1
f: "Reception, Front Desk" <sip:1001@pbx.example.com>;tag=a1
t: <sip:2001@pbx.example.com>
i: call-1@10.0.0.11
CSeq: 1 INVITE
m: <sip:1001@10.0.0.11:5060>
c: application/sdp
Subject: a folded
  header line
l: {length}

v=0
o=- 1 1 IN IP4 10.0.0.11
s=-
c=IN IP4 10.0.0.11
t=0 0
m=audio 16384 RTP/AVP 0 8 101
a=rtpmap:101 telephone-event/8000
a=sendrecv
m=video 0 RTP/AVP 96
m=audio 16390 RTP/SAVP 9
c=IN IP4 10.0.0.12
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc
a=sendonly
"""
    )
)


def test_it_reads_a_request_with_compact_and_folded_headers() -> None:
    message = parse_message(INVITE_WITH_TWO_STREAMS)
    assert (message.method, message.request_uri) == ("INVITE", "sip:2001@pbx.example.com")
    assert message.call_id == "call-1@10.0.0.11"
    assert message.header("SUBJECT") == "a folded header line"
    assert message.from_.display_name == "Reception, Front Desk"
    assert message.from_.tag == "a1"
    assert message.contacts[0].uri.host_ip == "10.0.0.11"
    assert message.cseq.number == 1 and message.cseq.method == "INVITE"


def test_it_reads_every_audio_stream_of_the_sdp() -> None:
    sdp = parse_message(INVITE_WITH_TWO_STREAMS).sdp
    assert sdp is not None
    first, second = sdp.audio  # the video stream has port 0 and is left out
    assert (first.address, first.port, first.direction, first.encrypted) == (
        "10.0.0.11",
        16384,
        "sendrecv",
        False,
    )
    assert first.payload_types == (
        (0, "PCMU/8000"),
        (8, "PCMA/8000"),
        (101, "telephone-event/8000"),
    )
    assert (second.address, second.port, second.direction, second.encrypted) == (
        "10.0.0.12",
        16390,
        "sendonly",
        True,
    )


def test_it_reads_a_response_and_multiple_contacts() -> None:
    message = parse_message(
        crlf(
            """
SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.11;branch=z9hG4bK2;received=192.0.2.4;rport=6000
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1
From: <sip:1001@example.com>;tag=x
To: <sip:1001@example.com>;tag=y
Call-ID: reg-1
CSeq: 7 REGISTER
Contact: "Desk, left" <sip:1001@10.0.0.11>;expires=60, <sip:1001@10.0.0.12>;expires=30
Contact: <sip:1001@10.0.0.13>;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"
Content-Length: 0
"""
        )
        + b"\r\n"
    )
    assert (message.status, message.reason) == (200, "OK")
    assert [c.uri.host for c in message.contacts] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert message.contacts[0].display_name == "Desk, left"
    assert message.contacts[1].param("expires") == "30"
    assert (
        message.contacts[2].param("+sip.instance")
        == "<urn:uuid:00000000-0000-0000-0000-000000000001>"
    )
    assert [via.host for via in message.vias] == ["10.0.0.11", "10.0.0.1"]
    assert message.vias[0].param("received") == "192.0.2.4"


@pytest.mark.parametrize(
    ("uri", "user", "host", "port", "extension"),
    [
        ("sip:01234@pbx", "01234", "pbx", None, "01234"),
        (
            "sips:alice%20smith@example.com:5061;transport=tls",
            "alice smith",
            "example.com",
            5061,
            "alice smith",
        ),
        (
            "sip:+33360653674@10.251.23.139:5060;user=phone",
            "+33360653674",
            "10.251.23.139",
            5060,
            "+33360653674",
        ),
        ("tel:+14255550100;ext=100", "+14255550100", "", None, "100"),
        ("tel:+1-425-555-0100", "+1-425-555-0100", "", None, "+1-425-555-0100"),
        (
            "sip:+14255550100;ext=100@example.com;user=phone",
            "+14255550100;ext=100",
            "example.com",
            None,
            "100",
        ),
        ("sip:[2001:db8::1]:5070", "", "2001:db8::1", 5070, ""),
        (
            "sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060",
            "4321",
            "fec0:0:0:0:216:d3ff:fe0d:22c",
            5060,
            "4321",
        ),
    ],
)
def test_it_keeps_the_user_part_as_written(
    uri: str, user: str, host: str, port: int | None, extension: str
) -> None:
    parsed = parse_uri(uri)
    assert (parsed.user, parsed.host, parsed.port) == (user, host, port)
    assert extension_of(parsed) == extension


def test_a_name_addr_without_angle_brackets_carries_header_params() -> None:
    contact = parse_name_addr("sip:100@127.0.1.1:5060;expires=30")
    assert contact.uri.port == 5060
    assert contact.param("expires") == "30"


def test_it_reads_the_nb6_401_whose_authenticate_header_is_folded() -> None:
    path = PUBLIC_CAPTURES / "rtppcap-nb6-startup.pcap"
    need(path.exists(), f"needs {path}")
    challenge = next(s for s in sip_datagrams(path) if s.payload.startswith(b"SIP/2.0 401"))
    message = parse_message(challenge.payload)
    authenticate = message.header("www-authenticate") or ""
    assert 'qop="auth"' in authenticate and "\n" not in authenticate


def test_every_sip_datagram_of_the_public_captures_parses() -> None:
    need(PUBLIC_CAPTURES.is_dir(), f"needs the public captures in {PUBLIC_CAPTURES}")
    parsed = 0
    for path in sorted(PUBLIC_CAPTURES.glob("*.pcap*")):
        for segment in sip_datagrams(path):
            message = parse_message(segment.payload)
            assert message.call_id
            parsed += 1
    assert parsed > 200


def test_looks_like_sip_recognises_start_lines_only() -> None:
    assert looks_like_sip(b"INVITE sip:1@h SIP/2.0\r\n")
    assert looks_like_sip(b"SIP/2.0 180 Ringing\r\n")
    assert looks_like_sip(b"\r\nOPTIONS sip:h SIP/2.0\r\n")
    assert not looks_like_sip(b"\x80\x00\x01\x02rtp")
    assert not looks_like_sip(b"GET / HTTP/1.1\r\n")
    assert not looks_like_sip(b"SIP/2.0 abc")
    assert not looks_like_sip(b"")


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not-sip"),
        (b"INVITE SIP/2.0\r\n\r\n", "bad-start-line"),
        (b"SIP/2.0 99 Odd\r\n\r\n", "bad-start-line"),
        (b"OPTIONS sip:h SIP/2.0\r\nno colon here\r\n\r\n", "bad-header"),
        (b"OPTIONS sip:h SIP/2.0\r\nContent-Length: -5\r\n\r\n", "bad-content-length"),
        (b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 70000\r\n\r\n", "body-too-large"),
        (b"OPTIONS sip:h SIP/2.0\r\nl: 10\r\n\r\nshort", "truncated-body"),
        (b"OPTIONS sip:h SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nab", "bad-content-length"),
        (b"OPTIONS sip:h SIP/2.0\r\n" + b"X: y\r\n" * 201 + b"\r\n", "too-many-headers"),
        (b"OPTIONS sip:h SIP/2.0\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", "header-too-large"),
    ],
)
def test_bad_input_raises_one_exception_with_a_kind(payload: bytes, kind: str) -> None:
    with pytest.raises(SipDecodeError) as raised:
        parse_message(payload)
    assert raised.value.kind == kind


def test_invalid_utf8_in_a_display_name_does_not_lose_the_register() -> None:
    message = parse_message(
        b'REGISTER sip:example.com SIP/2.0\r\nTo: "J\xfcrgen\xff" <sip:9001@example.com>\r\n'
        b"From: <sip:9001@example.com>;tag=1\r\nCall-ID: u\r\nCSeq: 1 REGISTER\r\n\r\n"
    )
    assert message.to.uri.user == "9001"
    assert message.to.display_name == "J\ufffdrgen\ufffd"
    assert message.replaced_bytes


def test_over_udp_the_datagram_end_bounds_the_body() -> None:
    head = b"MESSAGE sip:h SIP/2.0\r\nCall-ID: b\r\n"
    assert parse_message(head + b"\r\nhello").body == b"hello"
    assert parse_message(head + b"l: 2\r\n\r\nhello").body == b"he"
    assert parse_message(head + b"\r\nhello", stream=True).body == b""


def test_sdp_hold_by_zero_address_and_by_direction() -> None:
    legacy = parse_sdp(b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n")
    modern = parse_sdp(b"v=0\r\na=inactive\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert legacy.audio[0].holds and modern.audio[0].holds
    assert modern.audio[0].direction == "inactive"


def test_the_sdp_of_a_multipart_body_is_its_application_sdp_part() -> None:
    """A SIPREC INVITE carries its SDP beside the recording metadata (RFC 7866 §6.1) in a
    multipart/mixed body (RFC 2046 §5.1.1); the boundary is case-sensitive."""
    sdp = b"v=0\r\nc=IN IP4 10.0.0.5\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\n"
    body = (
        b"--OSS-Bound\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n"
        b"--OSS-Bound\r\nContent-Type: application/sdp\r\n\r\n" + sdp + b"--OSS-Bound--\r\n"
    )
    head = b"INVITE sip:srs@10.0.0.9 SIP/2.0\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\n"
    typed = b'Content-Type: multipart/mixed;boundary="OSS-Bound"\r\n'
    message = parse_message(head + typed + b"\r\n" + body)
    assert [stream.port for stream in message.sdp.audio] == [4000, 4002]
    unbounded = parse_message(head + b"Content-Type: multipart/mixed\r\n\r\n" + body)
    assert unbounded.sdp is None


# -- remembered name-addrs (uri.py): the same answer as a parse, and no memory for long ones ---

NAME_ADDR_TEXTS = st.one_of(
    st.sampled_from(
        [
            '"Mary" <sip:9002@10.0.0.2>;tag=1',
            "<sip:9001@pbx.example.com;user=phone>",
            "sip:9003@10.0.0.3;tag=x",
            '"unclosed <sip:1@2',
            "<sip:1@2",
        ]
    ),
    st.text(st.sampled_from('"<>;=@:sip9 ,\\tag'), max_size=40),
)


def parsed_or_error(parse, text: str) -> object:
    try:
        return parse(text)
    except SipDecodeError as error:
        return ("error", error.kind)


@given(NAME_ADDR_TEXTS)
def test_a_remembered_name_addr_is_the_one_a_parse_gives(text: str) -> None:
    fresh = parsed_or_error(uri._parse_name_addr, text)
    assert parsed_or_error(parse_name_addr, text) == fresh
    assert parsed_or_error(parse_name_addr, text) == fresh  # remembered, or failing again


def test_a_long_name_addr_is_parsed_but_not_remembered() -> None:
    long_text = f'"{"x" * uri.REMEMBERED_TEXT_MAX}" <sip:9001@10.0.0.1>;tag=long'
    before = uri._remembered_name_addr.cache_info().currsize
    assert parse_name_addr(long_text).uri.user == "9001"
    assert uri._remembered_name_addr.cache_info().currsize == before


# Bytes where header ends hide: line ends of every kind next to each other and to text.
LINE_END_SOUP = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":"]), max_size=30).map(
    b"".join
)


@given(LINE_END_SOUP, st.integers(0, 40))
def test_the_empty_line_is_found_where_the_header_end_pattern_finds_it(
    data: bytes, limit: int
) -> None:
    found = HEADER_END.search(data, 0, limit)
    expected = None if found is None else (found.start(), found.end())
    assert empty_line(data, limit) == expected
    assert empty_line(bytearray(data), limit) == expected


def test_a_header_is_parsed_once_and_a_broken_one_fails_each_time_it_is_read() -> None:
    message = parse_message(
        b"BYE sip:h SIP/2.0\r\nFrom: <sip:1@h>;tag=1\r\nCSeq: x BYE\r\nCall-ID: p\r\n\r\n"
    )
    assert message.from_ is message.from_
    for _ in range(2):
        with pytest.raises(SipDecodeError) as raised:
            message.cseq
        assert raised.value.kind == "bad-cseq"


@given(
    st.one_of(
        st.text(st.sampled_from("0123456789.:[]abcdef%"), max_size=24),
        st.ip_addresses().map(str),
        st.ip_addresses().map(lambda address: f"[{address}]"),
    )
)
def test_an_address_is_written_as_ipaddress_writes_it(text: str) -> None:
    try:
        expected = str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        expected = None
    assert uri.normalize_ip.__wrapped__(text) == expected  # the parse, not what it remembered


@given(st.text(st.sampled_from(" \t\r:abc\u00a0\x1c\ufffd;"), max_size=30))
def test_a_remembered_header_line_is_the_one_a_parse_gives(line: str) -> None:
    fresh = parsed_or_error(message.parse_header_line, line)
    assert parsed_or_error(message._remembered_header_line, line) == fresh
    assert parsed_or_error(message._remembered_header_line, line) == fresh


def test_a_long_header_line_is_parsed_but_not_remembered() -> None:
    long_line = "X-Long: " + "x" * message.REMEMBERED_LINE_MAX
    before = message._remembered_header_line.cache_info().currsize
    parsed = parse_message(f"OPTIONS sip:h SIP/2.0\r\n{long_line}\r\n\r\n".encode())
    assert parsed.header("x-long") == "x" * message.REMEMBERED_LINE_MAX
    assert message._remembered_header_line.cache_info().currsize == before


# -- uri.py's walks, and the searches that stand in for them where they give the same --


QUOTES_AND_ANGLES = st.text(st.sampled_from('"<>\\,;= ab'), max_size=24)


@given(QUOTES_AND_ANGLES, st.sampled_from([",", ";"]))
def test_a_text_is_split_where_the_walk_splits_it(text: str, separator: str) -> None:
    assert uri.split_outside_quotes(text, separator) == uri.split_walking(text, separator)


@given(QUOTES_AND_ANGLES)
def test_the_angle_brackets_are_found_where_the_walk_finds_them(text: str) -> None:
    assert parsed_or_error(uri.angle_bracket_span, text) == parsed_or_error(
        uri.angle_span_walking, text
    )


VIA_TEXTS = st.one_of(
    st.sampled_from(
        [
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport",
            "SIP/2.0/TCP [2001:db8::1]:5061;received=1.2.3.4",
            "SIP/2.0/UDP host:99999",
            "SIP/1.0/UDP h",
        ]
    ),
    st.text(st.sampled_from("SIP/2.0UDP :;=[]rport9"), max_size=40),
)


@given(VIA_TEXTS)
def test_a_remembered_via_is_the_one_a_parse_gives(text: str) -> None:
    fresh = parsed_or_error(uri._parse_via, text)
    assert parsed_or_error(uri.parse_via, text) == fresh
    assert parsed_or_error(uri.parse_via, text) == fresh  # remembered, or failing again


def test_a_long_via_is_parsed_but_not_remembered() -> None:
    long_via = f"SIP/2.0/UDP 10.0.0.1;branch={'z' * uri.REMEMBERED_TEXT_MAX}"
    before = uri._remembered_via.cache_info().currsize
    assert uri.parse_via(long_via).host == "10.0.0.1"
    assert uri._remembered_via.cache_info().currsize == before
