from __future__ import annotations

import pytest

from recorder.media.codecs import (
    ALAW_TABLE,
    CODECS,
    ULAW_TABLE,
    G722Decoder,
    G729Decoder,
    MalformedPayload,
    PayloadKind,
    UndecodableCodec,
    codec_by_name,
    payload_formats,
)
from tests.recorder.media.rtp_build import audioop

EVERY_CODE = bytes(range(256))


def test_mu_law_matches_audioop_for_all_256_codes():
    reference = audioop.ulaw2lin(EVERY_CODE, 2)
    assert CODECS["PCMU"].new_decoder().decode(EVERY_CODE) == reference
    for code in range(256):
        assert ULAW_TABLE[code] == int.from_bytes(
            reference[2 * code : 2 * code + 2], "little", signed=True
        )


def test_a_law_matches_audioop_for_all_256_codes():
    reference = audioop.alaw2lin(EVERY_CODE, 2)
    assert CODECS["PCMA"].new_decoder().decode(EVERY_CODE) == reference
    for code in range(256):
        assert ALAW_TABLE[code] == int.from_bytes(
            reference[2 * code : 2 * code + 2], "little", signed=True
        )


@pytest.mark.parametrize(
    ("table", "code", "linear"),
    [
        # G.711 Table 1: the A-law idle character 0xD5 is the smallest positive step.
        (ALAW_TABLE, 0xD5, 8),
        (ALAW_TABLE, 0x55, -8),
        (ALAW_TABLE, 0xAA, 4032 * 8),
        (ALAW_TABLE, 0x2A, -4032 * 8),
        # G.711 Table 2: mu-law 0xFF and 0x7F are the two zeros; 0x80 the largest (8031).
        (ULAW_TABLE, 0xFF, 0),
        (ULAW_TABLE, 0x7F, 0),
        (ULAW_TABLE, 0x80, 8031 * 4),
        (ULAW_TABLE, 0x00, -8031 * 4),
    ],
)
def test_g711_end_points_are_those_of_the_itu_tables(table, code, linear):
    assert table[code] == linear


def test_pcm_is_little_endian_bytes():
    assert CODECS["PCMA"].new_decoder().decode(b"\xaa") == (32256).to_bytes(
        2, "little", signed=True
    )


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("PCMU", "PCMU"),
        ("pcmu", "PCMU"),
        ("PcmA", "PCMA"),
        ("g722", "G722"),
        ("G729", "G729"),
        ("g729a", "G729"),
    ],
)
def test_encoding_names_are_case_insensitive(name, codec):
    assert codec_by_name(name) is CODECS[codec]


def test_g722_runs_at_16_khz_on_an_8000_rtp_clock():
    g722 = codec_by_name("G722")
    assert (g722.clock_rate, g722.sample_rate, g722.samples_per_tick) == (8000, 16000, 2)
    assert len(G722Decoder().decode(bytes(160))) == 2 * 320


def test_silence_has_exactly_the_asked_length():
    assert codec_by_name("PCMA").silence(160) == bytes(320)
    assert codec_by_name("G722").silence(321) == bytes(642)
    assert codec_by_name("PCMU").silence(-5) == b""


def test_a_codec_qms_cannot_decode_is_named():
    with pytest.raises(UndecodableCodec) as refused:
        codec_by_name("opus")
    assert refused.value.name == "opus"
    assert str(refused.value) == "not decodable: opus"


def test_static_and_sdp_payload_types_resolve():
    formats = payload_formats(
        [(101, "telephone-event/8000"), (96, "opus/48000/2"), (98, "G722/8000"), (99, "PCMU/16000")]
    )
    assert formats[0].codec is CODECS["PCMU"]
    assert formats[8].codec is CODECS["PCMA"]
    assert formats[9].codec is CODECS["G722"]
    assert formats[18].codec is CODECS["G729"]
    assert formats[13].kind is PayloadKind.COMFORT_NOISE
    assert formats[101].kind is PayloadKind.TELEPHONE_EVENT
    assert formats[98].codec is CODECS["G722"]
    assert (formats[96].kind, formats[96].name) == (PayloadKind.UNDECODABLE, "opus")
    assert formats[99].kind is PayloadKind.UNDECODABLE  # PCMU at a clock it does not have
    assert (formats[97].kind, formats[97].name) == (PayloadKind.UNDECODABLE, "PT 97")
    assert (formats[3].kind, formats[3].name) == (PayloadKind.UNDECODABLE, "GSM")


def test_g729_decodes_frames_and_annex_b_sid_frames():
    decoder = G729Decoder()
    assert len(decoder.decode(bytes(range(10)))) == 2 * 80
    assert len(decoder.decode(bytes(range(20)))) == 2 * 160
    # RFC 3551 §4.5.6: 10-byte frames, then optionally one 2-byte SID frame.
    assert len(decoder.decode(bytes(range(22)))) == 2 * 240
    assert len(decoder.decode(b"\x12\x34")) == 2 * 80
    assert decoder.decode(b"") == b""


@pytest.mark.parametrize("length", [1, 5, 9, 13])
def test_g729_refuses_lengths_its_rtp_format_does_not_allow(length):
    with pytest.raises(MalformedPayload):
        G729Decoder().decode(bytes(length))


def test_g729_decoders_keep_their_own_state():
    frames = [bytes((i * 37 + k) & 0xFF for k in range(10)) for i in range(20)]
    first, second = G729Decoder(), G729Decoder()
    one = [first.decode(frame) for frame in frames]
    second.decode(frames[5])  # a different history gives a different next frame ...
    assert second.decode(frames[0]) != one[0] or second.decode(frames[1]) != one[1]
    fresh = G729Decoder()  # ... and the same history the same output.
    assert [fresh.decode(frame) for frame in frames] == one
