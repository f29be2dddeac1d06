"""The TAPI bridge protocol, version 1 (docs/tapi-bridge.md): JSON in, observations out.

A bridge beside ShoreTel's TAPI service provider publishes two documents: the lines it
monitors (GET /v1/lines) and a feed of what happened on them (GET /v1/events). This
module turns both into the observation types every source emits: a line is a BindingSeen
with source "tapi", a call state change a CallSignal with protocol "tapi". It imports no
Django, so it can be fed JSON straight from a test or a fuzzer.

Call states are TAPI 2.x's own words: the LINECALLSTATE_ constant without its prefix, in
lower case (LINECALLSTATE_OFFERING is "offering"). Call origins are LINECALLORIGIN_ names
the same way, and line states LINEDEVSTATE_INSERVICE / LINEDEVSTATE_OUTOFSERVICE.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallDirection,
    CallEvent,
    CallProtocol,
    CallSignal,
    Side,
)

PROTOCOL: Final = CallProtocol.TAPI
API_MAJOR: Final = 1
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
# A measured clock offset smaller than this (plus the measurement's own uncertainty) is
# noise: correcting by it would move event times back and forth from poll to poll.
SKEW_TOLERANCE: Final = 1.0
ZERO: Final = timedelta(0)
# What QMS stores of the feed's keys (integrations.shoretel.models): a longer one would not
# fit its column, so it is refused here rather than failing the page's transaction.
MAX_CURSOR: Final = 200
MAX_BOOT_ID: Final = 100
MAX_ID: Final = 200
MAX_LINE_NUMBER: Final = 1000
# A TAPI event happens now, give or take a clock; a time outside these years is not a
# clock error but a broken bridge, and left in it would overflow the arithmetic on it.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9000, 1, 1, tzinfo=UTC)


class TapiState(StrEnum):
    """LINECALLSTATE_* (tapi.h; [MS-TRP] 2.2.3.1.29), named without the prefix."""

    IDLE = "idle"
    OFFERING = "offering"
    ACCEPTED = "accepted"
    DIALTONE = "dialtone"
    DIALING = "dialing"
    RINGBACK = "ringback"
    BUSY = "busy"
    SPECIALINFO = "specialinfo"
    CONNECTED = "connected"
    PROCEEDING = "proceeding"
    ONHOLD = "onhold"
    CONFERENCED = "conferenced"
    ONHOLDPENDCONF = "onholdpendconf"
    ONHOLDPENDTRANSFER = "onholdpendtransfer"
    DISCONNECTED = "disconnected"
    UNKNOWN = "unknown"


# The bit values TAPI gives the states, for bridge writers mapping dwParam1 of LINE_CALLSTATE.
LINECALLSTATE: Final = {
    TapiState.IDLE: 0x00000001,
    TapiState.OFFERING: 0x00000002,
    TapiState.ACCEPTED: 0x00000004,
    TapiState.DIALTONE: 0x00000008,
    TapiState.DIALING: 0x00000010,
    TapiState.RINGBACK: 0x00000020,
    TapiState.BUSY: 0x00000040,
    TapiState.SPECIALINFO: 0x00000080,
    TapiState.CONNECTED: 0x00000100,
    TapiState.PROCEEDING: 0x00000200,
    TapiState.ONHOLD: 0x00000400,
    TapiState.CONFERENCED: 0x00000800,
    TapiState.ONHOLDPENDCONF: 0x00001000,
    TapiState.ONHOLDPENDTRANSFER: 0x00002000,
    TapiState.DISCONNECTED: 0x00004000,
    TapiState.UNKNOWN: 0x00008000,
}

# The step of a call each state is. Busy, special information and unknown are tones and
# doubts, not steps: they are kept in the feed's history but move no call.
STEPS: Final = {
    TapiState.OFFERING: CallEvent.START,
    TapiState.DIALTONE: CallEvent.START,
    TapiState.DIALING: CallEvent.START,
    TapiState.PROCEEDING: CallEvent.START,
    TapiState.ACCEPTED: CallEvent.RINGING,
    TapiState.RINGBACK: CallEvent.RINGING,
    TapiState.CONNECTED: CallEvent.ANSWER,
    TapiState.CONFERENCED: CallEvent.ANSWER,
    TapiState.ONHOLD: CallEvent.HOLD,
    TapiState.ONHOLDPENDCONF: CallEvent.HOLD,
    TapiState.ONHOLDPENDTRANSFER: CallEvent.HOLD,
    TapiState.DISCONNECTED: CallEvent.END,
    TapiState.IDLE: CallEvent.END,
}
# States only the placing side of a call goes through.
PLACING: Final = {
    TapiState.DIALTONE,
    TapiState.DIALING,
    TapiState.PROCEEDING,
    TapiState.RINGBACK,
}


class Origin(StrEnum):
    """LINECALLORIGIN_* (LINECALLINFO.dwOrigin), named without the prefix."""

    OUTBOUND = "outbound"
    INTERNAL = "internal"
    EXTERNAL = "external"
    UNKNOWN = "unknown"
    UNAVAIL = "unavail"
    CONFERENCE = "conference"
    INBOUND = "inbound"


class LineState(StrEnum):
    """LINEDEVSTATE_INSERVICE / LINEDEVSTATE_OUTOFSERVICE: an extension at a phone or not."""

    INSERVICE = "inservice"
    OUTOFSERVICE = "outofservice"


class ProtocolError(ValueError):
    """The bridge answered with something that is not version 1 of the protocol."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every answer of the bridge carries: who it is this boot, and its clock."""

    version: str
    boot_id: str
    server_time: datetime | None


@dataclass(frozen=True, slots=True)
class BridgeLine:
    """One TAPI line: an extension (LINEADDRESSCAPS address) and the phone it is on now.

    TAPI names the line but not the phone; `device` and `ip` are what the bridge joined
    from ShoreTel's configuration (docs/tapi-bridge.md). An empty `ip` means the bridge
    could not place the line on a phone."""

    extension: str
    line_name: str
    device: str
    ip: str
    line_number: int | None
    in_service: bool
    permanent_line_id: str = ""

    def binding(self, seen_at: datetime) -> BindingSeen | None:
        if not self.ip:
            return None
        return BindingSeen(
            extension=self.extension,
            ip=self.ip,
            source=BindingSource.TAPI,
            seen_at=seen_at,
            unregister=not self.in_service,
            device=self.device,
            line_number=self.line_number,
        )


@dataclass(frozen=True, slots=True)
class LinesPage:
    envelope: Envelope
    lines: tuple[BridgeLine, ...]
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event of the feed, with the observation it is (None when it moves nothing).

    `call_id` is the bridge's own call id; the CallSignal's is `tapi:<call_id>`.
    `state` is TAPI's word as the bridge sent it, kept even when this version does not
    know it."""

    event_id: str
    kind: str
    at: datetime
    state: str
    extension: str
    call_id: str
    origin: str
    observation: CallSignal | BindingSeen | None
    payload: dict

    def shifted(self, delta: timedelta) -> FeedEvent:
        """The same event on another clock: every time moved back by `delta`."""
        if not delta:
            return self
        observation = self.observation
        if isinstance(observation, CallSignal):
            observation = replace(observation, at=observation.at - delta)
        elif isinstance(observation, BindingSeen):
            observation = replace(observation, seen_at=observation.seen_at - delta)
        return replace(self, at=self.at - delta, observation=observation)


@dataclass(frozen=True, slots=True)
class EventsPage:
    envelope: Envelope
    events: tuple[FeedEvent, ...]
    next_cursor: str
    more: bool
    rejected: tuple[str, ...] = ()

    def shifted(self, delta: timedelta) -> EventsPage:
        """The page on QMS's clock; an event the correction takes out of range is rejected
        on its own, the rest of the page still counts."""
        events, rejected = [], list(self.rejected)
        for event in self.events:
            try:
                moved = event.shifted(delta)
            except OverflowError:
                moved = None
            if moved is None or not EARLIEST <= moved.at < LATEST:
                rejected.append(
                    f"event {event.event_id!r}: its time {format_time(event.at)}, corrected "
                    f"by the bridge's clock offset ({delta}), is out of range"
                )
                continue
            events.append(moved)
        return replace(self, events=tuple(events), rejected=tuple(rejected))


# Reading documents -------------------------------------------------------------------------


def decode_envelope(body: object, rejected: list[str] | None = None) -> Envelope:
    """The envelope of a document. A server_time that is no usable time only loses the
    clock measurement (the Date header stands in): it is noted in `rejected`."""
    if not isinstance(body, dict):
        raise ProtocolError("the bridge's answer is not a JSON object")
    version = body.get("version")
    if not isinstance(version, str) or version.partition(".")[0] != str(API_MAJOR):
        raise ProtocolError(
            f"the bridge speaks protocol version {version!r}; this QMS reads version {API_MAJOR}"
        )
    boot_id = body.get("boot_id")
    if not isinstance(boot_id, str) or not boot_id:
        raise ProtocolError("the bridge's answer has no boot_id")
    _bounded(boot_id, "boot_id", MAX_BOOT_ID)
    return Envelope(version, boot_id, _server_time(body.get("server_time"), rejected))


def _server_time(raw: object, rejected: list[str] | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ProtocolError as error:
        if rejected is None:
            raise
        rejected.append(f"server_time: {error}; the clock is read from the Date header")
        return None


def decode_lines(body: object) -> LinesPage:
    """GET /v1/lines. A malformed line is rejected with a reason; the rest still count."""
    rejected: list[str] = []
    envelope = decode_envelope(body, rejected)
    raw_lines = body.get("lines")
    if not isinstance(raw_lines, list):
        raise ProtocolError("the lines document has no list of lines")
    lines = []
    for index, raw in enumerate(raw_lines):
        try:
            lines.append(decode_line(raw))
        except ProtocolError as error:
            rejected.append(f"line {index}: {error}")
    return LinesPage(envelope, tuple(lines), tuple(rejected))


def decode_line(raw: object) -> BridgeLine:
    fields = _object(raw)
    return BridgeLine(
        extension=_text(fields, "extension", required=True),
        line_name=_text(fields, "line_name"),
        device=_text(fields, "device"),
        ip=_address(fields),
        line_number=_line_number(fields),
        in_service=_flag(fields, "in_service", default=True),
        permanent_line_id=_text(fields, "permanent_line_id"),
    )


def decode_events(body: object) -> EventsPage:
    """GET /v1/events, times as the bridge's clock has them (see EventsPage.shifted)."""
    rejected: list[str] = []
    envelope = decode_envelope(body, rejected)
    raw_events = body.get("events")
    next_cursor = body.get("next_cursor")
    more = body.get("more", False)
    if not isinstance(raw_events, list):
        raise ProtocolError("the events document has no list of events")
    if not isinstance(next_cursor, str) or not isinstance(more, bool):
        raise ProtocolError("the events document needs next_cursor (a string) and more (a bool)")
    _bounded(next_cursor, "next_cursor", MAX_CURSOR)
    events = []
    for index, raw in enumerate(raw_events):
        try:
            events.append(decode_event(raw))
        except ProtocolError as error:
            rejected.append(f"event {index}: {error}")
    return EventsPage(envelope, tuple(events), next_cursor, more, tuple(rejected))


def decode_event(raw: object) -> FeedEvent:
    fields = _object(raw)
    event_id = _bounded(_text(fields, "id", required=True), "id", MAX_ID)
    kind = _text(fields, "kind", required=True)
    at = parse_time(fields.get("time"))
    if kind == "call":
        return _call_event(event_id, at, fields)
    if kind == "line":
        return _line_event(event_id, at, fields)
    # A kind a later minor version added: kept in the history, applied to nothing.
    return FeedEvent(event_id, kind, at, _text(fields, "state"), "", "", "", None, fields)


def _call_event(event_id: str, at: datetime, fields: dict) -> FeedEvent:
    call_id = _bounded(_text(fields, "call_id", required=True), "call_id", MAX_ID)
    extension = _text(fields, "extension", required=True)
    state = _text(fields, "state", required=True)
    origin = _text(fields, "origin")
    signal = call_signal(call_id, extension, state, origin, at, fields)
    return FeedEvent(event_id, "call", at, state, extension, call_id, origin, signal, fields)


def call_signal(
    call_id: str, extension: str, state: str, origin: str, at: datetime, fields: dict
) -> CallSignal | None:
    """The step of the call this state change is, seen from `extension`'s phone."""
    if state not in STEPS:
        return None
    tapi_state = TapiState(state)
    caller, callee = _text(fields, "caller"), _text(fields, "callee")
    side = local_side(extension, caller, callee, origin, tapi_state)
    ip = _address(fields)
    return CallSignal(
        call_id=f"{PROTOCOL}:{call_id}",
        event=STEPS[tapi_state],
        at=at,
        protocol=PROTOCOL,
        caller=caller,
        caller_name=_text(fields, "caller_name"),
        callee=callee,
        callee_name=_text(fields, "callee_name"),
        local_side=side,
        caller_ip=ip if side == Side.CALLER else "",
        callee_ip=ip if side == Side.CALLEE else "",
        reason=state if STEPS[tapi_state] == CallEvent.END else "",
    )


def local_side(extension: str, caller: str, callee: str, origin: str, state: TapiState) -> Side:
    """Which party the monitored line is: its own number says so when it is one of the
    two; else the call's origin (LINECALLORIGIN_OUTBOUND is the line's own call); else
    the state (only a placing line dials, hears dial tone or ringback)."""
    if extension == callee and extension != caller:
        return Side.CALLEE
    if extension == caller and extension != callee:
        return Side.CALLER
    if origin == Origin.OUTBOUND:
        return Side.CALLER
    if origin in (Origin.INTERNAL, Origin.EXTERNAL, Origin.INBOUND):
        return Side.CALLEE
    return Side.CALLER if state in PLACING else Side.CALLEE


def direction_of(side: Side, origin: str) -> CallDirection:
    """Inbound, outbound or internal, as QMS writes directions (recorder.models.Call)."""
    if origin == Origin.INTERNAL:
        return CallDirection.INTERNAL
    return CallDirection.INBOUND if side == Side.CALLEE else CallDirection.OUTBOUND


def _line_event(event_id: str, at: datetime, fields: dict) -> FeedEvent:
    extension = _text(fields, "extension", required=True)
    state = _text(fields, "state", required=True)
    if state not in (LineState.INSERVICE, LineState.OUTOFSERVICE):
        raise ProtocolError(f"line state {state!r} is neither inservice nor outofservice")
    line = BridgeLine(
        extension=extension,
        line_name=_text(fields, "line_name"),
        device=_text(fields, "device"),
        ip=_address(fields),
        line_number=_line_number(fields),
        in_service=state == LineState.INSERVICE,
    )
    return FeedEvent(event_id, "line", at, state, extension, "", "", line.binding(at), fields)


# Clocks --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockReading:
    """How far the bridge's clock is ahead of QMS's (negative: behind), in seconds, and
    how sure the measurement is (half the round trip, plus the Date header's rounding)."""

    offset: float
    uncertainty: float
    source: str

    def correction(self) -> timedelta:
        """What to take off the bridge's times to put them on QMS's clock."""
        if abs(self.offset) < SKEW_TOLERANCE + self.uncertainty:
            return ZERO
        return timedelta(seconds=self.offset)


def read_clock(
    server_time: datetime | None, date_header: datetime | None, sent_at: float, received_at: float
) -> ClockReading | None:
    """The bridge's clock against ours, from one exchange: the bridge stamped its answer
    somewhere between our request leaving (`sent_at`) and its answer arriving
    (`received_at`), so the midpoint is our best guess of the moment it stamped.
    The body's server_time has milliseconds; the HTTP Date header (RFC 9110 §6.6.1) only
    whole seconds, truncated, so it is read as the middle of its second."""
    midpoint = (sent_at + received_at) / 2
    half_trip = max(received_at - sent_at, 0.0) / 2
    if server_time is not None:
        return ClockReading(server_time.timestamp() - midpoint, half_trip, "server_time")
    if date_header is not None:
        return ClockReading(date_header.timestamp() + 0.5 - midpoint, half_trip + 0.5, "date")
    return None


# Fields ---------------------------------------------------------------------------------------


def parse_time(raw: object) -> datetime:
    """An RFC 3339 time with its offset (2024-05-01T10:00:00.250Z), as an aware UTC datetime."""
    if not isinstance(raw, str):
        raise ProtocolError(f"time {raw!r} is not an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ProtocolError(f"time {raw!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ProtocolError(f"time {raw!r} has no UTC offset")
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError:
        raise ProtocolError(f"time {raw!r} is out of range once put in UTC") from None
    return _in_range(moment, f"time {raw!r}")


def _in_range(moment: datetime, what: str) -> datetime:
    if not EARLIEST <= moment < LATEST:
        raise ProtocolError(f"{what} is not between {EARLIEST.year} and {LATEST.year}")
    return moment


def format_time(moment: datetime) -> str:
    """The protocol's way of writing a time: UTC, milliseconds, a Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bounded(value: str, name: str, limit: int) -> str:
    if len(value) > limit:
        raise ProtocolError(f"{name} is {len(value)} characters long; at most {limit} are read")
    return value


def _object(raw: object) -> dict:
    if not isinstance(raw, dict):
        raise ProtocolError("not a JSON object")
    return raw


def _text(fields: dict, name: str, required: bool = False) -> str:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise ProtocolError(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{name} is not a string")
    return value


def _address(fields: dict) -> str:
    ip = _text(fields, "ip")
    if not ip:
        return ""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise ProtocolError(f"ip {ip!r} is not an IP address") from None


def _line_number(fields: dict) -> int | None:
    value = fields.get("line_number")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LINE_NUMBER:
        raise ProtocolError(f"line_number {value!r} is not a number from 1 to {MAX_LINE_NUMBER}")
    return value


def _flag(fields: dict, name: str, default: bool) -> bool:
    value = fields.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} is not true or false")
    return value
