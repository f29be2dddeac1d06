"""The one place where what came off the wire is made safe to keep.

Every byte on the wire is written by a stranger. The decoders say faithfully what a
message claims; before an observation goes on to the call table, the directory or a row,
it passes through `bounded()` here, which

- replaces NUL, other control characters and anything invalid UTF-8 decoded to (a lone
  surrogate) by U+FFFD, so no column, JSON document or log line refuses the text
  (PostgreSQL refuses NUL in text and in jsonb);
- cuts every text to its column's length, with a marker, so no value overflows a column
  (an over-long identifier keeps a digest of the whole, so two long ids stay two);
- holds extension-like fields to rule R4's syntax: a binding whose extension is not a
  dialable number or a SIP user name, or longer than any extension, is refused and
  counted; a call keeps its parties (cleaned) but claims no extension that breaks R4.

Pure Python, no Django: the capture loop and the fuzzers run it on raw decoder output.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TypeVar

from integrations.observations import (
    BindingSeen,
    CallEvent,
    CallSignal,
    EncryptedSignallingSeen,
    Endpoint,
    MediaOffer,
)

Observed = TypeVar("Observed")
Items = TypeVar("Items")

# Rule R4's two shapes (extensions/validators.py explains them and gives the sentences).
DIALABLE = re.compile(r"\+?[0-9*#]+")
SIP_USER_NAME = re.compile(r"[A-Za-z0-9._-]*[A-Za-z][A-Za-z0-9._-]*")
# The longest extension a call system writes: E.164 is 15 digits, a SIP user name rarely
# passes 40. Longer is no extension, whatever its characters.
EXTENSION_MAX = 64
# The columns wire text ends up in (recorder/models.py, extensions/models.py).
PARTY_MAX = 128
IDENTIFIER_MAX = 255
# An END's reason fills a 64-character column; a TRANSFER's names its target's URI.
REASON_MAX = 64
TARGET_MAX = 255
DEVICE_MAX = 128
PROTOCOL_MAX = 8
CODEC_NAME_MAX = 32
ALIASES_MAX = 4
PAYLOAD_TYPES_MAX = 32
OFFERS_MAX = 8
MODES = {"sendrecv", "sendonly", "recvonly", "inactive"}
# The longest IPv6 text form (with an IPv4 tail) is 45 characters.
ADDRESS_MAX = 45
# Addresses whose check clean_address remembers (at most 45 characters each).
ADDRESSES_REMEMBERED = 16_384
# A binding's lifetime beyond this is no SIP Expires a registrar grants (RFC 3261 allows
# 2^32-1, but a week is already far past any registrar's), and overflows date arithmetic.
EXPIRES_MAX = 7 * 24 * 3600
CUT_MARK = "…"
REPLACEMENT = "\ufffd"
# C0 controls but tab, DEL, C1 controls, and surrogates (what invalid UTF-8 became).
UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def is_extension_syntax(value: str) -> bool:
    """True when `value` is written as an extension may be (rule R4): a dialable number
    or a SIP user name, and no longer than any extension."""
    if not value or len(value) > EXTENSION_MAX:
        return False
    return DIALABLE.fullmatch(value) is not None or SIP_USER_NAME.fullmatch(value) is not None


def clean_text(value: object, limit: int) -> str:
    """Text safe for any column of `limit` characters: unsafe characters replaced, cut
    with a marker when longer."""
    text = value if isinstance(value, str) else str(value)
    # Every unsafe character is one Python calls unprintable: printable text (nearly all
    # of it) skips the pattern.
    if not text.isprintable():
        text = UNSAFE.sub(REPLACEMENT, text)
    if len(text) <= limit:
        return text
    return text[: limit - len(CUT_MARK)] + CUT_MARK


def clean_identifier(value: str, limit: int = IDENTIFIER_MAX) -> str:
    """An identifier (a Call-ID) safe for its column. An over-long one is cut and keeps a
    digest of the whole, so that two ids cut alike stay apart."""
    text = clean_text(value, len(value) + 1)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return text[: limit - len(CUT_MARK) - 16] + CUT_MARK + digest


def clean_party(value: str) -> str:
    return clean_text(value, PARTY_MAX)


def clean_address(value: str) -> str:
    """An IP address as text, or empty when it cannot be one (an inet column refuses
    anything else, and the whole row with it)."""
    if len(value) > ADDRESS_MAX:
        return ""
    # The text itself, not the remembered copy: an unchanged field stays the same object,
    # which lets `_with` keep an observation that needed no cleaning.
    return value if _checked_address(value) else ""


@lru_cache(maxsize=ADDRESSES_REMEMBERED)
def _checked_address(value: str) -> str:
    """clean_address's verdict on text of an address's length, remembered: the same few
    thousand phones' and servers' addresses come in every message (ipaddress's parse was
    a tenth of the SCCP path); a stranger's flood of new ones only pushes out the oldest."""
    if is_dotted_quad(value):
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ""
    return value


def is_dotted_quad(text: str) -> bool:
    """True for an IPv4 address written as ipaddress writes it: four decimal numbers up to
    255 without leading zeros, which ipaddress takes and gives back unchanged. Most phones'
    addresses are one, and this check spares ipaddress's parse (13,000 instructions; 4,000
    of them on the 1,000-call pcap, once for the SIP decoder and once here); anything else
    goes to ipaddress."""
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not (part.isdigit() and part.isascii() and len(part) <= 3):
            return False
        if len(part) > 1 and (part[0] == "0" or int(part) > 255):
            return False
    return True


def clean_moment(at: datetime) -> datetime | None:
    """A wire time within what any capture can carry, else None."""
    if at.tzinfo is None or not EARLIEST <= at <= LATEST:
        return None
    return at


class Refused(Exception):
    """An observation that cannot be kept: its `kind` is counted by the caller."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def bounded(observation: object) -> object:
    """The observation made safe to keep, or Refused with the reason's kind.

    Counted kinds: `bad-extension` (a binding whose extension breaks R4), `bad-address`
    (a binding at no IP address), `bad-time` (a time no capture carries).
    """
    if isinstance(observation, CallSignal):
        return _bounded_signal(observation)
    if isinstance(observation, BindingSeen):
        return _bounded_binding(observation)
    if isinstance(observation, EncryptedSignallingSeen):
        ip = clean_address(observation.ip)
        if not ip:
            raise Refused("bad-address")
        return replace(observation, ip=ip, protocol=clean_text(observation.protocol, 16))
    return observation


def _with(observation: Observed, **fields: object) -> Observed:
    """`observation` with `fields`, as dataclasses.replace makes it; the observation itself
    when each field is already the very object it holds. Nearly all wire text needs no
    cleaning, and the copy of a frozen dataclass cost more than the cleaning did."""
    for name, value in fields.items():
        if getattr(observation, name) is not value:
            return replace(observation, **fields)
    return observation


def _kept(given: Items, made: Items) -> Items:
    """`made`, or `given` when the two hold the very same objects in tuples alike all the
    way down (the cleaning changed none of them), so that `_with` sees the field unchanged."""
    return given if _identical(given, made) else made


def _identical(given: object, made: object) -> bool:
    if given is made:
        return True
    if type(given) is not tuple or type(made) is not tuple or len(given) != len(made):
        return False
    return all(map(_identical, given, made))


def _bounded_binding(seen: BindingSeen) -> BindingSeen:
    if not is_extension_syntax(seen.extension):
        raise Refused("bad-extension")
    ip = clean_address(seen.ip)
    if not ip:
        raise Refused("bad-address")
    if clean_moment(seen.seen_at) is None:
        raise Refused("bad-time")
    expires = seen.expires_in
    if expires is not None:
        expires = min(max(expires, 0), EXPIRES_MAX)
    line = seen.line_number
    if line is not None and not 1 <= line <= 1000:
        line = None
    aliases = tuple(alias for alias in seen.aliases[:ALIASES_MAX] if is_extension_syntax(alias))
    return _with(
        seen,
        ip=ip,
        expires_in=expires,
        device=clean_text(seen.device, DEVICE_MAX),
        line_number=line,
        aliases=_kept(seen.aliases, aliases),
        authority=clean_address(seen.authority),
    )


def _bounded_signal(signal: CallSignal) -> CallSignal:
    if clean_moment(signal.at) is None:
        raise Refused("bad-time")
    if _is_clean_signal(signal):
        return signal
    return _with(
        signal,
        call_id=clean_identifier(signal.call_id),
        protocol=clean_text(signal.protocol, PROTOCOL_MAX),
        caller=clean_party(signal.caller),
        caller_name=clean_party(signal.caller_name),
        callee=clean_party(signal.callee),
        callee_name=clean_party(signal.callee_name),
        caller_ip=clean_address(signal.caller_ip),
        callee_ip=clean_address(signal.callee_ip),
        media=_kept(
            signal.media, tuple(_bounded_offer(offer) for offer in signal.media[:OFFERS_MAX])
        ),
        reason=clean_text(
            signal.reason, REASON_MAX if signal.event == CallEvent.END else TARGET_MAX
        ),
        replaces_call_id=clean_identifier(signal.replaces_call_id),
        joins_call_id=clean_identifier(signal.joins_call_id),
    )


def _is_clean_signal(signal: CallSignal) -> bool:
    """True when _bounded_signal's cleaning would give every field back as the very object
    it is, told with one look at all the signal's text instead of a call a field (a
    decoder's signal nearly always is clean, and 15 calls and a copy's keywords cost 60 %
    of the cleaning): the text printable (the whole is when each part is), each no longer
    than its column, the addresses addresses, the offers clean. Text that is not all str
    is left to the cleaning, which makes it text."""
    try:
        text = "".join(
            (signal.call_id, signal.replaces_call_id, signal.joins_call_id, signal.protocol,
             signal.caller, signal.caller_name, signal.callee, signal.callee_name,
             signal.reason)
        )  # fmt: skip
    except TypeError:
        return False
    reason_max = REASON_MAX if signal.event == CallEvent.END else TARGET_MAX
    media = signal.media
    return (
        text.isprintable()
        and len(signal.call_id) <= IDENTIFIER_MAX
        and len(signal.replaces_call_id) <= IDENTIFIER_MAX
        and len(signal.joins_call_id) <= IDENTIFIER_MAX
        and len(signal.protocol) <= PROTOCOL_MAX
        and len(signal.caller) <= PARTY_MAX
        and len(signal.caller_name) <= PARTY_MAX
        and len(signal.callee) <= PARTY_MAX
        and len(signal.callee_name) <= PARTY_MAX
        and len(signal.reason) <= reason_max
        and clean_address(signal.caller_ip) is signal.caller_ip
        and clean_address(signal.callee_ip) is signal.callee_ip
        and (not media or _kept(media, tuple(map(_bounded_offer, media[:OFFERS_MAX]))) is media)
    )


def _bounded_offer(offer: MediaOffer) -> MediaOffer:
    receive_at = offer.receive_at
    address = clean_address(receive_at.ip)
    if address != receive_at.ip:
        receive_at = Endpoint(address or "0.0.0.0", receive_at.port)
    payload_types = tuple(
        (number, clean_text(name, CODEC_NAME_MAX))
        for number, name in offer.payload_types[:PAYLOAD_TYPES_MAX]
    )
    payload_types = _kept(offer.payload_types, payload_types)
    mode = offer.mode if offer.mode in MODES else "sendrecv"
    return _with(offer, receive_at=receive_at, payload_types=payload_types, mode=mode)
