"""SIP over TCP framing: Content-Length, split and joined segments, keep-alives, gaps."""

from __future__ import annotations

from integrations.sip.framing import SipStreamFramer
from integrations.sip.message import parse_message
from tests.conftest import PUBLIC_CAPTURES, need
from tests.integrations.sip_packets import tcp_streams

OPTIONS = b"OPTIONS sip:pbx SIP/2.0\r\nCall-ID: k\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
MESSAGE = b"MESSAGE sip:pbx SIP/2.0\r\nCall-ID: m\r\nCSeq: 2 MESSAGE\r\nl: 5\r\n\r\nhello"


def test_several_messages_in_one_chunk_and_keepalives_between_them() -> None:
    framer = SipStreamFramer()
    assert framer.feed(b"\r\n\r\n" + OPTIONS + MESSAGE + b"\r\n" + OPTIONS) == [
        OPTIONS,
        MESSAGE,
        OPTIONS,
    ]


def test_one_message_over_many_chunks_byte_by_byte() -> None:
    framer = SipStreamFramer()
    out = [message for byte in MESSAGE for message in framer.feed(bytes([byte]))]
    assert out == [MESSAGE]


def test_after_a_gap_it_resynchronises_on_the_next_start_line() -> None:
    framer = SipStreamFramer()
    assert framer.feed(MESSAGE[:30]) == []
    framer.gap()
    assert framer.feed(MESSAGE[45:] + b"tail of a lost body\r\n" + OPTIONS) == [OPTIONS]
    assert framer.errors["gap"] == 1


def test_a_negative_content_length_is_counted_and_the_stream_goes_on() -> None:
    framer = SipStreamFramer()
    bad = b"INVITE sip:x SIP/2.0\r\nContent-Length: -3\r\n\r\n"
    assert framer.feed(bad + OPTIONS) == [OPTIONS]
    assert framer.errors["bad-content-length"] == 1


def test_a_megabyte_header_is_dropped_and_the_buffer_stays_bounded() -> None:
    framer = SipStreamFramer()
    framer.feed(b"INVITE sip:x SIP/2.0\r\nX-Big: ")
    for _ in range(16):
        framer.feed(b"a" * 65536)
        assert len(framer._buffer) <= 2 * 65536 + 64
    assert framer.feed(b"\r\n\r\n" + OPTIONS) == [OPTIONS]
    assert framer.errors["header-too-large"] == 1


def test_garbage_before_a_message_is_skipped() -> None:
    framer = SipStreamFramer()
    assert framer.feed(b"\x16\x03\x01garbage\r\nmore\r\n\r\n" + OPTIONS) == [OPTIONS]
    assert framer.errors["not-sip"] == 1


def test_the_fragmented_trunk_capture_frames_into_whole_messages() -> None:
    path = PUBLIC_CAPTURES / "heplify-sip_ipv4_tcp_fragmented.pcap"
    need(path.exists(), f"needs {path}")
    framed = 0
    for segments in tcp_streams(path).values():
        framer = SipStreamFramer()
        for segment in segments:
            for message in framer.feed(segment.payload):
                parse_message(message, stream=True)
                framed += 1
        assert sum(framer.errors.values()) == 0
    # 37 INVITEs, 37 ACKs, 63 UPDATEs, 34 BYEs, 5 PRACKs, 5 OPTIONS, 2 CANCELs and 223
    # responses; some segments hold two messages, many messages span several segments.
    assert framed == 406
