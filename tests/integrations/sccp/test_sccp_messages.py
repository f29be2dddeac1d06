"""Skinny message decoders, on real message bytes from the public captures and on hand-built
messages for the newer layouts (V17 ipv4or6, dynamic V2 strings, 25-byte DNs)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.sccp import messages as m
from integrations.sccp.messages import SccpDecodeError, decode_message, split_message
from tests.conftest import PUBLIC_CAPTURES, need
from tests.integrations.sccp_build import fixed, ipv4, ipv4or6, skinny, u32
from tests.integrations.sccp_streams import first_frame, skinny_frames

CALL_CAPTURE = PUBLIC_CAPTURES / "pyskinny-cm_call_from_pyskinny_to_7912.pcapng"
CM2_CAPTURE = PUBLIC_CAPTURES / "pyskinny-cm2_register.pcapng"
VPHONE_CAPTURE = PUBLIC_CAPTURES / "pyskinny-vphone_hold_unhold.pcap"


def decode_first(path, message_id):
    need(path.is_file(), f"needs the public capture {path}")
    frame = first_frame(path, message_id)
    return decode_message(frame.version, frame.message_id, frame.payload)


# --- Real bytes, CUCM 4.x ----------------------------------------------------------------------


def test_register_names_the_device_its_station_ip_and_protocol_version():
    register = decode_first(CALL_CAPTURE, m.REGISTER)
    assert register == m.Register("SEP001380AD9E5F", "10.102.10.209", 30007, 7)


def test_register_ack_gives_the_keepalive_interval():
    assert decode_first(CALL_CAPTURE, m.REGISTER_ACK).keepalive_interval == 30


def test_line_stat_maps_line_1_to_1012_exactly_as_sent():
    line = decode_first(CALL_CAPTURE, m.LINE_STAT)
    assert line == m.LineStat(1, "1012", "8165551012", "1012")


def test_call_state_is_ring_in_on_line_1_for_callref_16777247():
    assert decode_first(CALL_CAPTURE, m.CALL_STATE) == m.CallState(4, 1, 16777247)


def test_call_info_384_gives_parties_line_callref_and_inbound_type():
    info = decode_first(CALL_CAPTURE, m.CALL_INFO)
    assert info == m.CallInfo("1003", "Python", "1012", "1012", 1, 16777247, 1)


def test_open_receive_channel_carries_codec_and_callref():
    channel = decode_first(CALL_CAPTURE, m.OPEN_RECEIVE_CHANNEL)
    assert (channel.pass_thru_party_id, channel.packet_ms, channel.compression_type) == (
        16777473,
        20,
        4,
    )
    assert channel.call_reference == 16777247


def test_open_receive_channel_ack_without_callref_gives_the_phone_rtp_address():
    ack = decode_first(CALL_CAPTURE, m.OPEN_RECEIVE_CHANNEL_ACK)
    assert ack == m.OpenReceiveChannelAck(0, "10.102.10.209", 16384, 16777473, None)


def test_start_media_transmission_basic_gives_the_far_rtp_address():
    smt = decode_first(CALL_CAPTURE, m.START_MEDIA_TRANSMISSION)
    assert (smt.remote_ip, smt.remote_port, smt.packet_ms, smt.compression_type) == (
        "10.102.219.27",
        60186,
        20,
        4,
    )
    assert (smt.conference_id, smt.pass_thru_party_id, smt.call_reference) == (
        16777247,
        16777473,
        16777247,
    )
    assert not smt.legacy


def test_off_hook_with_an_empty_payload_has_no_line():
    assert decode_first(CALL_CAPTURE, m.OFF_HOOK) == m.HookEvent(True, None, None)


def test_soft_key_end_call_names_line_and_callref():
    event = decode_first(CALL_CAPTURE, m.SOFT_KEY_EVENT)
    assert event == m.SoftKeyEvent(9, 1, 16777247)


def test_stop_media_and_close_receive_channel_carry_callref():
    stop = decode_first(CALL_CAPTURE, m.STOP_MEDIA_TRANSMISSION)
    close = decode_first(CALL_CAPTURE, m.CLOSE_RECEIVE_CHANNEL)
    assert stop == m.StopMedia(False, 16777247, 16777473, 16777247)
    assert close == m.StopMedia(True, 16777247, 16777473, 16777247)


# --- Real bytes, legacy CallManager 2.x ------------------------------------------------------


def test_cm2_line_stat_is_28_bytes_and_still_gives_the_dn():
    assert decode_first(CM2_CAPTURE, m.LINE_STAT) == m.LineStat(1, "1091")


def test_cm2_register_and_ip_port():
    assert decode_first(CM2_CAPTURE, m.REGISTER).device_name == "pyskinny01"
    assert decode_first(CM2_CAPTURE, m.REGISTER).station_ip == "10.102.172.11"
    assert decode_first(CM2_CAPTURE, m.IP_PORT) == m.IpPort(5001)


def test_cm2_register_reject_text():
    reject = decode_first(CM2_CAPTURE, m.REGISTER_REJECT)
    assert reject == m.RegisterReject("Error: No License")


def test_cm2_keypad_button_digit_with_line():
    assert decode_first(CM2_CAPTURE, m.KEYPAD_BUTTON) == m.KeypadButton(1, 1, 0)


def test_legacy_start_media_transmission_is_36_bytes_without_ids():
    smt = decode_first(VPHONE_CAPTURE, m.START_MEDIA_TRANSMISSION)
    assert smt == m.StartMediaTransmission("10.102.219.27", 5001, 30, 4)
    assert smt.legacy


def test_legacy_start_media_reception():
    reception = decode_first(VPHONE_CAPTURE, m.START_MEDIA_RECEPTION)
    assert reception == m.StartMediaReception("10.102.219.27", 30, 4)


def test_legacy_call_info_128_has_parties_only():
    info = decode_first(VPHONE_CAPTURE, m.CALL_INFO)
    assert info == m.CallInfo("1091", "Line 1091", "1099", "John Doe")


def test_legacy_stimulus_hold_and_4_byte_stop_media():
    assert decode_first(VPHONE_CAPTURE, m.STIMULUS) == m.Stimulus(3, 1, None)
    stop = decode_first(VPHONE_CAPTURE, m.STOP_MEDIA_TRANSMISSION)
    assert stop.pass_thru_party_id is None


# --- Hand-built newer layouts ----------------------------------------------------------------


def test_v17_open_receive_channel_ack_reads_an_ipv4or6_address():
    payload = u32(0) + ipv4or6("10.1.2.3") + u32(24000, 77, 555)
    ack = decode_message(0x11, m.OPEN_RECEIVE_CHANNEL_ACK, payload)
    assert ack == m.OpenReceiveChannelAck(0, "10.1.2.3", 24000, 77, 555)


def test_v17_open_receive_channel_ack_with_ipv6():
    payload = u32(0) + ipv4or6("2001:db8::5") + u32(24000, 77, 555)
    ack = decode_message(0x12, m.OPEN_RECEIVE_CHANNEL_ACK, payload)
    assert (ack.ip, ack.port) == ("2001:db8::5", 24000)


def test_v17_start_media_transmission_moves_port_codec_and_callref():
    qualifier = u32(0, 0) + struct.pack("<HH", 1, 0) + bytes([0, 101, 0, 0])
    payload = u32(9, 77) + ipv4or6("10.9.9.9") + u32(30000, 20, 0x56) + qualifier + u32(555)
    smt = decode_message(0x11, m.START_MEDIA_TRANSMISSION, payload)
    assert (smt.remote_ip, smt.remote_port, smt.packet_ms) == ("10.9.9.9", 30000, 20)
    assert (smt.compression_type, smt.dynamic_payload, smt.call_reference) == (0x56, 101, 555)
    assert m.rtp_payload_types(smt.compression_type, smt.dynamic_payload) == ((101, "iLBC/8000"),)


def test_line_stat_v2_reads_nul_terminated_strings():
    payload = u32(2, 0) + b"9002\x00John Doe\x009002\x00"
    assert decode_message(0x11, m.LINE_STAT_V2, payload) == m.LineStat(
        2, "9002", "John Doe", "9002"
    )


def test_call_info_v2_reads_numbers_then_names():
    strings = [b"6175551212", b"", b"9001", b"9001", b"", b"", b"", b"", b"", b"Carl", b"Mary"]
    payload = u32(1, 42, 1, 0, 0, 1, 0, 0) + b"\x00".join(strings) + b"\x00"
    info = decode_message(0x11, m.CALL_INFO_V2, payload)
    assert info == m.CallInfo("6175551212", "Carl", "9001", "Mary", 1, 42, 1)


def test_dialed_number_is_25_bytes_from_v18_and_24_before():
    assert decode_message(0x12, m.DIALED_NUMBER, fixed("01234", 25) + u32(1, 7)) == (
        m.DialedNumber("01234", 1, 7)
    )
    assert decode_message(0, m.DIALED_NUMBER, fixed("01234", 24) + u32(1, 7)) == (
        m.DialedNumber("01234", 1, 7)
    )


def test_compression_types_map_to_static_rtp_payload_types():
    assert m.rtp_payload_types(4, 0) == ((0, "PCMU/8000"),)
    assert m.rtp_payload_types(2, 0) == ((8, "PCMA/8000"),)
    assert m.rtp_payload_types(6, 0) == ((9, "G722/8000"),)
    assert m.rtp_payload_types(11, 0) == ((18, "G729/8000"),)
    assert m.rtp_payload_types(0x999, 0) == ()


# --- Malformed -------------------------------------------------------------------------------


def test_a_length_past_the_buffer_is_a_decode_error():
    message = skinny(m.CALL_STATE, u32(4, 1, 2))
    with pytest.raises(SccpDecodeError) as error:
        split_message(message[:-1])
    assert error.value.kind == "length-past-buffer"


def test_a_length_below_4_is_a_decode_error():
    with pytest.raises(SccpDecodeError) as error:
        split_message(struct.pack("<III", 3, 0, 0x111))
    assert error.value.kind == "length-below-4"


def test_a_truncated_payload_is_a_decode_error():
    with pytest.raises(SccpDecodeError) as error:
        decode_message(0, m.CALL_STATE, u32(4, 1))
    assert error.value.kind == "truncated"


def test_an_unknown_id_is_not_an_error():
    assert decode_message(0, 0x7777, b"whatever") is None


def test_a_dn_with_non_ascii_bytes_is_refused_not_rewritten():
    with pytest.raises(SccpDecodeError) as error:
        decode_message(0, m.LINE_STAT, u32(1) + fixed("10\xe912", 24))
    assert error.value.kind == "bad-dn"


def test_an_invalid_ip_address_type_is_a_decode_error():
    payload = u32(0, 3) + bytes(16) + u32(1, 2)
    with pytest.raises(SccpDecodeError) as error:
        decode_message(0x11, m.OPEN_RECEIVE_CHANNEL_ACK, payload)
    assert error.value.kind == "bad-ip-type"


def test_register_needs_its_station_ip():
    with pytest.raises(SccpDecodeError):
        decode_message(0, m.REGISTER, fixed("SEP1", 16) + ipv4("10.0.0.1"))


# --- Properties ------------------------------------------------------------------------------

VERSIONS = st.sampled_from(sorted(m.HEADER_VERSIONS))
IDS = st.sampled_from(sorted(m.DECODERS))


@settings(max_examples=400, deadline=None)
@given(version=VERSIONS, message_id=IDS, payload=st.binary(max_size=420))
def test_arbitrary_payloads_raise_nothing_but_sccp_decode_error(version, message_id, payload):
    with contextlib.suppress(SccpDecodeError):
        decode_message(version, message_id, payload)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_arbitrary_buffers_split_or_raise_sccp_decode_error(data):
    with contextlib.suppress(SccpDecodeError):
        split_message(data)


def real_frames():
    if not CALL_CAPTURE.is_file():
        return [(0, m.CALL_STATE, u32(4, 1, 2, 0, 4, 0))]
    frames = skinny_frames(CALL_CAPTURE) + skinny_frames(CM2_CAPTURE)[:300]
    return [(frame.version, frame.message_id, frame.payload) for _, _, frame in frames]


REAL_FRAMES = real_frames()


@settings(max_examples=400, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(REAL_FRAMES) - 1),
    flips=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), max_size=6),
    cut=st.integers(min_value=0, max_value=500),
    version=VERSIONS,
)
def test_mutated_real_messages_raise_nothing_but_sccp_decode_error(index, flips, cut, version):
    _, message_id, payload = REAL_FRAMES[index]
    mutated = bytearray(payload[:cut])
    for position, value in flips:
        if mutated:
            mutated[position % len(mutated)] = value
    with contextlib.suppress(SccpDecodeError):
        decode_message(version, message_id, bytes(mutated))
