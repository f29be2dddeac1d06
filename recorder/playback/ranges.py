"""HTTP Range requests for audio (RFC 9110, section 14).

One byte range is served as 206 Partial Content. Several ranges in one request are
answered with the whole file (200), which RFC 9110 section 14.2 allows ("a server MAY
ignore the Range header field"): players ask for one range at a time, and a multipart
answer would only serve clients that can overlap ranges to make the server work harder.
A malformed Range header, or one in another unit, is ignored the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# byte-range-spec = first-pos "-" [ last-pos ]; suffix-range = "-" suffix-length
SINGLE_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)


class RangeNotSatisfiable(Exception):
    """No byte of the file is in the range asked for: 416, with the file's size."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    first: int
    last: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


def requested_range(header: str | None, size: int) -> ByteRange | None:
    """The one range of a `size`-byte file to serve, or None to serve it whole."""
    spec = _single_spec(header)
    if spec is None:
        return None
    first, last = spec
    if first is None:
        return _suffix(last, size)
    if last is not None and last < first:
        return None  # An invalid range-spec: the header is ignored (RFC 9110, 14.1.1).
    if first >= size:
        raise RangeNotSatisfiable
    return ByteRange(first, size - 1 if last is None else min(last, size - 1))


def starts_past_zero(header: str | None) -> bool:
    """Whether a Range asks for audio after the start: a seek, for the audit."""
    spec = _single_spec(header)
    return spec is not None and (spec[0] is None or spec[0] > 0)


def _suffix(length: int, size: int) -> ByteRange:
    # "bytes=-100" is the last 100 bytes; "bytes=-0" asks for none of them.
    if length == 0 or size == 0:
        raise RangeNotSatisfiable
    return ByteRange(max(0, size - length), size - 1)


def _single_spec(header: str | None) -> tuple[int | None, int | None] | None:
    match = SINGLE_BYTE_RANGE.fullmatch((header or "").strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    try:
        return tuple(int(group) if group else None for group in match.groups())
    except ValueError:  # More digits than Python converts: not a range anyone means.
        return None
