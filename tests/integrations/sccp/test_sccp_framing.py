"""SccpStreamFramer: Skinny messages out of one TCP direction, however the bytes arrive."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.observations import Endpoint
from integrations.sccp import messages as m
from integrations.sccp.framing import MAX_BUFFER, SccpFrame, SccpStreamFramer
from tests.conftest import PUBLIC_CAPTURES, need
from tests.integrations.sccp_build import call_state, keepalive, line_stat, skinny, u32
from tests.integrations.sccp_streams import direction_bytes

CALL_CAPTURE = PUBLIC_CAPTURES / "pyskinny-cm_call_from_pyskinny_to_7912.pcapng"
PHONE = Endpoint("10.102.10.209", 3892)


def cm_to_phone_bytes() -> bytes:
    need(CALL_CAPTURE.is_file(), f"needs the public capture {CALL_CAPTURE}")
    return direction_bytes(CALL_CAPTURE, PHONE, from_phone=False)


def ids(frames: list[SccpFrame]) -> list[int]:
    return [frame.message_id for frame in frames]


def test_several_messages_in_one_chunk():
    framer = SccpStreamFramer()
    frames = framer.feed(keepalive() + call_state(4, 1, 7) + line_stat(1, "1012"))
    assert ids(frames) == [m.KEEP_ALIVE, m.CALL_STATE, m.LINE_STAT]
    assert frames[1].payload == u32(4, 1, 7, 0, 4, 0)


def test_one_message_over_many_chunks():
    framer = SccpStreamFramer()
    stream = line_stat(1, "1012")
    frames = [frame for byte in stream for frame in framer.feed(bytes([byte]))]
    assert ids(frames) == [m.LINE_STAT]
    assert not framer.errors


def test_the_whole_real_cm_direction_frames_without_errors():
    framer = SccpStreamFramer()
    frames = framer.feed(cm_to_phone_bytes())
    assert len(frames) == 47
    assert m.CALL_INFO in ids(frames) and m.START_MEDIA_TRANSMISSION in ids(frames)
    assert not framer.errors


def test_mid_stream_pickup_resynchronises_and_later_messages_decode():
    stream = cm_to_phone_bytes()
    complete = SccpStreamFramer().feed(stream)
    for dropped in (1, 5, 13, 100, 777, 2000):
        framer = SccpStreamFramer()
        frames = [frame for start in range(dropped, len(stream), 97)
                  for frame in framer.feed(stream[start : start + 97])]  # fmt: skip
        tail = complete[-len(frames) :]
        assert frames == tail, dropped
        assert m.STOP_MEDIA_TRANSMISSION in ids(frames)
        assert m.CALL_STATE in ids(frames)


def test_after_a_gap_the_framer_finds_the_next_header():
    stream = call_state(4, 1, 7) + call_state(5, 1, 7) + call_state(2, 1, 7)
    framer = SccpStreamFramer()
    assert ids(framer.feed(stream[:10])) == []
    framer.gap()
    frames = framer.feed(stream[30:])
    assert [frame.payload[:4] for frame in frames] == [u32(5), u32(2)]
    assert framer.errors["gap"] == 1


def test_garbage_on_port_2000_yields_nothing_and_is_counted():
    framer = SccpStreamFramer()
    assert framer.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 50) == []
    assert framer.skipped_bytes > 0
    assert len(framer._buffer) < 12


def test_a_length_past_the_maximum_loses_sync_then_recovers():
    bogus = struct.pack("<III", 1_000_000, 0, m.CALL_STATE)
    framer = SccpStreamFramer()
    framer.feed(keepalive())
    frames = framer.feed(call_state(4, 1, 7) + bogus + call_state(5, 1, 7))
    assert [frame.payload[:4] for frame in frames] == [u32(4), u32(5)]
    assert framer.errors["bad-header"] == 1


def test_a_length_below_4_is_a_bad_frame():
    framer = SccpStreamFramer()
    framer.feed(keepalive())
    frames = framer.feed(call_state(4, 1, 7) + struct.pack("<III", 2, 0, 0) + keepalive())
    assert ids(frames) == [m.CALL_STATE, m.KEEP_ALIVE]
    assert framer.errors["bad-header"] == 1
    traffic = call_state(5, 1, 7) + line_stat(1, "1012") + keepalive()
    later = [frame for _ in range(10) for frame in framer.feed(traffic)]
    assert ids(later) == [m.CALL_STATE, m.LINE_STAT, m.KEEP_ALIVE] * 10


def test_the_buffer_stays_bounded_while_waiting_for_a_huge_message():
    framer = SccpStreamFramer()
    framer.feed(struct.pack("<III", 4000, 0, m.CALL_INFO))
    for _ in range(100):
        framer.feed(bytes(1000))
    assert len(framer._buffer) <= MAX_BUFFER


def test_an_unknown_message_id_in_sync_is_passed_on():
    framer = SccpStreamFramer()
    frames = framer.feed(keepalive() + skinny(0x7777, b"abcd") + keepalive())
    assert ids(frames) == [m.KEEP_ALIVE, 0x7777, m.KEEP_ALIVE]


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=20), gap_at=st.integers(0, 25))
def test_arbitrary_bytes_never_raise(chunks, gap_at):
    framer = SccpStreamFramer()
    for index, chunk in enumerate(chunks):
        if index == gap_at:
            framer.gap()
        for frame in framer.feed(chunk):
            assert 4 <= len(frame.payload) + 4 <= 4096
    assert len(framer._buffer) <= MAX_BUFFER
