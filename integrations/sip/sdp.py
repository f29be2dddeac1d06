"""SDP (RFC 4566) as far as a recorder needs it: where each party receives audio.

Only `c=`, `m=` and the `a=` lines rtpmap, crypto and the direction attributes are read.
Unknown lines are skipped, as RFC 4566 §5 asks of a parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from integrations.observations import direct_init
from integrations.sip.errors import SipDecodeError
from integrations.sip.uri import normalize_ip

MAX_MEDIA_LINES = 32
DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})

# RFC 3551 §6 static payload types, used when an offer lists one without a=rtpmap.
STATIC_PAYLOAD_TYPES = {
    0: "PCMU/8000",
    3: "GSM/8000",
    4: "G723/8000",
    5: "DVI4/8000",
    6: "DVI4/16000",
    7: "LPC/8000",
    8: "PCMA/8000",
    9: "G722/8000",
    10: "L16/44100/2",
    11: "L16/44100",
    12: "QCELP/8000",
    13: "CN/8000",
    14: "MPA/90000",
    15: "G728/8000",
    16: "DVI4/11025",
    17: "DVI4/22050",
    18: "G729/8000",
}


@direct_init
@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One `m=` section with the connection address that applies to it (§5.7, §5.14)."""

    media: str
    port: int
    protocol: str
    payload_types: tuple[tuple[int, str], ...]
    address: str
    direction: str = "sendrecv"
    encrypted: bool = False

    @property
    def holds(self) -> bool:
        """Hold as RFC 3264 §8.4 (sendonly/inactive) or RFC 2543 (c=0.0.0.0) writes it."""
        return self.direction in ("sendonly", "inactive") or self.address in HOLD_ADDRESSES


@direct_init
@dataclass(frozen=True, slots=True)
class SessionDescription:
    media: tuple[MediaDescription, ...]

    @property
    def audio(self) -> tuple[MediaDescription, ...]:
        """Audio streams that are in use (port 0 rejects a stream, RFC 3264 §6)."""
        return tuple(m for m in self.media if m.media == "audio" and m.port > 0)


@dataclass(slots=True)
class _Section:
    """An m= section while it is being read."""

    media: str = ""
    port: int = 0
    protocol: str = ""
    formats: tuple[str, ...] = ()
    address: str = ""
    direction: str = ""
    crypto: bool = False
    rtpmap: dict[int, str] | None = None


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; raises SipDecodeError("bad-sdp") when it is not SDP at all."""
    text = body.decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SipDecodeError("bad-sdp", "no v= line")
    session = _Section()
    sections: list[_Section] = []
    for line in lines[1:]:
        kind, _, value = line.partition("=")
        if kind == "m":
            if len(sections) >= MAX_MEDIA_LINES:
                raise SipDecodeError("bad-sdp", "too many m= lines")
            sections.append(media_section(value))
        else:
            read_attribute(sections[-1] if sections else session, kind, value)
    return SessionDescription(tuple(finish(section, session) for section in sections))


def media_section(value: str) -> _Section:
    """`m=<media> <port>[/<count>] <proto> <fmt> ...` (§5.14)."""
    fields = value.split()
    if len(fields) < 3:
        raise SipDecodeError("bad-sdp", f"m={value[:40]}")
    port_text = fields[1].partition("/")[0]
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise SipDecodeError("bad-sdp", f"m= port {port_text[:20]!r}")
    return _Section(fields[0].lower(), int(port_text), fields[2], tuple(fields[3:]))


def read_attribute(section: _Section, kind: str, value: str) -> None:
    if kind == "c":
        section.address = connection_address(value)
    elif kind == "a":
        read_a_line(section, value)


def connection_address(value: str) -> str:
    """`c=IN IP4 <addr>[/ttl]` (§5.7); IPs come out compressed, hostnames as written."""
    fields = value.split()
    if len(fields) < 3:
        raise SipDecodeError("bad-sdp", f"c={value[:40]}")
    address = fields[2].partition("/")[0]
    return normalize_ip(address) or address


def read_a_line(section: _Section, value: str) -> None:
    name, _, rest = value.partition(":")
    name = name.strip().lower()
    if name in DIRECTIONS:
        section.direction = name
    elif name == "crypto":
        section.crypto = True
    elif name == "rtpmap":
        payload_type, _, encoding = rest.strip().partition(" ")
        if payload_type.isdigit() and len(payload_type) <= 3:
            section.rtpmap = section.rtpmap or {}
            section.rtpmap[int(payload_type)] = encoding.strip()


def finish(section: _Section, session: _Section) -> MediaDescription:
    """Apply session-level c= and direction to a media section that has none (§5.7, §6)."""
    return MediaDescription(
        media=section.media,
        port=section.port,
        protocol=section.protocol,
        payload_types=payload_types(section),
        address=section.address or session.address,
        direction=section.direction or session.direction or "sendrecv",
        encrypted=section.crypto or session.crypto or "SAVP" in section.protocol.upper(),
    )


def payload_types(section: _Section) -> tuple[tuple[int, str], ...]:
    """Payload types in offer order, named by a=rtpmap or by the RFC 3551 static table."""
    rtpmap = section.rtpmap or {}
    named: list[tuple[int, str]] = []
    for fmt in section.formats:
        if fmt.isdigit() and len(fmt) <= 3:
            number = int(fmt)
            named.append((number, rtpmap.get(number) or STATIC_PAYLOAD_TYPES.get(number, "")))
    return tuple(named)
