from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.media.stream import PcmChunk, StreamDecoder
from tests.recorder.media.rtp_build import CN, FRAME, alaw_pcm, rtp, stream, telephone_event

DTMF_MAP = [(8, "PCMA/8000"), (101, "telephone-event/8000"), (13, "CN/8000")]


def play(decoder: StreamDecoder, arrivals) -> list[PcmChunk]:
    chunks = []
    for at, packet, *_ in arrivals:
        chunks += decoder.feed(at, packet)
    return chunks + decoder.flush()


def timeline(chunks: list[PcmChunk]) -> bytes:
    """The chunks laid end to end, gaps padded as a writer would; checks they never overlap."""
    pcm = bytearray()
    for offset, data in chunks:
        assert offset >= len(pcm) // 2, "chunks overlap or go back in time"
        pcm += bytes(2 * offset - len(pcm)) + data
    return bytes(pcm)


def in_order_pcm(sequences) -> bytes:
    return b"".join(alaw_pcm(sequence) for sequence in sequences)


def test_an_in_order_stream_is_one_contiguous_timeline_from_offset_zero():
    packets = stream(50)
    chunks = play(StreamDecoder(), packets)
    assert chunks[0].offset == 0
    assert all(a.offset + a.samples == b.offset for a, b in itertools.pairwise(chunks))
    assert timeline(chunks) == in_order_pcm(seq for *_, seq in packets)


def test_lost_packets_become_silence_of_exactly_their_length():
    packets = stream(20)
    kept = [p for i, p in enumerate(packets) if i not in (3, 4, 11)]
    decoder = StreamDecoder()
    pcm = timeline(play(decoder, kept))
    assert len(pcm) == 2 * 20 * FRAME
    for i, (*_, sequence) in enumerate(packets):
        expected = bytes(2 * FRAME) if i in (3, 4, 11) else alaw_pcm(sequence)
        assert pcm[2 * FRAME * i : 2 * FRAME * (i + 1)] == expected
    quality = decoder.quality
    assert (quality.expected, quality.received, quality.lost) == (20, 17, 3)
    assert quality.silence_samples == 3 * FRAME


def test_packets_shuffled_within_the_window_play_as_if_in_order():
    packets = stream(200)
    rng = random.Random(4)
    # Each packet is delayed by up to 60 ms: reordered, but inside the 100 ms window.
    arrivals = sorted(
        ((at + rng.uniform(0, 0.06), packet) for at, packet, _ in packets), key=lambda a: a[0]
    )
    decoder = StreamDecoder()
    assert timeline(play(decoder, arrivals)) == timeline(play(StreamDecoder(), packets))
    assert decoder.quality.out_of_order > 20
    assert (decoder.quality.lost, decoder.quality.late, decoder.quality.duplicated) == (0, 0, 0)


def test_duplicates_are_dropped_and_counted():
    packets = stream(30)
    doubled = [a for packet in packets for a in (packet, (packet[0] + 0.001, packet[1]))]
    decoder = StreamDecoder()
    assert timeline(play(decoder, doubled)) == in_order_pcm(seq for *_, seq in packets)
    assert (decoder.quality.duplicated, decoder.quality.received, decoder.quality.lost) == (
        30,
        30,
        0,
    )


def test_a_packet_later_than_the_window_is_counted_late_and_its_place_stays_silent():
    packets = stream(20)
    late = packets[5]
    arrivals = [p for p in packets if p is not late] + [(late[0] + 1.0, late[1])]
    decoder = StreamDecoder()
    pcm = timeline(play(decoder, arrivals))
    assert pcm[2 * FRAME * 5 : 2 * FRAME * 6] == bytes(2 * FRAME)
    assert len(pcm) == 2 * 20 * FRAME
    quality = decoder.quality
    assert (quality.late, quality.received, quality.expected) == (1, 20, 20)


def test_sequence_numbers_wrap_around_at_65535():
    packets = stream(20, first_sequence=65525)
    arrivals = list(packets)
    arrivals[9], arrivals[10] = arrivals[10], arrivals[9]  # 65534 <-> 65535
    arrivals[10], arrivals[11] = arrivals[11], arrivals[10]  # 65535 <-> 0 across the wrap
    decoder = StreamDecoder()
    assert timeline(play(decoder, arrivals)) == in_order_pcm(seq for *_, seq in packets)
    quality = decoder.quality
    assert (quality.expected, quality.received, quality.lost, quality.late) == (20, 20, 0, 0)
    assert quality.sequence_restarts == 0


def test_a_new_ssrc_is_followed_and_anchored_on_arrival_time():
    first = stream(10, first_sequence=100, first_timestamp=1_000)
    # The new source has unrelated sequence numbers and timestamps, and starts 3 s later.
    second = [
        (first[-1][0] + 3.0 + 0.02 * i, rtp(40_000 + i, 3_000_000_000 + FRAME * i, ssrc=0xABCD))
        for i in range(10)
    ]
    decoder = StreamDecoder()
    chunks = play(decoder, first + second)
    assert decoder.quality.ssrc_changes == 1
    assert decoder.quality.timestamp_jumps == 0
    pcm = timeline(chunks)
    start_of_second = 9 * FRAME + 3 * 8000
    assert len(pcm) == 2 * (start_of_second + 10 * FRAME)
    assert pcm[2 * start_of_second : 2 * (start_of_second + FRAME)] == alaw_pcm(40_000)
    assert (decoder.quality.expected, decoder.quality.lost) == (20, 0)


def test_a_new_ssrc_right_after_the_old_one_invents_no_silence():
    first = stream(10)
    second = [
        (first[-1][0] + 0.02 * (i + 1), rtp(7 + i, 99 + FRAME * i, ssrc=0x77)) for i in range(10)
    ]
    pcm = timeline(play(StreamDecoder(), first + second))
    assert pcm == in_order_pcm(seq for *_, seq in first) + in_order_pcm(range(7, 17))


def test_a_large_timestamp_jump_does_not_invent_minutes_of_silence():
    packets = stream(10)
    ten_minutes = 10 * 60 * 8000
    jumped = [
        (packets[-1][0] + 0.02 * (i + 1), rtp(1010 + i, 50_000 + ten_minutes + FRAME * i))
        for i in range(10)
    ]
    decoder = StreamDecoder()
    pcm = timeline(play(decoder, packets + jumped))
    assert len(pcm) == 2 * 20 * FRAME
    assert pcm == in_order_pcm(range(1000, 1020))
    assert decoder.quality.timestamp_jumps == 1


def test_a_hold_with_frozen_timestamps_keeps_its_length_from_the_arrival_clock():
    packets = stream(10)
    # 30 s of hold (no RTP) after which the sender carries on as if no time had passed.
    resumed = [
        (packets[-1][0] + 30.0 + 0.02 * i, rtp(1010 + i, 50_000 + FRAME * (10 + i)))
        for i in range(5)
    ]
    decoder = StreamDecoder()
    chunks = play(decoder, packets + resumed)
    resume_at = 9 * FRAME + 30 * 8000
    assert [c.offset for c in chunks if c.pcm.startswith(alaw_pcm(1010)[:8])] == [resume_at]
    assert len(timeline(chunks)) == 2 * (resume_at + 5 * FRAME)
    assert decoder.quality.timestamp_jumps == 1


def test_a_network_stall_then_burst_keeps_the_senders_timing():
    packets = stream(100)
    # The network holds everything from packet 40 on for 1.5 s, then delivers it in a burst.
    release = packets[40][0] + 1.5
    arrivals = [(max(at, release) if i >= 40 else at, p) for i, (at, p, _) in enumerate(packets)]
    decoder = StreamDecoder()
    assert timeline(play(decoder, arrivals)) == in_order_pcm(range(1000, 1100))
    assert decoder.quality.timestamp_jumps == 0


def test_comfort_noise_is_silence_of_the_length_the_timestamps_give():
    audio = stream(5)
    at = audio[-1][0] + 0.02
    cn = (at, rtp(1005, 50_000 + 5 * FRAME, b"\x40", payload_type=CN))
    resumed = [
        (at + 1.0 + 0.02 * i, rtp(1006 + i, 50_000 + 5 * FRAME + 8000 + FRAME * i))
        for i in range(3)
    ]
    decoder = StreamDecoder(DTMF_MAP)
    pcm = timeline(play(decoder, [*audio, cn, *resumed]))
    assert pcm == in_order_pcm(range(1000, 1005)) + bytes(2 * 8000) + in_order_pcm(
        range(1006, 1009)
    )
    assert decoder.quality.comfort_noise == 1
    assert decoder.quality.lost == 0


def dtmf_digit(
    start_sequence,
    timestamp,
    event,
    at,
    durations=(160, 320, 480),
    resend_end=3,
    new_sequences=False,
):
    """An RFC 4733 event as a sender emits it: growing duration, then the end packet 3 times."""
    packets = []
    for i, duration in enumerate(durations[:-1]):
        packets.append(
            (at + 0.02 * i, telephone_event(start_sequence + i, timestamp, event, duration))
        )
    last = len(durations) - 1
    for k in range(resend_end):
        sequence = start_sequence + last + (k if new_sequences else 0)
        packets.append(
            (
                at + 0.02 * last + 0.001 * k,
                telephone_event(sequence, timestamp, event, durations[-1], end=True),
            )
        )
    return packets


@pytest.mark.parametrize("new_sequences", [False, True])
def test_a_telephone_event_becomes_one_dtmf_digit_not_audio(new_sequences):
    audio = stream(10)
    at = audio[-1][0] + 0.02
    event = dtmf_digit(1010, 50_000 + 10 * FRAME, 5, at, new_sequences=new_sequences)
    next_sequence = 1013 + (2 if new_sequences else 0)
    after = [
        (at + 0.06 + 0.02 * i, rtp(next_sequence + i, 50_000 + 13 * FRAME + FRAME * i))
        for i in range(5)
    ]
    decoder = StreamDecoder(DTMF_MAP)
    pcm = timeline(play(decoder, audio + event + after))
    assert pcm == in_order_pcm(range(1000, 1010)) + bytes(2 * 3 * FRAME) + in_order_pcm(
        range(next_sequence, next_sequence + 5)
    )
    (digit,) = decoder.take_dtmf()
    assert (digit.digit, digit.start, digit.duration, digit.volume) == ("5", 0.2, 0.06, -10)
    assert decoder.take_dtmf() == []


def test_every_dtmf_event_code_has_its_digit():
    decoder = StreamDecoder(DTMF_MAP)
    packets, sequence, timestamp, at = [], 1, 8000, 10.0
    for event in range(16):
        packets += dtmf_digit(sequence, timestamp, event, at, resend_end=1)
        sequence, timestamp, at = sequence + 3, timestamp + 800, at + 0.1
    play(decoder, packets)
    assert "".join(event.digit for event in decoder.take_dtmf()) == "0123456789*#ABCD"


def test_an_event_whose_end_was_lost_is_still_reported_once():
    first = dtmf_digit(1, 8000, 1, 10.0, resend_end=0)  # no end packet at all
    second = dtmf_digit(3, 8800, 2, 10.1)
    third = dtmf_digit(6, 9600, 3, 10.2, resend_end=0)  # closed by flush()
    decoder = StreamDecoder(DTMF_MAP)
    play(decoder, first + second + third)
    events = decoder.take_dtmf()
    assert [(e.digit, e.start, e.duration) for e in events] == [
        ("1", 0.0, 0.04),
        ("2", 0.1, 0.06),
        ("3", 0.2, 0.04),
    ]


def test_jitter_follows_rfc_3550_a8_on_known_arrivals():
    # Sent every 160 ticks; received at 0, 20, 45, 58 ms. D(i-1, i) in ticks: 0, 40, 56.
    # J = 0 -> 0 + (0 - 0)/16 = 0 -> 0 + (40 - 0)/16 = 2.5 -> 2.5 + (56 - 2.5)/16 = 5.84375.
    arrivals = [(0.0, rtp(1, 0)), (0.020, rtp(2, 160)), (0.045, rtp(3, 320)), (0.058, rtp(4, 480))]
    decoder = StreamDecoder()
    play(decoder, arrivals)
    assert decoder.quality.jitter == pytest.approx(5.84375)
    assert decoder.quality.jitter_ms == pytest.approx(5.84375 / 8)


def test_an_undecodable_codec_is_named_and_yields_no_audio():
    packets = [(0.02 * i, rtp(i, FRAME * i, b"\x01" * 40, payload_type=96)) for i in range(10)]
    packets += [
        (0.2 + 0.02 * i, rtp(10 + i, FRAME * (10 + i), b"\x01" * 40, payload_type=97))
        for i in range(3)
    ]
    decoder = StreamDecoder([(96, "opus/48000/2")])
    assert play(decoder, packets) == []
    assert decoder.quality.undecodable == {"opus": 10, "PT 97": 3}
    assert decoder.sample_rate is None


def test_rtcp_and_junk_on_the_rtp_port_are_counted_not_played():
    decoder = StreamDecoder()
    assert decoder.feed(1.0, b"\x81\xc8" + bytes(26)) == []
    assert decoder.feed(1.0, b"junk") == []
    assert decoder.quality.not_rtp == {"rtcp": 1, "truncated-header": 1}


def test_g722_places_its_16_khz_samples_on_the_8000_clock():
    packets = [
        (0.02 * i, rtp(i, FRAME * i, bytes([i]) * 160, payload_type=9)) for i in range(10) if i != 4
    ]
    decoder = StreamDecoder()
    pcm = timeline(play(decoder, packets))
    assert decoder.sample_rate == 16000
    assert len(pcm) == 2 * 10 * 320
    assert pcm[2 * 4 * 320 : 2 * 5 * 320] == bytes(2 * 320)


def test_the_reorder_buffer_never_holds_more_than_its_window():
    decoder = StreamDecoder(reorder_packets=8)
    packets = stream(300)
    for i, (at, packet, _) in enumerate(packets):
        if i % 50 == 1:
            continue  # a hole the buffer must give up waiting for
        decoder.feed(at, packet)
        assert len(decoder.buffer) <= 8
    assert decoder.quality.lost == 6


packet_fields = st.tuples(
    st.floats(min_value=0, max_value=1e10, allow_nan=False),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([1, 2, 0xFFFFFFFF]),
    st.sampled_from([0, 8, 9, 13, 18, 96, 101, 127]),
    st.binary(max_size=48),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(packet_fields, st.binary(max_size=40)), max_size=60))
def test_arbitrary_packet_sequences_never_raise(items):
    decoder = StreamDecoder([*DTMF_MAP, (96, "opus/48000/2")], reorder_packets=4)
    chunks = []
    for item in items:
        if isinstance(item, bytes):
            chunks += decoder.feed(1.0, item)
            continue
        at, sequence, timestamp, ssrc, payload_type, payload = item
        chunks += decoder.feed(
            at, rtp(sequence, timestamp, payload, ssrc=ssrc, payload_type=payload_type)
        )
        assert len(decoder.buffer) <= 4
    chunks += decoder.flush()
    decoder.take_dtmf()
    end = 0
    for chunk in chunks:
        assert chunk.offset >= end
        assert len(chunk.pcm) <= 2 * 16000 * 3 + 2 * 2000
        end = chunk.offset + chunk.samples


def test_timestamps_stepping_back_a_little_append_and_later_losses_stay_exact():
    packets = stream(10)
    # The sender's timestamps step back 0.5 s, then run on; packet 13 is lost.
    back = 50_000 + 10 * FRAME - 4000
    after = [
        (packets[-1][0] + 0.02 * (i + 1), rtp(1010 + i, back + FRAME * i))
        for i in range(6)
        if i != 3
    ]
    decoder = StreamDecoder()
    pcm = timeline(play(decoder, packets + after))
    expected = in_order_pcm(range(1000, 1013)) + bytes(2 * FRAME) + in_order_pcm(range(1014, 1016))
    assert pcm == expected
