from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.media.rtp import RtpDecodeError, parse_rtp
from tests.recorder.media.rtp_build import rtp


def test_it_reads_every_fixed_header_field():
    packet = parse_rtp(rtp(65535, 0xFFFFFFF0, b"abc", ssrc=0xDEADBEEF, payload_type=9, marker=True))
    assert packet.marker is True
    assert packet.payload_type == 9
    assert packet.sequence == 65535
    assert packet.timestamp == 0xFFFFFFF0
    assert packet.ssrc == 0xDEADBEEF
    assert packet.payload == b"abc"
    assert packet.csrcs == ()
    assert packet.extension is None
    assert packet.padding == 0


def test_it_skips_the_csrc_list_extension_and_padding():
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0, 1, 2, 3)
    csrcs = struct.pack("!II", 11, 22)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00"
    data = header + csrcs + extension + b"voice" + b"\x00\x00\x03"
    packet = parse_rtp(data)
    assert packet.csrcs == (11, 22)
    assert packet.extension is not None
    assert packet.extension.profile == 0xBEDE
    assert packet.extension.data == b"\x10\xff\x00\x00"
    assert packet.payload == b"voice"
    assert packet.padding == 3


@pytest.mark.parametrize("second_byte", [200, 201, 202, 203, 204])
def test_it_refuses_rtcp(second_byte):
    data = struct.pack("!BBHII", 0x81, second_byte, 7, 0, 0)
    with pytest.raises(RtpDecodeError) as refused:
        parse_rtp(data)
    assert refused.value.kind == "rtcp"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x80\x00\x00", "truncated-header"),
        (b"\x40" + bytes(11), "bad-version"),
        (b"\x83" + bytes(11) + bytes(8), "truncated-csrc"),
        (b"\x90" + bytes(11) + b"\x00\x00", "truncated-extension"),
        (b"\x90" + bytes(11) + b"\x00\x00\x00\x02" + bytes(4), "truncated-extension"),
        (b"\xa0" + bytes(11) + b"ab\x00", "bad-padding"),
        (b"\xa0" + bytes(11) + b"ab\x04", "bad-padding"),
        (b"\xa0" + bytes(11), "bad-padding"),
    ],
)
def test_it_names_what_is_wrong_with_malformed_packets(data, kind):
    with pytest.raises(RtpDecodeError) as refused:
        parse_rtp(data)
    assert refused.value.kind == kind


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_nothing_but_rtp_decode_error(data):
    try:
        packet = parse_rtp(data)
    except RtpDecodeError:
        return
    assert 0 <= packet.payload_type <= 127
    assert len(packet.payload) <= len(data) - 12


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 127).filter(lambda pt: pt not in range(72, 77)),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.binary(max_size=40),
    st.integers(0, 20),
)
def test_built_packets_parse_back(sequence, timestamp, ssrc, payload_type, csrcs, payload, padding):
    first = 0x80 | len(csrcs) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", first, payload_type, sequence, timestamp, ssrc)
    data += b"".join(struct.pack("!I", csrc) for csrc in csrcs) + payload
    if padding:
        data += bytes(padding - 1) + bytes([padding])
    packet = parse_rtp(data)
    assert (packet.sequence, packet.timestamp, packet.ssrc) == (sequence, timestamp, ssrc)
    assert packet.payload_type == payload_type
    assert packet.csrcs == tuple(csrcs)
    assert packet.payload == payload
    assert packet.padding == padding
