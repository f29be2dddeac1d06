"""Audio codecs: RTP payload bytes to PCM, and payload types to what they carry.

Every decoder returns signed 16-bit little-endian mono PCM as `bytes`, at the codec's
sample rate (which for G.722 is not its RTP clock rate, RFC 3551 §4.5.2). Decoders are
objects, one per stream direction, because G.722 and G.729 carry state from frame to
frame; G.711 decoders are stateless but keep the same shape.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import weakref
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import G722

SAMPLE_BYTES = 2


class UndecodableCodec(Exception):
    """A payload QMS cannot turn into audio; the recording is marked "not decodable: NAME"."""

    def __init__(self, name: str, reason: str = "") -> None:
        super().__init__(f"not decodable: {name}" + (f" ({reason})" if reason else ""))
        self.name = name
        self.reason = reason


class MalformedPayload(ValueError):
    """A payload of a known codec whose length the codec's RTP format does not allow."""


class Decoder(Protocol):
    def decode(self, payload: bytes) -> bytes: ...


# ---------------------------------------------------------------------------------------
# G.711 (ITU-T G.711, 1988), expanded from the code word as the Recommendation defines it.
#
# A-law (G.711 §3, Tables 1a/1b): the even bits of the character are inverted on the line
# (XOR 0x55). Bit 8 is the polarity (1 = positive), bits 7-5 the segment, bits 4-1 the
# step within it. Decoder outputs sit at the middle of each quantisation interval, in the
# 13-bit domain: segment 0 gives 2*step + 1, segment s >= 1 gives (2*step + 33) << (s - 1).
#
# mu-law (G.711 §4, Tables 2a/2b): all bits are inverted on the line. Bit 8 set is then
# negative; in the 14-bit domain the magnitude is ((2*step + 33) << segment) - 33.
#
# Both scale to 16-bit PCM by their missing low bits (x8 for A-law, x4 for mu-law), which
# is the linear PCM convention audioop and every soft switch use.
# ---------------------------------------------------------------------------------------


def alaw_expand(code: int) -> int:
    """One A-law character to a 16-bit linear sample (G.711 Table 1)."""
    code ^= 0x55
    segment, step = (code >> 4) & 0x07, code & 0x0F
    magnitude = 2 * step + 1 if segment == 0 else (2 * step + 33) << (segment - 1)
    return magnitude * 8 if code & 0x80 else -magnitude * 8


def ulaw_expand(code: int) -> int:
    """One mu-law character to a 16-bit linear sample (G.711 Table 2)."""
    code = ~code & 0xFF
    segment, step = (code >> 4) & 0x07, code & 0x0F
    magnitude = ((2 * step + 33) << segment) - 33
    return -magnitude * 4 if code & 0x80 else magnitude * 4


ALAW_TABLE = tuple(alaw_expand(code) for code in range(256))
ULAW_TABLE = tuple(ulaw_expand(code) for code in range(256))


@functools.cache
def _byte_tables(table: tuple[int, ...]) -> tuple[bytes, bytes]:
    """The low and high bytes of each little-endian sample, as bytes.translate tables:
    made once a table, not once a stream (0.15 ms, a twentieth of finishing a short call)."""
    words = [sample & 0xFFFF for sample in table]
    return bytes(word & 0xFF for word in words), bytes(word >> 8 for word in words)


class G711Decoder:
    """Table lookup done in C: two bytes.translate passes interleaved into one buffer."""

    def __init__(self, table: tuple[int, ...]) -> None:
        self.low, self.high = _byte_tables(table)

    def decode(self, payload: bytes) -> bytes:
        pcm = bytearray(2 * len(payload))
        pcm[0::2] = payload.translate(self.low)
        pcm[1::2] = payload.translate(self.high)
        return bytes(pcm)


def repeat_samples(pcm: bytes | bytearray | memoryview, factor: int) -> bytes:
    """Upsample by repeating each sample `factor` times (zero-order hold). It needs no state
    across chunks, keeps every sample at its exact place, and G.711's 4 kHz band does not
    gain anything from a finer interpolation worth its cost on the per-packet path."""
    samples = array("h", bytes(pcm))
    repeated = array("h", bytes(len(pcm) * factor))
    for phase in range(factor):
        repeated[phase::factor] = samples
    return repeated.tobytes()


# ---------------------------------------------------------------------------------------
# G.722 through the PyPI package G722 (Sippy's libg722, bit-exact to the ITU test vectors).
# RTP always carries the 64 kbit/s mode (RFC 3551 §4.5.2): one octet per two 16 kHz samples.
# ---------------------------------------------------------------------------------------


def _little_endian(samples: array) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


class G722Decoder:
    def __init__(self) -> None:
        self.codec = G722.G722(16000, 64000, use_numpy=False)

    def decode(self, payload: bytes) -> bytes:
        return _little_endian(self.codec.decode(bytes(payload)))


# ---------------------------------------------------------------------------------------
# G.729 / G.729A through Debian's libbcg729 (Belledonne bcg729 1.1, include/bcg729/decoder.h):
#   bcg729DecoderChannelContextStruct *initBcg729DecoderChannel(void);
#   void closeBcg729DecoderChannel(bcg729DecoderChannelContextStruct *);
#   void bcg729Decoder(ctx, uint8_t bitStream[], uint8_t bitStreamLength,
#                      uint8_t frameErasureFlag, uint8_t SIDFrameFlag,
#                      uint8_t rfc3389PayloadFlag, int16_t signal[80]);
# RFC 3551 §4.5.6: a payload is zero or more 10-byte frames (10 ms each), optionally
# followed by one 2-byte Annex B SID frame.
# ---------------------------------------------------------------------------------------

G729_FRAME_BYTES = 10
G729_SID_BYTES = 2
G729_FRAME_SAMPLES = 80
BCG729_LIBRARY = "libbcg729.so.0"

_bcg729: ctypes.CDLL | None = None


def _load_bcg729() -> ctypes.CDLL:
    global _bcg729
    if _bcg729 is None:
        path = ctypes.util.find_library("bcg729") or BCG729_LIBRARY
        try:
            library = ctypes.CDLL(path)
        except OSError as error:
            raise UndecodableCodec("G729", f"libbcg729 not loadable: {error}") from error
        library.initBcg729DecoderChannel.restype = ctypes.c_void_p
        library.initBcg729DecoderChannel.argtypes = []
        library.closeBcg729DecoderChannel.restype = None
        library.closeBcg729DecoderChannel.argtypes = [ctypes.c_void_p]
        library.bcg729Decoder.restype = None
        library.bcg729Decoder.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_uint8,
            ctypes.c_uint8,
            ctypes.c_uint8,
            ctypes.c_uint8,
            ctypes.POINTER(ctypes.c_int16),
        ]
        _bcg729 = library
    return _bcg729


class G729Decoder:
    def __init__(self) -> None:
        self.library = _load_bcg729()
        self.channel = self.library.initBcg729DecoderChannel()
        if not self.channel:
            raise UndecodableCodec("G729", "bcg729 could not open a decoder channel")
        self.signal = (ctypes.c_int16 * G729_FRAME_SAMPLES)()
        # The C context is freed when this object goes, however the stream ends.
        weakref.finalize(self, self.library.closeBcg729DecoderChannel, self.channel)

    def decode(self, payload: bytes) -> bytes:
        frames, rest = divmod(len(payload), G729_FRAME_BYTES)
        if rest not in (0, G729_SID_BYTES):
            raise MalformedPayload(f"G.729 payload of {len(payload)} bytes")
        pcm = [self._frame(payload[i : i + 10], sid=False) for i in range(0, 10 * frames, 10)]
        if rest:
            pcm.append(self._frame(payload[-G729_SID_BYTES:], sid=True))
        return b"".join(pcm)

    def _frame(self, bits: bytes, sid: bool) -> bytes:
        self.library.bcg729Decoder(self.channel, bits, len(bits), 0, int(sid), 0, self.signal)
        return _little_endian(array("h", bytes(self.signal)))


# ---------------------------------------------------------------------------------------
# The registry: encoding names (SDP a=rtpmap, RFC 4566 §6; case-insensitive) and static
# payload types (RFC 3551 §6) to what the payload carries.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec QMS decodes: its rates and a factory for per-stream decoders."""

    name: str
    clock_rate: int
    sample_rate: int
    new_decoder: Callable[[], Decoder]

    @property
    def samples_per_tick(self) -> int:
        """PCM samples per RTP timestamp unit: 2 for G.722, 1 for the others."""
        return self.sample_rate // self.clock_rate

    def silence(self, samples: int) -> bytes:
        """Exactly `samples` samples of digital silence, for loss and comfort noise."""
        return bytes(SAMPLE_BYTES * max(0, samples))


CODECS = {
    "PCMU": Codec("PCMU", 8000, 8000, lambda: G711Decoder(ULAW_TABLE)),
    "PCMA": Codec("PCMA", 8000, 8000, lambda: G711Decoder(ALAW_TABLE)),
    "G722": Codec("G722", 8000, 16000, G722Decoder),
    "G729": Codec("G729", 8000, 8000, G729Decoder),
}
# Annex A is bitstream-compatible with G.729 (its own RTP name is still G729, RFC 3551
# §4.5.6), but some SDP writes it out.
ALIASES = {"G729A": "G729"}

STATIC_PAYLOAD_TYPES = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    5: ("DVI4", 8000),
    6: ("DVI4", 16000),
    7: ("LPC", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    10: ("L16", 44100),
    11: ("L16", 44100),
    12: ("QCELP", 8000),
    13: ("CN", 8000),
    14: ("MPA", 90000),
    15: ("G728", 8000),
    16: ("DVI4", 11025),
    17: ("DVI4", 22050),
    18: ("G729", 8000),
}

COMFORT_NOISE = "CN"
TELEPHONE_EVENT = "TELEPHONE-EVENT"


def codec_by_name(name: str) -> Codec:
    """The codec for an SDP encoding name such as "pcmu" or "G722"; UndecodableCodec if none."""
    key = name.strip().upper()
    codec = CODECS.get(ALIASES.get(key, key))
    if codec is None:
        raise UndecodableCodec(name.strip() or "unnamed")
    return codec


class PayloadKind(Enum):
    AUDIO = "audio"
    COMFORT_NOISE = "comfort-noise"  # RFC 3389
    TELEPHONE_EVENT = "telephone-event"  # RFC 4733
    UNDECODABLE = "undecodable"


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    """What one payload type of a stream carries, as the signalling (or RFC 3551) says."""

    payload_type: int
    kind: PayloadKind
    name: str
    clock_rate: int
    codec: Codec | None = None


def payload_format(payload_type: int, rtpmap: str) -> PayloadFormat:
    """A payload type from its rtpmap value, e.g. (101, "telephone-event/8000")."""
    name, _, rest = rtpmap.partition("/")
    rate_text = rest.partition("/")[0]
    clock_rate = int(rate_text) if rate_text.isdigit() else 8000
    key = name.strip().upper()
    if key == COMFORT_NOISE:
        return PayloadFormat(payload_type, PayloadKind.COMFORT_NOISE, "CN", clock_rate)
    if key == TELEPHONE_EVENT:
        return PayloadFormat(payload_type, PayloadKind.TELEPHONE_EVENT, name, clock_rate)
    try:
        codec = codec_by_name(name)
    except UndecodableCodec:
        return PayloadFormat(payload_type, PayloadKind.UNDECODABLE, name or "unnamed", clock_rate)
    if codec.clock_rate != clock_rate:
        return PayloadFormat(payload_type, PayloadKind.UNDECODABLE, rtpmap, clock_rate)
    return PayloadFormat(payload_type, PayloadKind.AUDIO, codec.name, clock_rate, codec)


# An SDP's payload type map as a hashable value: ((0, "PCMU/8000"), (101, "telephone-event/8000")).
RtpMap = tuple[tuple[int, str], ...]


def rtpmap_of(payload_types: Iterable[tuple[int, str]]) -> RtpMap:
    return tuple(tuple(entry) for entry in payload_types)


def payload_formats(rtpmap: Iterable[tuple[int, str]] = ()) -> dict[int, PayloadFormat]:
    """Every payload type 0-127: the static ones of RFC 3551 §6 overlaid by the SDP's map.

    A payload type neither static nor mapped is undecodable, named "PT n" so the recording
    still says what arrived. (Made once per map: a finisher decodes thousands of calls
    that carry the same few maps, and each would otherwise build 128 formats twice.)
    """
    return dict(_formats_of(rtpmap_of(rtpmap)))


@functools.lru_cache(maxsize=256)
def _formats_of(rtpmap: RtpMap) -> dict[int, PayloadFormat]:
    formats = {
        payload_type: payload_format(payload_type, f"{name}/{rate}")
        for payload_type, (name, rate) in STATIC_PAYLOAD_TYPES.items()
    }
    for payload_type, value in rtpmap:
        if 0 <= payload_type <= 127:
            formats[payload_type] = payload_format(payload_type, value)
    for payload_type in range(128):
        if payload_type not in formats:
            formats[payload_type] = PayloadFormat(
                payload_type, PayloadKind.UNDECODABLE, f"PT {payload_type}", 8000
            )
    return formats
