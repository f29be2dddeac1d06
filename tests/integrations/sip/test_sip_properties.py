"""Property-based tests: arbitrary and mutated SIP never breaks the decoder.

The parser may only raise SipDecodeError; the framer and the tracker raise nothing, and the
tracker's catch-all counter ("internal") stays at zero, which proves no unexpected exception
was swallowed either.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.observations import Endpoint
from integrations.sip.errors import SipDecodeError
from integrations.sip.framing import SipStreamFramer
from integrations.sip.message import MAX_HEADER_BYTES, SipMessage, parse_message
from integrations.sip.tracker import SipTracker
from tests.conftest import PUBLIC_CAPTURES
from tests.integrations.sip_packets import sip_datagrams

HAND_BUILT = [
    b"INVITE sip:2001@pbx SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    b'f: "A, B" <sip:1001@pbx>;tag=1\r\nt: <sip:2001@pbx>\r\ni: c1\r\nCSeq: 1 INVITE\r\n'
    b"m: <sip:1001@10.0.0.1>\r\nc: application/sdp\r\nl: 53\r\n\r\n"
    b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=sendonly\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2;received=1.2.3.4;rport=9\r\n"
    b"From: <sip:1001@pbx>;tag=1\r\nTo: <sip:1001@pbx>;tag=2\r\nCall-ID: r1\r\n"
    b"CSeq: 2 REGISTER\r\nContact: <sip:1001@10.0.0.1>;expires=60, *\r\n"
    b'Contact: <tel:+1;ext=1>;+sip.instance="<urn:uuid:1>"\r\nContent-Length: 0\r\n\r\n',
]


@cache
def seeds() -> tuple[bytes, ...]:
    real: list[bytes] = []
    for name in ("rtppcap-aaa.pcap", "rtppcap-SIP_DTMF2.pcap", "rtpparsing-forensic.pcap"):
        path = PUBLIC_CAPTURES / name
        if path.exists():
            real += [segment.payload for segment in sip_datagrams(path)][:40]
    return tuple(HAND_BUILT + real)


@st.composite
def mutated_sip(draw: st.DrawFn) -> bytes:
    """A real or hand-built message with a few bytes replaced, inserted, cut or repeated."""
    message = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(message)))
        operation = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "repeat"]))
        chunk = draw(
            st.binary(min_size=1, max_size=8)
            | st.sampled_from([b"\r\n", b":", b";", b",", b"<", b'"', b" "])
        )
        if operation == "replace":
            message[position : position + len(chunk)] = chunk
        elif operation == "insert":
            message[position:position] = chunk
        elif operation == "delete":
            del message[position : position + len(chunk)]
        elif operation == "truncate":
            del message[position:]
        else:
            message[position:position] = message[position : position + 40] * 3
    return bytes(message)


def touch_everything(message: SipMessage) -> None:
    """Every lazily parsed part, as the tracker would read it."""
    for read in (
        lambda: message.call_id,
        lambda: message.cseq,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.vias,
        lambda: message.contacts,
        lambda: message.sdp,
    ):
        with contextlib.suppress(SipDecodeError):
            read()


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@SETTINGS
@given(st.binary(max_size=2048) | mutated_sip())
def test_the_parser_raises_nothing_but_sip_decode_error(payload: bytes) -> None:
    for stream in (False, True):
        try:
            message = parse_message(payload, stream=stream)
        except SipDecodeError as error:
            assert error.kind
            continue
        touch_everything(message)


@SETTINGS
@given(st.lists(st.binary(max_size=600) | mutated_sip(), max_size=8), st.data())
def test_the_framer_raises_nothing_and_stays_bounded(
    chunks: list[bytes], data: st.DataObject
) -> None:
    framer = SipStreamFramer()
    for chunk in chunks:
        for message in framer.feed(chunk):
            assert message
        assert len(framer._buffer) <= 2 * MAX_HEADER_BYTES + len(chunk)
        if data.draw(st.booleans()):
            framer.gap()


@SETTINGS
@given(st.lists(mutated_sip() | st.binary(max_size=300), min_size=1, max_size=12))
def test_the_tracker_raises_nothing_and_hides_no_crash(payloads: list[bytes]) -> None:
    tracker = SipTracker()
    phone, pbx = Endpoint("10.0.0.1", 5060), Endpoint("fe80::1", 5060)
    for index, payload in enumerate(payloads):
        src, dst = (phone, pbx) if index % 2 else (pbx, phone)
        tracker.feed(payload, src, dst, T0, "udp" if index % 3 else "tcp")
    tracker.expire(datetime(2030, 1, 1, tzinfo=UTC))
    assert tracker.errors["internal"] == 0
