"""One SIP message from bytes (RFC 3261 §7).

Header bytes are decoded as UTF-8 with errors="replace": RFC 3261 §7.3.1 says header text is
UTF-8, and a phone that sends one bad byte in a display name must not lose its REGISTER. Valid
UTF-8 comes through unchanged (rule R4); an invalid byte becomes U+FFFD and
`SipMessage.replaced_bytes` says so.

Everything is bounded: the header section at 64 KiB, 200 header lines, the body at 64 KiB.
Bad input raises `SipDecodeError` with a short `kind`, and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from integrations.observations import direct_init
from integrations.sip.errors import SipDecodeError
from integrations.sip.sdp import SessionDescription, parse_sdp
from integrations.sip.uri import (
    NameAddr,
    Via,
    find_param,
    parse_name_addr,
    parse_params,
    parse_via,
    split_outside_quotes,
)

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
MAX_BODY_BYTES = 64 * 1024
# Parts of a multipart body looked at for its SDP (a SIPREC INVITE has two).
MAX_BODY_PARTS = 8

# RFC 3261 §7.3.3 compact forms, plus the ones later RFCs registered (IANA "Header Fields").
COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",  # RFC 6665
    "u": "allow-events",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "b": "referred-by",  # RFC 3892
    "x": "session-expires",  # RFC 4028
}

# Headers whose values may be combined with commas on one line (§7.3.1). From, To,
# Call-ID and the like are single-valued, and their display names may contain commas.
LIST_HEADERS = frozenset({"via", "contact", "route", "record-route", "p-asserted-identity"})

TOKEN = rb"[A-Za-z0-9.!%*_+`'~-]+"
REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") ([^ \r\n]+) SIP/2\.0\r?$")
STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6][0-9][0-9])(?: ([^\r\n]*))?\r?$")
HEADER_END = re.compile(rb"\r?\n\r?\n")


Parsed = TypeVar("Parsed")


class parsed_once(Generic[Parsed]):
    """A property parsed on first use and kept in the instance's __dict__, as
    functools.cached_property does but without the lock Python 3.11 takes around every
    first use (a message is read by one thread; the lock cost 3,000 instructions a first
    use, 2 % of the SIP path). A parse that raises keeps nothing, and raises again when
    asked again."""

    def __init__(self, parse: Callable[[Any], Parsed]) -> None:
        self.parse = parse
        self.name = parse.__name__
        self.__doc__ = parse.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Parsed:
        if instance is None:
            return self  # type: ignore[return-value]
        value = self.parse(instance)
        instance.__dict__[self.name] = value
        return value


@direct_init
@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str


@direct_init
@dataclass(frozen=True)
class SipMessage:
    """A request (method, request_uri) or a response (status, reason), with its headers in
    wire order under lower-case full names, and its body."""

    method: str
    request_uri: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    replaced_bytes: bool = False

    @property
    def is_request(self) -> bool:
        return self.status == 0

    def header(self, name: str) -> str | None:
        """The first value of a header, by full or compact name, any case."""
        wanted = canonical_name(name)
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header: all its lines, and for list headers each comma item."""
        wanted = canonical_name(name)
        lines = [value for key, value in self.headers if key == wanted]
        if wanted not in LIST_HEADERS:
            return lines
        return [item.strip() for line in lines for item in split_outside_quotes(line, ",")]

    def has_header_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key, _ in self.headers)

    @parsed_once
    def call_id(self) -> str:
        value = (self.header("call-id") or "").strip()
        if not value:
            raise SipDecodeError("missing-header", "Call-ID")
        return value

    @parsed_once
    def cseq(self) -> CSeq:
        """`CSeq: 4711 INVITE` (§20.16): a 32-bit number and a method."""
        number, _, method = (self.header("cseq") or "").strip().partition(" ")
        if not number.isdigit() or len(number) > 10 or not method.strip():
            raise SipDecodeError("bad-cseq", (self.header("cseq") or "")[:40])
        return CSeq(int(number), method.strip().upper())

    @parsed_once
    def from_(self) -> NameAddr:
        return self.required_name_addr("from")

    @parsed_once
    def to(self) -> NameAddr:
        return self.required_name_addr("to")

    def required_name_addr(self, name: str) -> NameAddr:
        value = self.header(name)
        if value is None:
            raise SipDecodeError("missing-header", name)
        return parse_name_addr(value)

    @parsed_once
    def vias(self) -> tuple[Via, ...]:
        return tuple(parse_via(value) for value in self.header_values("via"))

    @parsed_once
    def contacts(self) -> tuple[NameAddr, ...]:
        """Contact values; `Contact: *` (§10.2.2) is left out, see `contact_star`."""
        values = [v for v in self.header_values("contact") if v and v != "*"]
        return tuple(parse_name_addr(value) for value in values)

    @property
    def contact_star(self) -> bool:
        return "*" in self.header_values("contact")

    @parsed_once
    def sdp(self) -> SessionDescription | None:
        """The SDP body, when the body is SDP (§20.15 Content-Type, or a bare `v=0`), or the
        SDP part of a multipart body (a SIPREC offer beside its metadata, RFC 7866 §6.1)."""
        written = self.header("content-type") or ""
        content_type = written.lower()
        if not self.body.strip():
            return None
        if content_type.startswith("multipart/"):
            part = sdp_part(self.body, written)
            return None if part is None else parse_sdp(part)
        if "application/sdp" in content_type or (not content_type and self.body[:2] == b"v="):
            return parse_sdp(self.body)
        return None


def sdp_part(body: bytes, content_type: str) -> bytes | None:
    """The first application/sdp part of a multipart body (RFC 2046 §5.1.1): parts are
    delimited by `--boundary` lines (the boundary as written: it is case-sensitive), each
    its own headers, an empty line, its content."""
    boundary = find_param(parse_params(content_type.partition(";")[2]), "boundary")
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode("utf-8", errors="replace")
    for part in body.split(delimiter)[1 : MAX_BODY_PARTS + 1]:
        pieces = HEADER_END.split(part.lstrip(b"\r\n"), maxsplit=1)
        if len(pieces) == 2 and b"application/sdp" in pieces[0].lower():
            return pieces[1]
    return None


@lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    """The lower-case full name of a header (§7.3.3 compact forms expanded). Cached: the
    same few dozen names come in every message."""
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


def looks_like_sip(payload: bytes) -> bool:
    """True when the payload starts with a SIP start line (§7.1, §7.2); cheap enough for
    every non-RTP datagram on any port."""
    if payload[:1] in (b"\r", b"\n"):
        payload = payload.lstrip(b"\r\n")
    if payload.startswith(b"SIP/2.0 "):
        return payload[8:11].isdigit()
    if not payload[:1].isalpha():
        return False
    line_end = payload.find(b"\n", 0, 4096)
    line = payload[:line_end] if line_end >= 0 else payload[:4096]
    return REQUEST_LINE.fullmatch(line) is not None


def parse_message(data: bytes, *, stream: bool = False) -> SipMessage:
    """Parse one message. Over UDP (`stream=False`) the datagram end bounds the body and a
    missing Content-Length means "the rest" (§18.3); over a stream the framer has already
    cut the message and a missing Content-Length means an empty body."""
    data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are ignored
    head, body_start = split_head(data)
    start_line, _, header_block = head.partition(b"\n")
    method, request_uri, status, reason = parse_start_line(start_line.rstrip(b"\r"), head)
    text = header_block.decode("utf-8", errors="replace")
    headers = parse_headers(text.split("\n")) if header_block else ()
    body = read_body(data[body_start:], headers, stream=stream)
    replaced = not header_block.isascii() and "\ufffd" in text
    return SipMessage(method, request_uri, status, reason, headers, body, replaced)


def split_head(data: bytes) -> tuple[bytes, int]:
    """The header section and the offset of the body (§7: an empty line ends the headers)."""
    end = empty_line(data, MAX_HEADER_BYTES + 4)
    if end is not None:
        return data[: end[0]], end[1]
    if len(data) > MAX_HEADER_BYTES:
        raise SipDecodeError("header-too-large", f"{len(data)} bytes without an empty line")
    return data.rstrip(b"\r\n"), len(data)


def empty_line(data: bytes | bytearray, limit: int) -> tuple[int, int] | None:
    """Where HEADER_END first matches in data[:limit] (start, end), found with two byte
    searches: the pattern, tried at every byte, cost 48,000 instructions a message, 8 % of
    the SIP path. Each match holds a line feed followed by CRLF or LF; the first such line
    feed is the first match's, which starts at the CR before it when there is one."""
    crlf = data.find(b"\n\r\n", 0, limit)
    lf = data.find(b"\n\n", 0, limit if crlf < 0 else crlf + 1)
    if lf >= 0:
        line_feed, end = lf, lf + 2
    elif crlf >= 0:
        line_feed, end = crlf, crlf + 3
    else:
        return None
    start = line_feed - 1 if line_feed and data[line_feed - 1] == 13 else line_feed
    return start, end


def parse_start_line(line: bytes, head: bytes) -> tuple[str, str, int, str]:
    """`SIP/2.0 200 OK` (§7.2) or `INVITE sip:bob@example.com SIP/2.0` (§7.1)."""
    status = STATUS_LINE.fullmatch(line)
    if status is not None:
        return "", "", int(status.group(1)), (status.group(2) or b"").decode("utf-8", "replace")
    request = REQUEST_LINE.fullmatch(line)
    if request is not None:
        method = request.group(1).decode("ascii").upper()
        return method, request.group(2).decode("utf-8", "replace"), 0, ""
    kind = "bad-start-line" if b"SIP/2.0" in head[:4096] else "not-sip"
    raise SipDecodeError(kind, line[:60].decode("utf-8", "replace"))


def parse_headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Header lines, with folded continuation lines joined (§7.3.1)."""
    headers: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipDecodeError("bad-header", "continuation before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        if len(line) <= REMEMBERED_LINE_MAX:
            headers.append(_remembered_header_line(line))
        else:
            headers.append(parse_header_line(line))
        if len(headers) > MAX_HEADERS:
            raise SipDecodeError("too-many-headers", f"over {MAX_HEADERS}")
    return tuple(headers)


# A dialog's From, To, Call-ID and CSeq lines, and the Content-Length and Content-Type
# of every message, come back word for word: the last HEADER_LINES_REMEMBERED lines (each
# at most REMEMBERED_LINE_MAX characters, so that a stranger's long headers cost no memory)
# are split once. A line that fails to parse is not remembered and fails again.
HEADER_LINES_REMEMBERED = 8192
REMEMBERED_LINE_MAX = 256


@lru_cache(maxsize=HEADER_LINES_REMEMBERED)
def _remembered_header_line(line: str) -> tuple[str, str]:
    return parse_header_line(line)


def parse_header_line(line: str) -> tuple[str, str]:
    """`Name: value`, with optional white space before the colon (§7.3.1 HCOLON)."""
    name, colon, value = line.partition(":")
    name = name.strip()
    if not colon or not name or " " in name or "\t" in name:
        raise SipDecodeError("bad-header", line[:60])
    return canonical_name(name), value.strip()


def read_body(rest: bytes, headers: tuple[tuple[str, str], ...], *, stream: bool) -> bytes:
    length = content_length(headers)
    if length is None:
        return b"" if stream else rest[:MAX_BODY_BYTES]
    if len(rest) < length:
        raise SipDecodeError("truncated-body", f"{len(rest)} of {length} bytes")
    return rest[:length]


def content_length(headers: tuple[tuple[str, str], ...]) -> int | None:
    """Content-Length (§20.14): one non-negative value up to 64 KiB, or None when absent."""
    values = {value.strip() for name, value in headers if name == "content-length"}
    if not values:
        return None
    if len(values) > 1:
        raise SipDecodeError("bad-content-length", "several different values")
    return check_content_length(values.pop())


def check_content_length(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise SipDecodeError("bad-content-length", text[:20])
    if len(text) > 6 or int(text) > MAX_BODY_BYTES:
        raise SipDecodeError("body-too-large", text[:20])
    return int(text)
