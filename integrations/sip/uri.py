"""SIP and tel URIs, name-addr / addr-spec values and Via values (RFC 3261 §19.1, §20, RFC 3966).

Everything here works on text that `message.py` already decoded. The user part of a URI is
kept exactly as written apart from percent-escapes, which are decoded (rule R4: `01234` stays
`01234`, `+1-425-555-0100` keeps its dashes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from integrations.bounds import is_dotted_quad
from integrations.observations import direct_init
from integrations.sip.errors import SipDecodeError

Params = tuple[tuple[str, str], ...]


@direct_init
@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:, sips: or tel: URI. For tel: the number is in `user` and `host` is empty."""

    scheme: str
    user: str
    host: str
    port: int | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)

    @property
    def host_ip(self) -> str | None:
        """The host as a compressed IP address, or None for a hostname."""
        return normalize_ip(self.host)


@direct_init
@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From, To, Contact, Refer-To or P-Asserted-Identity value (RFC 3261 §20.10)."""

    display_name: str
    uri: SipUri
    params: Params = ()
    uri_text: str = ""

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)

    @property
    def tag(self) -> str:
        return self.param("tag") or ""


@direct_init
@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=..;received=..;rport=..` (§20.42)."""

    transport: str
    host: str
    port: int | None
    params: Params = ()

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)


def find_param(params: Params, name: str) -> str | None:
    wanted = name.lower()
    for key, value in params:
        if key == wanted:
            return value
    return None


@lru_cache(maxsize=65536)
def normalize_ip(text: str) -> str | None:
    """An IPv4 or IPv6 literal in its compressed text form, or None.

    Cached: a capture sees the same few thousand addresses in every message.
    """
    text = text.strip("[]")
    if is_dotted_quad(text):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on `separator` except inside "quoted strings" and <angle brackets> (§7.3.1)."""
    if separator not in text:
        # Nothing to split on (a single Contact, a URI without parameters): the text whole,
        # as the walk below would give it, without a Python step per character.
        return [text]
    if '"' not in text and "<" not in text:
        return text.split(separator)
    return split_walking(text, separator)


def split_walking(text: str, separator: str) -> list[str]:
    """split_outside_quotes a step per character, as any text needs when the searches
    above cannot tell."""
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes:
            escaped = char == "\\"
            in_quotes = char != '"'
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == separator and not in_angle:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> Params:
    """`;name=value;flag` into lower-cased names with unquoted values."""
    params: list[tuple[str, str]] = []
    for item in split_outside_quotes(text, ";"):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name:
            params.append((name, unquote_string(value.strip())))
    return tuple(params)


def unquote_string(value: str) -> str:
    """Remove the quotes of a quoted-string and its backslash escapes (§25.1)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_host_port(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port`, and the bare IPv6 some phones send
    (`fe80:0:0:0:21a:a0ff:fe07:32e0:5060`, seen in heplify-sip_ipv6_udp.pcap)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, parse_port(rest[1:]) if rest.startswith(":") else None
    if text.count(":") > 1:
        return bare_ipv6_host_port(text)
    host, _, port = text.partition(":")
    return host, parse_port(port) if port else None


def bare_ipv6_host_port(text: str) -> tuple[str, int | None]:
    if normalize_ip(text) is not None:
        return text, None
    host, _, port = text.rpartition(":")
    if normalize_ip(host) is not None:
        return host, parse_port(port)
    raise SipDecodeError("bad-uri", f"host {text[:40]!r}")


def parse_port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise SipDecodeError("bad-uri", f"port {text[:20]!r}")
    return int(text)


def parse_uri(text: str) -> SipUri:
    """A URI inside <> or an addr-spec without header params (§19.1.1, RFC 3966 §3)."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or not scheme:
        raise SipDecodeError("bad-uri", f"no scheme in {text[:40]!r}")
    if scheme in ("sip", "sips"):
        return parse_sip_uri(scheme, rest)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        return SipUri("tel", decode_user(number), "", None, parse_params(params))
    return SipUri(scheme, "", "")


def parse_sip_uri(scheme: str, rest: str) -> SipUri:
    rest = rest.partition("?")[0]
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        hostpart = rest
    user = userinfo.partition(":")[0] if at else ""
    hostport, _, params = hostpart.partition(";")
    host, port = parse_host_port(hostport)
    if not host:
        raise SipDecodeError("bad-uri", "empty host")
    return SipUri(scheme, decode_user(user), host, port, parse_params(params))


def decode_user(user: str) -> str:
    """Percent-escapes decoded (§19.1.2); nothing else changes (R4)."""
    return unquote(user, errors="replace") if "%" in user else user


def parse_name_addr(text: str) -> NameAddr:
    """`"Name" <uri>;params` or `uri;params` (§20.10: in the second form every `;` starts a
    header parameter, so the URI can carry none)."""
    if len(text) <= REMEMBERED_TEXT_MAX:
        return _remembered_name_addr(text)
    return _parse_name_addr(text)


# A dialog's From, To and Contact come back word for word in each of its messages: the
# last NAME_ADDRS_REMEMBERED of them (each at most REMEMBERED_TEXT_MAX characters, so that
# a stranger's long headers cost no memory) are parsed once. Their values are frozen; a
# text that fails to parse is not remembered and fails again.
NAME_ADDRS_REMEMBERED = 8192
REMEMBERED_TEXT_MAX = 256


@lru_cache(maxsize=NAME_ADDRS_REMEMBERED)
def _remembered_name_addr(text: str) -> NameAddr:
    return _parse_name_addr(text)


def _parse_name_addr(text: str) -> NameAddr:
    text = text.strip()
    angle = angle_bracket_span(text)
    if angle is None:
        uri_text, _, params = text.partition(";")
        return NameAddr("", parse_uri(uri_text), parse_params(params), uri_text.strip())
    start, end = angle
    display = unquote_string(text[:start].strip())
    uri_text = text[start + 1 : end]
    return NameAddr(display, parse_uri(uri_text), parse_params(text[end + 1 :]), uri_text)


def angle_bracket_span(text: str) -> tuple[int, int] | None:
    """Positions of the `<` and `>` that enclose the URI, skipping a quoted display name."""
    if '"' not in text:
        # No display name in quotes (or a bare token one): the walk below would stop at
        # the first `<`, and find the `>` after it, as these searches do.
        start = text.find("<")
        if start < 0:
            return None
        end = text.find(">", start)
        if end < 0:
            raise SipDecodeError("bad-uri", "unclosed <")
        return start, end
    return angle_span_walking(text)


def angle_span_walking(text: str) -> tuple[int, int] | None:
    """angle_bracket_span a step per character, past a quoted display name."""
    in_quotes = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes:
            escaped = char == "\\"
            in_quotes = char != '"'
        elif char == '"':
            in_quotes = True
        elif char == "<":
            end = text.find(">", index)
            if end < 0:
                raise SipDecodeError("bad-uri", "unclosed <")
            return index, end
    return None


def parse_via(text: str) -> Via:
    """`SIP/2.0/UDP sent-by;params` (§20.42)."""
    if len(text) <= REMEMBERED_TEXT_MAX:
        return _remembered_via(text)
    return _parse_via(text)


# A request's Via comes back word for word in its responses (§8.2.6.2), and in its
# retransmissions: the last VIAS_REMEMBERED of them, each at most REMEMBERED_TEXT_MAX
# characters, are parsed once, as the name-addrs are. A Via that fails is not remembered.
VIAS_REMEMBERED = 8192


@lru_cache(maxsize=VIAS_REMEMBERED)
def _remembered_via(text: str) -> Via:
    return _parse_via(text)


def _parse_via(text: str) -> Via:
    protocol, _, rest = text.strip().partition(" ")
    parts = protocol.split("/")
    if len(parts) != 3 or parts[0].upper() != "SIP":
        raise SipDecodeError("bad-via", f"protocol {protocol[:40]!r}")
    sent_by, _, params = rest.strip().partition(";")
    host, port = parse_host_port(sent_by)
    return Via(parts[2].upper(), host, port, parse_params(params))
