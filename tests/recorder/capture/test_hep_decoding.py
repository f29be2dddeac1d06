"""HEP datagrams decoded into the packets agents saw, and bad ones refused by kind: packets
built to the HEP3 specification in tests/recorder/capture/hep_build.py."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.capture import hep
from recorder.capture.hep import HepDecoder, HepRefused, decode, listen_address
from recorder.capture.ip import IpDecoder
from recorder.capture.link import LINKTYPE_ETHERNET, ip_of_frame
from tests.recorder.capture.hep_build import (
    chunk,
    hep2_packet,
    hep3,
    hep3_chunks,
    hep3_packet,
)

AT = 1_796_000_000.25
INVITE = b"INVITE sip:9002@10.1.0.2 SIP/2.0\r\nCall-ID: a\r\n\r\n"


def frame_of(datagram: bytes, arrival: float = AT, auth_key: bytes = b""):
    faults: dict[str, int] = {}
    found = HepDecoder(auth_key).frame(datagram, arrival, faults)
    return found, faults


def inner(frame: bytes):
    return IpDecoder(lambda kind: None).decode(ip_of_frame(LINKTYPE_ETHERNET, frame), AT)


def test_a_hep3_sip_packet_becomes_the_udp_frame_the_agent_saw() -> None:
    datagram = hep3_packet("10.1.0.1", 5060, "10.1.0.2", 5062, INVITE, AT, capture_id=2001)

    found, faults = frame_of(datagram)

    assert faults == {}
    assert (found.at, found.capture_id) == (AT, 2001)
    datagram_inside = inner(found.frame)
    assert (datagram_inside.src_ip, datagram_inside.dst_ip) == ("10.1.0.1", "10.1.0.2")
    assert struct.unpack_from("!HH", datagram_inside.payload) == (5060, 5062)
    assert datagram_inside.payload[8:] == INVITE


def test_a_hep3_ipv6_tcp_packet_keeps_its_addresses_and_numbers_its_segments() -> None:
    decoder, faults = HepDecoder(), {}
    first, second = INVITE[:20], INVITE[20:]
    frames = [
        decoder.frame(hep3_packet("2001:db8::1", 5060, "2001:db8::2", 5060, part, AT,
                                  ip_protocol=6), AT, faults)
        for part in (first, second)
    ]  # fmt: skip

    assert faults == {}
    segments = [inner(found.frame) for found in frames]
    assert {(s.src_ip, s.dst_ip, s.proto) for s in segments} == {("2001:db8::1", "2001:db8::2", 6)}
    # The second segment's sequence number follows the first's payload.
    seqs = [struct.unpack_from("!I", s.payload, 4)[0] for s in segments]
    assert seqs[1] - seqs[0] == len(first)


def test_hepv2_is_read_with_its_little_endian_time_header() -> None:
    found, faults = frame_of(hep2_packet("10.1.0.1", 5060, "10.1.0.2", 5060, INVITE, AT, 7))

    assert faults == {}
    assert (found.at, found.capture_id) == (AT, 7)
    assert inner(found.frame).payload[8:] == INVITE


def test_hepv1_has_no_time_and_takes_its_arrival() -> None:
    datagram = hep2_packet("10.1.0.1", 5060, "10.1.0.2", 5060, INVITE, AT, version=1)

    found, faults = frame_of(datagram, arrival=AT + 3)

    assert faults == {} and found.at == AT + 3 and found.capture_id is None


def good_chunks() -> list[bytes]:
    return hep3_chunks("10.1.0.1", 5060, "10.1.0.2", 5060, INVITE, AT)


def without(type_id: int) -> list[bytes]:
    return [c for c in good_chunks() if struct.unpack_from("!H", c, 2)[0] != type_id]


def with_length(datagram: bytes, length: int) -> bytes:
    return datagram[:4] + struct.pack("!H", length) + datagram[6:]


BAD = {
    "empty": (b"", "hep-short"),
    "a magic cut short": (b"HEP3\x00", "hep-short"),
    "version 4": (b"\x04" + bytes(40), "hep-unknown-version"),
    "text": (b"GET / HTTP/1.1\r\n\r\n", "hep-unknown-version"),
    "total longer than the datagram": (
        with_length(hep3(good_chunks()), 500), "hep-bad-length"),
    "total shorter than the datagram": (
        with_length(hep3(good_chunks()), 30), "hep-bad-length"),
    "a chunk length under its header": (
        hep3([*good_chunks(), struct.pack("!HHH", 0, 0x0011, 3)]), "hep-bad-chunk-length"),
    "a chunk running past the end": (
        hep3([*good_chunks(), struct.pack("!HHH", 0, 0x0011, 60) + b"x"]),
        "hep-bad-chunk-length"),
    "a chunk header cut short": (hep3([*good_chunks(), b"\x00\x00\x00"]),
                                 "hep-bad-chunk-length"),
    "a port of three bytes": (hep3([*without(0x0007), chunk(0x0007, b"\x13\xc4\x00")]),
                              "hep-bad-chunk-length"),
    "no payload": (hep3(without(0x000F)), "hep-no-payload"),
    "a compressed payload": (hep3([*without(0x000F), chunk(0x0010, b"\x1f\x8b")]),
                             "hep-compressed-payload"),
    "no destination address": (hep3(without(0x0004)), "hep-missing-chunk"),
    "no family": (hep3(without(0x0001)), "hep-missing-chunk"),
    "family 7": (hep3([*without(0x0001), chunk(0x0001, b"\x07")]), "hep-bad-ip-family"),
    "microseconds past a second": (
        hep3([*without(0x000A), chunk(0x000A, struct.pack("!I", 1_000_000))]),
        "hep-bad-timestamp"),
    "SCTP": (hep3([*without(0x0002), chunk(0x0002, b"\x84")]), "hep-not-udp-or-tcp"),
    "an RTCP report as JSON": (hep3([*without(0x000B), chunk(0x000B, b"\x05")]),
                               "hep-other-protocol"),
    "HEPv2 without its addresses": (b"\x02\x10\x02\x11" + bytes(8), "hep-short"),
    "HEPv2 of family 3": (b"\x02\x10\x03\x11" + bytes(40), "hep-bad-ip-family"),
    "HEPv2 without a payload": (hep2_packet("10.1.0.1", 1, "10.1.0.2", 2, b"", AT),
                                "hep-no-payload"),
}  # fmt: skip


@pytest.mark.parametrize("name", BAD)
def test_bad_hep_is_refused_with_the_kind_of_its_fault(name: str) -> None:
    datagram, kind = BAD[name]

    found, faults = frame_of(datagram)

    assert found is None
    assert faults == {kind: 1}


def test_an_unknown_chunk_is_counted_and_skipped_and_the_packet_used() -> None:
    chunks = good_chunks()
    chunks.insert(3, chunk(0x7777, b"what is this"))
    chunks.insert(5, chunk(0x0001, b"\x99", vendor=0x0004))  # a vendor's, not the family

    found, faults = frame_of(hep3(chunks))

    assert faults == {"hep-unknown-chunk": 1}
    assert inner(found.frame).payload[8:] == INVITE


def test_a_capture_time_far_from_the_collectors_clock_is_replaced_by_the_arrival() -> None:
    found, faults = frame_of(hep3_packet("10.1.0.1", 5060, "10.1.0.2", 5060, INVITE, AT),
                             arrival=AT + 3600)  # fmt: skip

    assert faults == {"hep-clock-off": 1} and found.at == AT + 3600


@pytest.mark.parametrize("sent", [b"s3cret", b"s3cret\x00"])
def test_the_shared_secret_is_accepted(sent: bytes) -> None:
    datagram = hep3_packet("10.1.0.1", 5060, "10.1.0.2", 5060, INVITE, AT, auth_key=sent)

    found, faults = frame_of(datagram, auth_key=b"s3cret")

    assert faults == {} and found is not None


@pytest.mark.parametrize("sent", [None, b"wrong", b"s3cre", b""])
def test_a_packet_without_the_shared_secret_is_refused(sent: bytes | None) -> None:
    datagram = hep3_packet("10.1.0.1", 5060, "10.1.0.2", 5060, INVITE, AT, auth_key=sent)

    found, faults = frame_of(datagram, auth_key=b"s3cret")

    assert found is None and faults == {"hep-auth-refused": 1}


def test_hepv2_has_no_key_and_is_refused_when_a_secret_is_set() -> None:
    found, faults = frame_of(hep2_packet("10.1.0.1", 1, "10.1.0.2", 2, INVITE, AT),
                             auth_key=b"s3cret")  # fmt: skip

    assert found is None and faults == {"hep-auth-refused": 1}


@given(st.binary(max_size=300))
def test_no_bytes_raise_anything_but_a_refusal(datagram: bytes) -> None:
    with contextlib.suppress(HepRefused):
        decode(datagram)


@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(0, 0x30))
def test_no_chunks_raise_anything_but_a_refusal(values: list[bytes], first: int) -> None:
    chunks = [chunk(first + index, value) for index, value in enumerate(values)]
    with contextlib.suppress(HepRefused):
        decode(hep3([*good_chunks()[:2], *chunks]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:9060", ("0.0.0.0", 9060)), ("[::]:9060", ("::", 9060)),
     (" 127.0.0.1:19060 ", ("127.0.0.1", 19060))],
)  # fmt: skip
def test_a_listener_address_is_read(text: str, expected: tuple[str, int]) -> None:
    assert listen_address(text) == expected


@pytest.mark.parametrize(
    "text", ["9060", "eth1", "0.0.0.0:0", "0.0.0.0:65536", "::1:9060", "[10.0.0.1]:9060",
             "0.0.0.0:\uff19\uff10\uff16\uff10", "host.example:9060", ""],
)  # fmt: skip
def test_a_listener_address_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="A HEP address is an IP address and a UDP port"):
        listen_address(text)


def test_hep_chunk_numbers_are_the_specifications() -> None:
    # HEP3 specification, generic chunk types: a regression here breaks every agent.
    assert (hep.IP_FAMILY, hep.CAPTURE_ID, hep.AUTH_KEY, hep.PAYLOAD) == (1, 0x0C, 0x0E, 0x0F)
    assert (hep.AF_INET, hep.AF_INET6) == (socket.AF_INET, 10)
