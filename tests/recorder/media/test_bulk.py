"""Bulk decoding of log blocks gives exactly what packet-by-packet decoding gives.

StreamDecoder.feed_block decodes regular G.711 stretches in one step. These tests feed the
same packets both ways, the blocks cut at random places, and require the same audio
sample for sample, the same quality figures (jitter to the last bit) and the same DTMF,
for streams with every irregularity the general path handles.
"""

from __future__ import annotations

import random
from array import array

import numpy as np
import pytest

from recorder.media.bulk import C_EXPANDERS, G711_TABLES, BlockHeaders, expand_g711
from recorder.media.stream import PcmChunk, StreamDecoder
from tests.recorder.media.rtp_build import CN, PCMA, PCMU, rtp, telephone_event

PAYLOAD_TYPES = ((0, "PCMU/8000"), (8, "PCMA/8000"), (13, "CN/8000"), (101, "telephone-event/8000"))


def timeline(chunks: list[PcmChunk]) -> bytes:
    """The audio the chunks describe, gaps as silence: what the spool would hold."""
    audio = bytearray()
    for chunk in chunks:
        start = 2 * chunk.offset
        if len(audio) < start:
            audio.extend(bytes(start - len(audio)))
        audio[start : start + len(chunk.pcm)] = chunk.pcm
    return bytes(audio)


def one_by_one(packets: list[tuple[float, bytes]]) -> StreamDecoder:
    decoder = StreamDecoder(PAYLOAD_TYPES)
    decoder.chunks = [chunk for at, packet in packets for chunk in decoder.feed(at, packet)]
    decoder.chunks += decoder.flush()
    return decoder


def in_blocks(packets: list[tuple[float, bytes]], rng: random.Random) -> StreamDecoder:
    decoder = StreamDecoder(PAYLOAD_TYPES)
    decoder.chunks = []
    index = 0
    while index < len(packets):
        size = rng.choice([1, 2, 7, 50, 256])
        block = packets[index : index + size]
        index += size
        arrivals = array("d", [at for at, _ in block])
        lengths = array("H", [len(packet) for _, packet in block])
        decoder.chunks += decoder.feed_block(arrivals, lengths, b"".join(p for _, p in block))
    decoder.chunks += decoder.flush()
    return decoder


def assert_same(expected: StreamDecoder, actual: StreamDecoder) -> None:
    assert timeline(actual.chunks) == timeline(expected.chunks)
    assert actual.quality == expected.quality
    assert actual.dtmf == expected.dtmf
    assert actual.end_sample == expected.end_sample
    assert actual.sample_rate == expected.sample_rate


def regular(count: int, *, start: float = 100.0, sequence: int = 1000, timestamp: int = 0,
            payload_type: int = PCMA, ssrc: int = 7) -> list[tuple[float, bytes]]:  # fmt: skip
    return [
        (
            start + 0.02 * n + 0.0003 * ((n * 7) % 5),
            rtp(sequence + n, timestamp + 160 * n, payload_type=payload_type, ssrc=ssrc),
        )
        for n in range(count)
    ]


def disturbed(seed: int) -> list[tuple[float, bytes]]:
    """A long G.711 stream with random loss, reordering, duplicates, SSRC and sequence
    restarts, timestamp jumps, holds, codec changes, marker bits, short frames, comfort
    noise, DTMF, junk datagrams and out-of-range arrival times."""
    rng = random.Random(seed)
    packets: list[tuple[float, bytes]] = []
    at, sequence, timestamp, ssrc, payload_type = 50.0, rng.randrange(65536), 0, 1, PCMU
    for _ in range(3000):
        roll = rng.random()
        frame = 160 if rng.random() > 0.02 else 80
        packet = rtp(sequence, timestamp, bytes([rng.randrange(256)]) * frame,
                     ssrc=ssrc, payload_type=payload_type, marker=rng.random() < 0.01)  # fmt: skip
        if roll < 0.02:
            pass  # lost
        elif roll < 0.04 and packets:
            packets.insert(len(packets) - rng.randint(1, min(5, len(packets))), (at, packet))
        elif roll < 0.05:
            packets += [(at, packet), (at + 0.001, packet)]
        elif roll < 0.055:
            packets.append((at, telephone_event(sequence, timestamp, rng.randrange(16), 400,
                                                end=rng.random() < 0.5, ssrc=ssrc)))  # fmt: skip
        elif roll < 0.06:
            packets.append((at, rtp(sequence, timestamp, b"\x40", ssrc=ssrc, payload_type=CN)))
        elif roll < 0.062:
            packets.append((at, b"\x00\x01junk"))
        elif roll < 0.063:
            packets.append((-1.0, packet))
        else:
            packets.append((at + rng.uniform(0, 0.004), packet))
        sequence, timestamp, at = (sequence + 1) % 65536, timestamp + frame, at + frame / 8000
        change = rng.random()
        if change < 0.003:
            ssrc += 1
        elif change < 0.006:
            sequence = rng.randrange(65536)
        elif change < 0.009:
            timestamp = (timestamp + rng.randrange(1 << 32)) % (1 << 32)
        elif change < 0.011:
            at += rng.choice([2.0, 7.0])  # a hold: no packets, timestamps stand still
        elif change < 0.013:
            payload_type = PCMA if payload_type == PCMU else PCMU
    return packets


def test_a_regular_stream_decodes_in_bulk_to_the_same_audio_and_figures() -> None:
    packets = regular(1500)
    assert_same(one_by_one(packets), in_blocks(packets, random.Random(1)))


def test_a_regular_stream_crosses_sequence_and_timestamp_wrap_around() -> None:
    packets = regular(400, sequence=65500, timestamp=(1 << 32) - 160 * 30)
    assert_same(one_by_one(packets), in_blocks(packets, random.Random(2)))


@pytest.fixture
def fed(monkeypatch) -> list[float]:
    """The arrival of every packet that went through feed() rather than a bulk stretch:
    a guard against a bulk path that silently never runs."""
    fed: list[float] = []
    original = StreamDecoder.feed

    def counting_feed(self, at, datagram):
        fed.append(at)
        return original(self, at, datagram)

    monkeypatch.setattr(StreamDecoder, "feed", counting_feed)
    return fed


@pytest.mark.parametrize("seed", range(12))
def test_a_disturbed_stream_decodes_in_blocks_exactly_as_packet_by_packet(
    seed: int, fed: list[float]
) -> None:
    packets = disturbed(seed)
    expected = one_by_one(packets)
    fed.clear()
    assert_same(expected, in_blocks(packets, random.Random(seed)))
    assert len(fed) < len(packets) / 2  # most packets went through bulk stretches


def test_the_bulk_path_takes_all_but_the_first_packets_of_a_regular_stream(
    fed: list[float],
) -> None:
    in_blocks(regular(1000), random.Random(3))
    assert 0 < len(fed) < 20


def in_one_block(packets: list[tuple[float, bytes]]) -> StreamDecoder:
    decoder = StreamDecoder(PAYLOAD_TYPES)
    arrivals = array("d", [at for at, _ in packets])
    lengths = array("H", [len(packet) for _, packet in packets])
    decoder.chunks = decoder.feed_block(arrivals, lengths, b"".join(p for _, p in packets))
    decoder.chunks += decoder.flush()
    return decoder


def test_a_stream_that_opens_in_order_is_played_from_its_first_packet_in_bulk(
    fed: list[float],
) -> None:
    """No waiting out the reorder window packet by packet: the first packet through
    feed(), every other in one stretch, and the same audio and figures as one by one."""
    packets = regular(200)
    expected = one_by_one(packets)
    fed.clear()
    assert_same(expected, in_one_block(packets))
    assert fed == [packets[0][0]]


def swapped(packets: list, index: int) -> None:
    packets[index], packets[index + 1] = (packets[index][0], packets[index + 1][1]), (
        packets[index + 1][0], packets[index][1],
    )  # fmt: skip


# What may happen to a stream's first packets, each of which must be waited out as feed()
# waits it out: the bulk start must not take them for a stream in order.
OPENINGS = {
    "reordered": lambda packets: swapped(packets, 2),
    "reordered at the window's edge": lambda packets: swapped(packets, 5),
    "duplicated": lambda packets: packets.insert(3, (packets[3][0], packets[3][1])),
    "lost": lambda packets: packets.pop(2),
    "another sender": lambda packets: packets.__setitem__(
        1, (packets[1][0], rtp(1001, 160, ssrc=8))
    ),
    "junk": lambda packets: packets.insert(2, (packets[2][0], b"\x00\x01junk")),
    "RTCP-like": lambda packets: packets.insert(
        2, (packets[2][0], rtp(1002, 320, payload_type=72, marker=True, ssrc=7))
    ),
    "an arrival out of range": lambda packets: packets.__setitem__(0, (-1.0, packets[0][1])),
    "arrivals out of turn": lambda packets: packets.__setitem__(
        2, (packets[1][0] - 0.001, packets[2][1])
    ),
    "a late first packet": lambda packets: packets.insert(4, packets.pop(0)),
}


@pytest.mark.parametrize("opening", list(OPENINGS))
def test_a_stream_that_opens_out_of_order_decodes_in_a_block_as_packet_by_packet(
    opening: str,
) -> None:
    packets = regular(60)
    OPENINGS[opening](packets)
    assert_same(one_by_one(packets), in_one_block(packets))


@pytest.mark.parametrize("seed", range(40))
def test_random_openings_decode_in_a_block_as_packet_by_packet(seed: int) -> None:
    rng = random.Random(seed)
    packets = regular(40, sequence=rng.choice([1000, 65533]))
    for _ in range(rng.randint(1, 3)):
        index = rng.randrange(8)
        at, packet = packets[index]
        change = rng.choice(["swap", "drop", "repeat", "late", "ssrc"])
        if change == "swap":
            packets[index], packets[index + 1] = packets[index + 1], (at, packet)
        elif change == "drop":
            packets.pop(index)
        elif change == "repeat":
            packets.insert(index, (at + 0.001, packet))
        elif change == "late":
            packets.insert(index + rng.randint(2, 6), (at + 0.15, packet))
        else:
            packets[index] = (at, rtp(1000 + index, 160 * index, ssrc=99))
    assert_same(one_by_one(packets), in_one_block(packets))


def test_a_stream_shorter_than_the_reorder_window_waits_as_packet_by_packet(
    fed: list[float],
) -> None:
    packets = regular(4)  # 60 ms: the window never closes inside the block
    expected = one_by_one(packets)
    fed.clear()
    assert_same(expected, in_one_block(packets))
    assert len(fed) == 4


@pytest.mark.parametrize("lengths", ["alike", "mixed", "with a keepalive"])
def test_block_headers_read_each_packets_fixed_header(lengths: str) -> None:
    rng = random.Random(lengths)
    packets = [
        rtp(rng.randrange(65536), rng.randrange(1 << 32), bytes(160 if lengths == "alike"
            else rng.choice([80, 160, 240])), ssrc=rng.randrange(1 << 32),
            payload_type=rng.choice([PCMU, PCMA, CN]), marker=rng.random() < 0.3)
        for _ in range(40)
    ]  # fmt: skip
    if lengths == "with a keepalive":
        packets.insert(7, b"\x00\x00\x00\x00")
    arrivals = array("d", [0.02 * n for n in range(len(packets))])
    sizes = array("H", [len(packet) for packet in packets])
    headers = BlockHeaders(arrivals, sizes, b"".join(packets))
    for index, packet in enumerate(packets):
        fields = (0, 0, 0, 0, 0)
        if len(packet) >= 12:
            words = [
                int.from_bytes(packet[start:end], "big") for start, end in ((2, 4), (4, 8), (8, 12))
            ]
            fields = (packet[0], packet[1], *words)
        found = (headers.first[index], headers.second[index], headers.sequence[index],
                 headers.timestamp[index], headers.ssrc[index])  # fmt: skip
        assert tuple(int(value) for value in found) == fields
        assert headers.packet(index) == (arrivals[index], packet)


def test_a_codec_change_into_a_wideband_output_decodes_in_blocks_as_one_by_one() -> None:
    """With the output at 16 kHz (a finished call that also carries G.722), G.711 is
    upsampled packet by packet, never through an 8 kHz stretch."""
    packets = regular(60, payload_type=PCMU)
    packets += [
        (100.0 + 0.02 * n, rtp(1000 + n, 160 * n, bytes(160), payload_type=9, ssrc=7))
        for n in range(60, 120)
    ]

    def decoder() -> StreamDecoder:
        made = StreamDecoder(((0, "PCMU/8000"), (9, "G722/8000")))
        made.output_rate = 16000
        return made

    expected, actual = decoder(), decoder()
    expected.chunks = [chunk for at, packet in packets for chunk in expected.feed(at, packet)]
    expected.chunks += expected.flush()
    arrivals = array("d", [at for at, _ in packets])
    lengths = array("H", [len(packet) for _, packet in packets])
    actual.chunks = actual.feed_block(arrivals, lengths, b"".join(p for _, p in packets))
    actual.chunks += actual.flush()
    assert_same(expected, actual)
    assert actual.sample_rate == 16000
    assert actual.end_sample == 120 * 320  # every packet, the G.711 ones at twice the samples
    assert not actual.quality.undecodable


def test_links_break_at_each_irregularity() -> None:
    packets = regular(6)
    packets[3] = (packets[3][0], rtp(1003, 160 * 3 + 8000 * 9, ssrc=7))  # timestamp jump
    arrivals = array("d", [at for at, _ in packets])
    lengths = array("H", [len(p) for _, p in packets])
    headers = BlockHeaders(arrivals, lengths, b"".join(p for _, p in packets))
    links = headers.links(StreamDecoder(PAYLOAD_TYPES).g711_types, (-40000.0, 8000.0))
    assert links.tolist() == [False, True, True, False, False, True]


@pytest.mark.parametrize("codec_name", ["PCMU", "PCMA"])
def test_the_c_expansion_gives_the_itu_tables_samples_for_every_code(codec_name: str) -> None:
    codes = np.arange(256, dtype=np.uint8).reshape(2, 128)
    assert expand_g711(codec_name, codes) == G711_TABLES[codec_name][codes].tobytes()
    assert len(C_EXPANDERS) == 2  # this Python has audioop: the C path was the one tested
