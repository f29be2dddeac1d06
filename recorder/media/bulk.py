"""A log block's RTP headers read in bulk, and which packets continue their predecessor.

Most of a call's packets are alike: one sender, one G.711 payload type, 20 ms each, the
sequence number one up and the timestamp one packet's samples up from the packet before,
arriving about when the timestamps say. StreamDecoder.feed_block decodes such a stretch
in one step instead of packet by packet; this module finds the stretches. The fixed
header fields (RFC 3550 §5.1) of every packet of a block are gathered with numpy at once.
"""

from __future__ import annotations

import functools
import sys
import warnings
from array import array
from collections import Counter

import numpy as np

from recorder.media.codecs import (
    ALAW_TABLE,
    ULAW_TABLE,
    PayloadFormat,
    PayloadKind,
    RtpMap,
    payload_formats,
)

HEADER_BYTES = 12
# A fixed header with version 2 and no padding, extension or CSRCs (RFC 3550 §5.1).
PLAIN_FIRST_OCTET = 0x80
SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32
# A ZRTP packet (RFC 6189 §5) on the media port: "0001" and twelve zero bits, a sequence
# number, then the magic cookie "ZRTP" where an RTP header has its timestamp.
ZRTP_FIRST_OCTET = 0x10
ZRTP_MAGIC_COOKIE = 0x5A525450
# audioop left the standard library in Python 3.13 (PEP 594); the audioop-lts package
# brings it back there. Without it, the numpy table below does the same, slower.
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
except ImportError:
    audioop = None
C_EXPANDERS = {"PCMU": audioop.ulaw2lin, "PCMA": audioop.alaw2lin} if audioop else {}
G711_TABLES = {
    "PCMU": np.array(ULAW_TABLE, dtype="<i2"),
    "PCMA": np.array(ALAW_TABLE, dtype="<i2"),
}


class BlockHeaders:
    """Arrival, length and fixed-header fields of every packet of a block, as arrays."""

    def __init__(self, arrivals: array, lengths: array, data: bytes) -> None:
        self.data = data
        self.arrivals = np.frombuffer(arrivals, dtype=np.float64)
        self.lengths = np.frombuffer(lengths, dtype=np.uint16).astype(np.int64)
        self.offsets = np.zeros(len(self.lengths), dtype=np.int64)
        # The packets as rows of octets, when they are all of one length.
        self.rows: np.ndarray | None = None
        # The G.711 table _plain_g711 was last asked for, and its answer.
        self._plain: tuple[np.ndarray, np.ndarray] | None = None
        np.cumsum(self.lengths[:-1], out=self.offsets[1:])
        header = self._headers(data)
        self.first, self.second = header[:, 0], header[:, 1]
        self.sequence = header[:, 2] << 8 | header[:, 3]
        self.timestamp = _word(header[:, 4:8])
        self.ssrc = _word(header[:, 8:12])

    def _headers(self, data: bytes) -> np.ndarray:
        """The first HEADER_BYTES octets of each packet, as int64 columns; zeros for a
        packet shorter than that (a keepalive)."""
        count = len(self.lengths)
        length = int(self.lengths[0]) if count else 0
        alike = len(data) == count * length and (self.lengths == length).all()
        if length >= HEADER_BYTES and alike:
            # Packets all of one length (most blocks): the headers are a view of the data.
            self.rows = np.frombuffer(data, dtype=np.uint8).reshape(count, length)
            return self.rows[:, :HEADER_BYTES].astype(np.int64)
        whole = self.lengths >= HEADER_BYTES
        starts = np.where(whole, self.offsets, 0)
        header = _padded(data)[starts[:, None] + np.arange(HEADER_BYTES)].astype(np.int64)
        header[~whole] = 0
        return header

    def __len__(self) -> int:
        return len(self.lengths)

    def packet(self, index: int) -> tuple[float, bytes]:
        """Packet `index` as feed() takes it: arrival time and UDP payload."""
        offset = int(self.offsets[index])
        return float(self.arrivals[index]), self.data[offset : offset + int(self.lengths[index])]

    def links(self, g711: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
        """links[i]: packet i is the regular successor of packet i - 1 (never for i = 0).

        Both plain G.711 packets of one payload type, length and SSRC; the sequence number
        one up; the timestamp up by exactly the previous packet's samples; and the arrival
        step within `limits`, the (lowest, highest) timestamp-ahead-of-arrival, in clock
        ticks, that StreamDecoder accepts before it follows the arrival clock instead.
        """
        plain = self._plain_g711(g711)
        samples = self.lengths - HEADER_BYTES
        links = np.zeros(len(self), dtype=bool)
        if len(self) < 2:
            return links
        ahead = samples[:-1] - np.diff(self.arrivals) * 8000
        links[1:] = (
            plain[1:]
            & plain[:-1]
            & (self.lengths[1:] == self.lengths[:-1])
            & (self.second[1:] == self.second[:-1])
            & (self.ssrc[1:] == self.ssrc[:-1])
            & (self.sequence[1:] == (self.sequence[:-1] + 1) % SEQUENCE_MODULO)
            & (self.timestamp[1:] == (self.timestamp[:-1] + samples[:-1]) % TIMESTAMP_MODULO)
            & (ahead >= limits[0])
            & (ahead <= limits[1])
        )
        return links

    def _plain_g711(self, g711: np.ndarray) -> np.ndarray:
        """Whole plain headers with a G.711 payload type (`g711`, a table of g711_types),
        at least one sample, and an arrival time StreamDecoder takes as it is. No marker
        bit: a marked packet is left to the general path (with a dynamic payload type,
        marker and type can read as RTCP). Worked out once a block for its direction's
        table: the scan and the decoding both ask."""
        if self._plain is not None and self._plain[0] is g711:
            return self._plain[1]
        plain = (
            (self.lengths > HEADER_BYTES)
            & (self.first == PLAIN_FIRST_OCTET)
            & g711[self.second]
            & (self.arrivals >= 0.0)
            & (self.arrivals < 1e11)
        )
        self._plain = (g711, plain)
        return plain

    def payload_types(self) -> tuple[int | None, Counter]:
        """The index of the first packet that looks like RTP (version 2, a whole fixed
        header, not RTCP: recorder.media.rtp.looks_like_rtp), and how many carry each
        payload type."""
        rtp = (self.first >> 6 == 2) & ((self.second < 200) | (self.second > 204))
        rtp &= self.lengths >= HEADER_BYTES
        found = np.flatnonzero(rtp)
        counts = np.bincount(self.second[rtp] & 0x7F, minlength=128)
        types = Counter({int(pt): int(counts[pt]) for pt in np.flatnonzero(counts)})
        return (int(found[0]) if len(found) else None), types

    def zrtp_packets(self) -> int:
        """How many of the block's packets are ZRTP's (RFC 6189 §5): media keyed on the
        media path, which the SRTP that follows hides from the recorder."""
        zrtp = (self.first == ZRTP_FIRST_OCTET) & (self.second == 0)
        return int(np.count_nonzero(zrtp & (self.timestamp == ZRTP_MAGIC_COOKIE)))

    def g711_sample(self, g711: np.ndarray, limit: int) -> tuple[int, np.ndarray]:
        """For the test of encrypted media: how many plain G.711 packets carry a payload
        that is no whole number of milliseconds (8 octets), as ciphertext with an SRTP
        authentication tag after it does (RFC 3711 §4.2: 4 or 10 octets of HMAC-SHA1,
        where audio has 160 or 80), and up to `limit` of their payload octets, in order."""
        plain = self._plain_g711(g711)
        odd = int(np.count_nonzero(plain & ((self.lengths - HEADER_BYTES) % 8 != 0)))
        indices = np.flatnonzero(plain)
        if self.rows is not None:  # packets all of one length: a view of the data
            needed = -(-limit // max(1, self.rows.shape[1] - HEADER_BYTES))
            return odd, self.rows[indices[:needed], HEADER_BYTES:].ravel()[:limit]
        taken, total = [], 0
        for index in indices.tolist():
            if total >= limit:
                break
            start = int(self.offsets[index]) + HEADER_BYTES
            payload = self.data[start : start + int(self.lengths[index]) - HEADER_BYTES]
            taken.append(payload)
            total += len(payload)
        return odd, np.frombuffer(b"".join(taken)[:limit], dtype=np.uint8)

    def pcm(self, start: int, end: int, codec_name: str) -> bytes:
        """PCM16 of packets start..end-1, all of one length, G.711-expanded."""
        length = int(self.lengths[start])
        first = int(self.offsets[start])
        rows = np.frombuffer(self.data, dtype=np.uint8, count=(end - start) * length, offset=first)
        payloads = rows.reshape(end - start, length)[:, HEADER_BYTES:]
        return expand_g711(codec_name, payloads)


def expand_g711(codec_name: str, payloads: np.ndarray) -> bytes:
    """G.711 code words to PCM16 little-endian: audioop's C expansion where Python has it
    (ten times the table's speed, the same samples: tests/recorder/media/test_bulk.py), else the
    ITU table of recorder.media.codecs."""
    expand = C_EXPANDERS.get(codec_name)
    if expand is None:
        return G711_TABLES[codec_name][payloads].tobytes()
    pcm = expand(payloads.tobytes(), 2)
    return pcm if sys.byteorder == "little" else audioop.byteswap(pcm, 2)


@functools.lru_cache(maxsize=256)
def g711_types(rtpmap: RtpMap) -> np.ndarray:
    """A table of the 256 values of an RTP header's second octet: True where it is an
    unmarked G.711 payload type of the map's formats (codecs.payload_formats). Made once
    per map, read-only: a finisher decodes thousands of calls of the same few maps. A
    marked packet's octet is its type plus 128, never in the table."""
    table = np.zeros(256, dtype=bool)
    formats = payload_formats(rtpmap)
    table[[pt for pt, found in formats.items() if _is_g711(found) and 0 <= pt < 128]] = True
    table.flags.writeable = False
    return table


def looks_random(octets: np.ndarray) -> bool:
    """Whether G.711 payload octets are spread evenly over all 256 values, as encrypted
    bytes are (SRTP's AES counter mode) and as no audio is: speech, silence and noise in
    G.711 all crowd the code words of low and middle amplitude. A chi-square test against
    the uniform distribution: for random octets the statistic is about 255 (sd 23); G.711
    audio gives thousands."""
    if len(octets) < RANDOMNESS_SAMPLE // 2:
        return False
    counts = np.bincount(octets, minlength=256)
    expected = len(octets) / 256
    return float(((counts - expected) ** 2 / expected).sum()) < UNIFORM_CHI_SQUARE


# Octets the randomness test takes from each direction, and the chi-square under which
# they are taken for random (255 degrees of freedom: 6 standard deviations over the mean).
RANDOMNESS_SAMPLE = 8192
UNIFORM_CHI_SQUARE = 400.0


def _padded(data: bytes) -> np.ndarray:
    """The block's bytes and a header's worth of zeros: a short last packet (a 4-byte
    keepalive) is indexed as if whole, then masked out."""
    return np.frombuffer(data + bytes(HEADER_BYTES), dtype=np.uint8)


def _is_g711(found: PayloadFormat) -> bool:
    return (
        found.kind is PayloadKind.AUDIO
        and found.codec is not None
        and found.codec.name in G711_TABLES
        and found.clock_rate == 8000
    )


def _word(octets: np.ndarray) -> np.ndarray:
    """Big-endian 32-bit fields from four octet columns."""
    return octets[:, 0] << 24 | octets[:, 1] << 16 | octets[:, 2] << 8 | octets[:, 3]
