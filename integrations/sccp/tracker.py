"""Follow Skinny station sessions and turn them into observations.

A station session is one TCP connection between a phone (IP:port) and a CallManager
(usually port 2000). Several devices may share one IP (pyskinny01/02/03 all register from
10.102.172.11), so a session is keyed by the connection, never by the IP.

Ext/IP (rules R5-R7): RegisterReqMessage names the device; LineStatMessage /
LineStatV2Message map each line to its directory number and yield BindingSeen at the
phone's IP. The phone's IP is the TCP source IP of the session, not the stationIpAddr inside
Register: when the two differ the phone sits behind NAT and the TCP address is the one the
rest of the network (and the mirror port) sees. Lines are refreshed on KeepAlive at most every
`REFRESH_EVERY` seconds and dropped (BindingSeen(unregister=True)) on RegisterReject,
Unregister, TCP close and keepalive timeout. A new Register from the same device (extension
mobility re-registers the phone with the user's profile) replaces its lines: lines that are
not announced again are unregistered.

Calls are keyed by (session, callReference) and follow CallStateMessage; CallInfo names the
parties; OpenReceiveChannelAck and StartMediaTransmission give the two RTP receive
addresses. Legacy CallManager 2.x sends no CallState and no call references: its calls are
followed from OffHook/OnHook, the 128-byte CallInfo, Stimulus(Hold) and the legacy media
messages, one active call per session.

Transfers and conferences (docs/sccp.md): the phone's Transfer or Confrn key on a call makes
the next call it places that call's consult, which joins its conversation (`joins_call_id`);
Join and DirTrfr join the calls they combine; a call placed while another on its line is held
joins it only if the two go on-hook together (a transfer completed); and an answered call
whose far party changes on the same call reference (the phone was transferred or conferenced)
ends one segment and begins the next in the same conversation.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from integrations.bounds import is_extension_syntax
from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallEvent,
    CallProtocol,
    CallSignal,
    Endpoint,
    MediaOffer,
    Observation,
    Side,
)
from integrations.sccp import messages as m
from integrations.sccp.framing import SccpFrame, SccpStreamFramer

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE: Final = 30  # seconds; RegisterAck.keepAliveInterval overrides it (seen 30)
REFRESH_EVERY: Final = 120  # seconds between binding refreshes of a live session
TIMEOUT_KEEPALIVES: Final = 3  # a session silent this many keepalive intervals is gone
MAX_SESSIONS: Final = 50_000
MAX_LINES: Final = 64
MAX_CALLS: Final = 32
MAX_CHANNELS: Final = 64
# Recorders seen as the destination of a recording fork, remembered at most.
MAX_FORK_DESTINATIONS: Final = 4096
LEGACY: Final = "legacy"  # key of the single call of a CallManager 2.x session

# CallStateMessage states (Wireshark DCallState).
IDLE, OFF_HOOK, ON_HOOK, RING_OUT, RING_IN, CONNECTED, HOLD, PROCEED = 0, 1, 2, 3, 4, 5, 8, 12
PLACING: Final = frozenset({OFF_HOOK, RING_OUT, PROCEED})  # first states of a call it places
CALL_TYPE_SIDE: Final = {1: Side.CALLEE, 2: Side.CALLER}  # CallInfo callType, this phone's side

# Transfers and conferences (docs/sccp.md). The CallManager opens the consult call as it
# answers the key, and completing a transfer clears the consult and the held call together:
# the windows leave room for a slow network. A far party named within PARTY_SETTLE of the
# answer is taken as a correction (a hunt group member answering), not as a transfer.
FEATURE_KEY_WINDOW: Final = timedelta(seconds=10)
CONSULT_END_WINDOW: Final = timedelta(seconds=3)
PARTY_SETTLE: Final = timedelta(seconds=2)
PARTY_CHANGED: Final = "far-party-changed"
CONSULT, JOIN, SELECT = "consult", "join", "select"
SOFT_KEY_FEATURES: Final = {
    m.SOFT_KEY_TRANSFER: CONSULT,
    m.SOFT_KEY_CONFERENCE: CONSULT,
    m.SOFT_KEY_JOIN: JOIN,
    m.SOFT_KEY_DIRECT_TRANSFER: JOIN,
    m.SOFT_KEY_SELECT: SELECT,
}
STIMULUS_FEATURES: Final = {m.STIMULUS_TRANSFER: CONSULT, m.STIMULUS_CONFERENCE: CONSULT}


@dataclass
class _Call:
    call_id: str
    key: int | str
    line_instance: int | None
    caller: str = ""
    caller_name: str = ""
    callee: str = ""
    callee_name: str = ""
    local_side: Side | None = None
    started: bool = False
    answered: bool = False
    held: bool = False
    ringing_pending: bool = False
    legacy: bool = False
    answered_at: datetime | None = None
    # Where each side receives RTP, for the next segment when the far party changes.
    offers: dict[Side, MediaOffer] = field(default_factory=dict)
    # The call this one consults (Transfer/Confrn pressed on it, or held on this one's line
    # when it was placed), and whether it joined that call's conversation already.
    consult_of: int | str | None = None
    joined: bool = False
    # That held call went on-hook first: its id and when.
    held_call_ended: tuple[str, datetime] | None = None


@dataclass
class _Channel:
    """A media channel opened by OpenReceiveChannel, by passThruPartyID."""

    call_reference: int | None
    payload_types: tuple[tuple[int, str], ...]


@dataclass
class _Session:
    phone: Endpoint
    cm: Endpoint
    last_seen: datetime
    framers: dict[bool, SccpStreamFramer]
    device: str = ""
    keepalive_interval: int = DEFAULT_KEEPALIVE
    lines: dict[int, str] = field(default_factory=dict)
    staged_lines: dict[int, str] = field(default_factory=dict)
    last_refresh: datetime | None = None
    calls: dict[int | str, _Call] = field(default_factory=dict)
    channels: dict[int, _Channel] = field(default_factory=dict)
    rtp_port: int | None = None
    uses_call_state: bool = False
    off_hook_first: bool = False
    legacy_calls: int = 0
    # Transfer or Confrn pressed on this call, waiting for the consult call it opens.
    consult_key: tuple[int | str, datetime] | None = None
    selected: set[int | str] = field(default_factory=set)
    # Consults' ENDs held back until their held call ends or resumes: key -> (END, held key).
    deferred_ends: dict[int | str, tuple[CallSignal, int | str]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[Endpoint, Endpoint]:
        return (self.phone, self.cm)

    @property
    def identity(self) -> str:
        return self.device or str(self.phone)

    @property
    def expires_in(self) -> int:
        return REFRESH_EVERY + TIMEOUT_KEEPALIVES * self.keepalive_interval

    def line_dn(self, line_instance: int | None) -> str:
        return self.lines.get(line_instance, "") if line_instance is not None else ""


class SccpTracker:
    """Skinny station sessions -> BindingSeen and CallSignal. Never raises on bad input."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[Endpoint, Endpoint], _Session] = {}
        self._device_sessions: dict[str, tuple[Endpoint, Endpoint]] = {}
        self.errors: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        # Messages understood and deliberately not followed (not errors): recording forks.
        self.ignored: Counter[str] = Counter()
        # Where recording forks were sent (a recorder), the latest MAX_FORK_DESTINATIONS.
        self.fork_destinations: dict[Endpoint, None] = {}

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # --- Public edge -------------------------------------------------------------------------

    def feed(
        self, data: bytes, phone: Endpoint, cm: Endpoint, from_phone: bool, at: datetime
    ) -> list[Observation]:
        """In-order TCP bytes of one direction of the session phone <-> cm."""
        observations: list[Observation] = []
        try:
            session = self._session(phone, cm, at, observations)
            observations += self._release_stale(session, at)
            for frame in session.framers[from_phone].feed(data):
                observations += self._on_frame(session, frame, from_phone, at)
        except Exception:  # the tracker's edge: one bad message never stops the capture
            self.errors["internal"] += 1
            log.exception("SCCP tracker failed on %s <-> %s", phone, cm)
        return observations

    def gap(self, phone: Endpoint, cm: Endpoint, from_phone: bool) -> None:
        """Bytes of this direction were lost; the framer resynchronises."""
        session = self._sessions.get((phone, cm))
        if session is not None:
            session.framers[from_phone].gap()

    def close(self, phone: Endpoint, cm: Endpoint, at: datetime) -> list[Observation]:
        """TCP FIN/RST: the station session is gone with its lines and calls."""
        session = self._sessions.get((phone, cm))
        if session is None:
            return []
        return self._end_session(session, at, "session-closed")

    def expire(self, now: datetime) -> list[Observation]:
        """End sessions silent for more than `TIMEOUT_KEEPALIVES` keepalive intervals."""
        observations: list[Observation] = []
        for session in list(self._sessions.values()):
            observations += self._release_stale(session, now)
            timeout = timedelta(seconds=TIMEOUT_KEEPALIVES * session.keepalive_interval)
            if now - session.last_seen > timeout:
                observations += self._end_session(session, now, "session-expired")
        return observations

    # --- Sessions ----------------------------------------------------------------------------

    def _session(
        self, phone: Endpoint, cm: Endpoint, at: datetime, observations: list[Observation]
    ) -> _Session:
        session = self._sessions.get((phone, cm))
        if session is None:
            if len(self._sessions) >= MAX_SESSIONS:
                observations += self._evict_oldest(at)
            framers = {True: SccpStreamFramer(self.errors), False: SccpStreamFramer(self.errors)}
            session = _Session(phone, cm, at, framers)
            self._sessions[(phone, cm)] = session
        session.last_seen = max(session.last_seen, at)
        return session

    def _evict_oldest(self, at: datetime) -> list[Observation]:
        self.errors["session-evicted"] += 1
        oldest = min(self._sessions.values(), key=lambda session: session.last_seen)
        return self._end_session(oldest, at, "session-evicted")

    def _end_session(self, session: _Session, at: datetime, reason: str) -> list[Observation]:
        observations = self._drop_lines(session, at) + self._end_calls(session, at, reason)
        self._sessions.pop(session.key, None)
        if self._device_sessions.get(session.device) == session.key:
            del self._device_sessions[session.device]
        return observations

    # --- Frames ------------------------------------------------------------------------------

    def _on_frame(
        self, session: _Session, frame: SccpFrame, from_phone: bool, at: datetime
    ) -> list[Observation]:
        self.messages[m.message_name(frame.message_id)] += 1
        try:
            message = m.decode_message(frame.version, frame.message_id, frame.payload)
        except m.SccpDecodeError as error:
            self.errors[error.kind] += 1
            return []
        handler = _HANDLERS.get(type(message))
        return [] if handler is None else handler(self, session, message, at)

    # --- Registration and lines --------------------------------------------------------------

    def _on_register(
        self, session: _Session, message: m.Register, at: datetime
    ) -> list[Observation]:
        observations: list[Observation] = []
        session.staged_lines.update(session.lines)
        session.lines = {}
        previous = self._sessions.get(self._device_sessions.get(message.device_name))
        if previous is not None and previous is not session:
            # The device registered again on a new connection (extension mobility, restart):
            # its old lines wait for the new LineStat set; its old calls are over.
            session.staged_lines = {**previous.staged_lines, **previous.lines}
            previous.lines, previous.staged_lines = {}, {}
            observations += self._end_session(previous, at, "reregistered")
        session.device = message.device_name
        self._device_sessions[message.device_name] = session.key
        return observations

    def _on_register_ack(
        self, session: _Session, message: m.RegisterAck, at: datetime
    ) -> list[Observation]:
        if 0 < message.keepalive_interval <= 3600:
            session.keepalive_interval = message.keepalive_interval
        return []

    def _on_unregistered(
        self, session: _Session, message: object, at: datetime
    ) -> list[Observation]:
        """RegisterRejectMessage or UnregisterReqMessage: the device's lines are gone."""
        reason = "register-rejected" if isinstance(message, m.RegisterReject) else "unregistered"
        return self._drop_lines(session, at) + self._end_calls(session, at, reason)

    def _on_line_stat(
        self, session: _Session, message: m.LineStat, at: datetime
    ) -> list[Observation]:
        if not is_extension_syntax(message.directory_number):
            # Rule R4 holds for the wire: an empty lineDirNumber (a line with no number) or
            # one no call system writes is counted and refused. It says nothing QMS can keep
            # about the line, so the line keeps the number it had.
            self.errors["bad-dn"] += 1
            return []
        if message.line_number not in session.lines and len(session.lines) >= MAX_LINES:
            self.errors["too-many-lines"] += 1
            return []
        observations: list[Observation] = []
        replaced = session.lines.get(message.line_number) or session.staged_lines.pop(
            message.line_number, None
        )
        session.lines[message.line_number] = message.directory_number
        if replaced and replaced not in session.lines.values():
            observations.append(self._binding(session, replaced, message.line_number, at, True))
        session.last_refresh = at
        binding = self._binding(session, message.directory_number, message.line_number, at)
        return [*observations, binding]

    def _on_keepalive(
        self, session: _Session, message: m.KeepAlive, at: datetime
    ) -> list[Observation]:
        observations = self._settle_lines(session, at)
        due = session.last_refresh is None or at - session.last_refresh >= timedelta(
            seconds=REFRESH_EVERY
        )
        if session.lines and due:
            session.last_refresh = at
            observations += [
                self._binding(session, dn, line, at) for line, dn in session.lines.items()
            ]
        return observations

    def _on_ip_port(self, session: _Session, message: m.IpPort, at: datetime) -> list[Observation]:
        session.rtp_port = message.rtp_port
        return []

    def _settle_lines(self, session: _Session, at: datetime) -> list[Observation]:
        """The new line set is complete: unregister the old lines it did not announce again."""
        gone = {
            line: dn
            for line, dn in session.staged_lines.items()
            if dn not in session.lines.values()
        }
        session.staged_lines = {}
        return [self._binding(session, dn, line, at, True) for line, dn in gone.items()]

    def _drop_lines(self, session: _Session, at: datetime) -> list[Observation]:
        lines = {**session.staged_lines, **session.lines}
        session.lines, session.staged_lines = {}, {}
        return [self._binding(session, dn, line, at, True) for line, dn in lines.items()]

    def _binding(
        self, session: _Session, dn: str, line: int, at: datetime, unregister: bool = False
    ) -> BindingSeen:
        return BindingSeen(
            extension=dn,
            ip=session.phone.ip,
            source=BindingSource.SCCP,
            seen_at=at,
            expires_in=None if unregister else session.expires_in,
            unregister=unregister,
            device=session.device,
            line_number=line,
            authority=session.cm.ip,
        )

    # --- Calls -------------------------------------------------------------------------------

    def _call(self, session: _Session, key: int | str, line: int | None) -> _Call | None:
        call = session.calls.get(key)
        if call is None:
            if len(session.calls) >= MAX_CALLS:
                self.errors["too-many-calls"] += 1
                return None
            call = _Call(f"sccp:{session.identity}:{key}", key, line)
            session.calls[key] = call
        if call.line_instance is None and line:
            call.line_instance = line
        return call

    def _on_call_state(
        self, session: _Session, message: m.CallState, at: datetime
    ) -> list[Observation]:
        session.uses_call_state = True
        observations = self._settle_lines(session, at)
        if message.state in (IDLE, ON_HOOK):
            return observations + self._end_call(session, message.call_reference, at, "onhook")
        call = self._call(session, message.call_reference, message.line_instance)
        if call is None:
            return observations
        observations += self._start(session, call, message.state, at)
        return observations + self._follow_state(session, call, message.state, at)

    def _start(self, session: _Session, call: _Call, state: int, at: datetime) -> list[Observation]:
        if call.started:
            return self._flush_ringing(session, call, at)
        call.started = True
        if call.local_side is None:
            call.local_side = Side.CALLEE if state == RING_IN else Side.CALLER
        call.ringing_pending = state in (RING_IN, RING_OUT)
        joins = self._consult_of(session, call, at) if state in PLACING else ""
        start = self._signal(session, call, CallEvent.START, at, joins=joins)
        return [*_release_key(session, call.key), start]

    def _consult_of(self, session: _Session, call: _Call, at: datetime) -> str:
        """A call the phone places right after Transfer or Confrn was pressed on another call
        is that call's consult: the id of the call whose conversation it joins at once. One
        placed while another call on its line is held may be a consult as well (a transfer
        made from an application, no key on the phone): `_end_call` settles that."""
        pressed, session.consult_key = session.consult_key, None
        if pressed is not None and at - pressed[1] <= FEATURE_KEY_WINDOW:
            consulted = session.calls.get(pressed[0])
            if consulted is not None and consulted is not call:
                call.consult_of, call.joined = consulted.key, True
                return consulted.call_id
        for other in session.calls.values():
            if other is not call and other.started and other.held and _same_line(other, call):
                call.consult_of = other.key
        return ""

    def _follow_state(
        self, session: _Session, call: _Call, state: int, at: datetime
    ) -> list[Observation]:
        if state == CONNECTED and not call.answered:
            call.answered, call.answered_at = True, at
            return [self._signal(session, call, CallEvent.ANSWER, at)]
        if state == CONNECTED and call.held:
            call.held = False
            alone = self._settle_consults(session, call, at, completed=False)
            return [*alone, self._signal(session, call, CallEvent.RESUME, at)]
        if state == HOLD and not call.held:
            call.held = call.answered = True
            call.answered_at = call.answered_at or at
            return [self._signal(session, call, CallEvent.HOLD, at)]
        return []

    def _flush_ringing(self, session: _Session, call: _Call, at: datetime) -> list[Observation]:
        if not call.ringing_pending:
            return []
        call.ringing_pending = False
        return [self._signal(session, call, CallEvent.RINGING, at)]

    def _end_call(
        self, session: _Session, key: int | str, at: datetime, reason: str
    ) -> list[Observation]:
        call = session.calls.pop(key, None)
        session.selected.discard(key)
        if call is None or not call.started:
            return []
        on_hook = reason == "onhook"
        observations = self._flush_ringing(session, call, at)
        observations += self._settle_consults(session, call, at, completed=on_hook)
        if on_hook and call.held:
            _note_held_call_ended(session, call, at)
        joins = _held_call_ended_with(call, at) if on_hook else ""
        end = self._signal(session, call, CallEvent.END, at, reason=reason, joins=joins)
        held = _held_call_of(session, call)
        if on_hook and held is not None:
            # A consult placed while its call was held, with no Transfer/Confrn key seen:
            # whether it completed a transfer shows only when the held call ends too.
            session.deferred_ends[key] = (end, held.key)
            return observations
        return [*observations, end]

    def _settle_consults(
        self, session: _Session, held: _Call, at: datetime, completed: bool
    ) -> list[Observation]:
        """The ENDs held back for the consults of `held`, which now ends or resumes. Ending
        on-hook within CONSULT_END_WINDOW of a consult completed a transfer: that consult
        joins its conversation. Resumed, or ended later, the consult stays on its own."""
        settled: list[Observation] = []
        for key, (end, held_key) in list(session.deferred_ends.items()):
            if held_key == held.key:
                del session.deferred_ends[key]
                together = completed and at - end.at <= CONSULT_END_WINDOW
                settled.append(replace(end, joins_call_id=held.call_id) if together else end)
        return settled

    def _release_stale(self, session: _Session, now: datetime) -> list[Observation]:
        """ENDs held back longer than CONSULT_END_WINDOW: their held call did not follow."""
        stale = [
            key
            for key, (end, _) in session.deferred_ends.items()
            if now - end.at > CONSULT_END_WINDOW
        ]
        return [session.deferred_ends.pop(key)[0] for key in stale]

    def _end_calls(self, session: _Session, at: datetime, reason: str) -> list[Observation]:
        observations: list[Observation] = []
        for key in list(session.calls):
            observations += self._end_call(session, key, at, reason)
        observations += [end for end, _ in session.deferred_ends.values()]
        session.deferred_ends.clear()
        session.channels.clear()
        session.consult_key = None
        return observations

    def _on_call_info(
        self, session: _Session, message: m.CallInfo, at: datetime
    ) -> list[Observation]:
        if message.call_reference is None:
            return self._on_legacy_call_info(session, message, at)
        call = self._call(session, message.call_reference, message.line_instance)
        if call is None:
            return []
        side = CALL_TYPE_SIDE.get(message.call_type or 0, call.local_side)
        if _far_party_changes(call, message, side, at):
            return self._split(session, call, message, side, at)
        _set_parties(call, message)
        call.local_side = side
        return self._flush_ringing(session, call, at)

    def _split(
        self, session: _Session, call: _Call, message: m.CallInfo, side: Side | None, at: datetime
    ) -> list[Observation]:
        """The far party of an answered call changed on the same call reference: the phone
        was transferred, or joined to a conference. The segment with the old party ends and
        one with the new party begins, with the same media, in the same conversation."""
        end = self._signal(session, call, CallEvent.END, at, reason=PARTY_CHANGED)
        _set_parties(call, message)
        call.local_side, call.answered_at = side, at
        offers = tuple(call.offers.values())
        begun = [
            self._signal(session, call, CallEvent.START, at, offers, joins=call.call_id),
            self._signal(session, call, CallEvent.ANSWER, at),
        ]
        if call.held:
            begun.append(self._signal(session, call, CallEvent.HOLD, at))
        return [end, *begun]

    def _on_dialed_number(
        self, session: _Session, message: m.DialedNumber, at: datetime
    ) -> list[Observation]:
        call = self._call(session, message.call_reference, message.line_instance)
        if call is not None:
            call.callee = call.callee or message.dialed_number
            call.local_side = call.local_side or Side.CALLER
        return []

    def _signal(
        self,
        session: _Session,
        call: _Call,
        event: CallEvent,
        at: datetime,
        media: tuple[MediaOffer, ...] = (),
        reason: str = "",
        joins: str = "",
    ) -> CallSignal:
        _fill_local_party(session, call)
        local_ip = session.phone.ip
        return CallSignal(
            call_id=call.call_id,
            event=event,
            at=at,
            protocol=CallProtocol.SCCP,
            caller=call.caller,
            caller_name=call.caller_name,
            callee=call.callee,
            callee_name=call.callee_name,
            local_side=call.local_side,
            caller_ip=local_ip if call.local_side is Side.CALLER else "",
            callee_ip=local_ip if call.local_side is Side.CALLEE else "",
            media=media,
            reason=reason,
            joins_call_id=joins,
        )

    # --- Media -------------------------------------------------------------------------------

    def _on_open_receive_channel(
        self, session: _Session, message: m.OpenReceiveChannel, at: datetime
    ) -> list[Observation]:
        if len(session.channels) >= MAX_CHANNELS:
            session.channels.pop(next(iter(session.channels)))
        payload_types = m.rtp_payload_types(message.compression_type, message.dynamic_payload)
        channel = _Channel(message.call_reference, payload_types)
        session.channels[message.pass_thru_party_id] = channel
        return []

    def _on_open_receive_channel_ack(
        self, session: _Session, message: m.OpenReceiveChannelAck, at: datetime
    ) -> list[Observation]:
        if message.status != 0:
            self.errors["open-receive-channel-refused"] += 1
            return []
        channel = session.channels.get(message.pass_thru_party_id)
        call = self._media_call(session, message.call_reference, channel)
        if call is None:
            return []
        # The phone receives at its own session IP (the IP rule above) and the acked port.
        receive_at = Endpoint(session.phone.ip, message.port)
        payload_types = channel.payload_types if channel else ()
        return self._media(session, call, _local_side(call), receive_at, payload_types, at)

    def _on_start_media_transmission(
        self, session: _Session, message: m.StartMediaTransmission, at: datetime
    ) -> list[Observation]:
        receive_at = Endpoint(message.remote_ip, message.remote_port)
        if message.legacy:
            call = self._legacy_call(session, at)
        else:
            channel = session.channels.get(message.pass_thru_party_id or 0)
            reference = _reference(message.call_reference, channel)
            if reference is not None and _is_fork(session, reference):
                return self._fork(receive_at)
            call = self._media_call(session, message.call_reference, channel)
        if call is None:
            return []
        payload_types = m.rtp_payload_types(message.compression_type, message.dynamic_payload)
        far_side = _local_side(call).other
        return self._media(session, call, far_side, receive_at, payload_types, at)

    def _fork(self, recorder: Endpoint) -> list[Observation]:
        """A recording fork's StartMediaTransmission: counted, and its destination kept, so
        that the copies the phone sends there are not taken for a call of their own."""
        self.ignored["media-fork"] += 1
        self.fork_destinations[recorder] = None
        while len(self.fork_destinations) > MAX_FORK_DESTINATIONS:
            del self.fork_destinations[next(iter(self.fork_destinations))]
        return []

    def _on_stop_media(
        self, session: _Session, message: m.StopMedia, at: datetime
    ) -> list[Observation]:
        # Stop/Close end a media leg, not the call: the call ends on CallState OnHook.
        if message.receive and message.pass_thru_party_id is not None:
            session.channels.pop(message.pass_thru_party_id, None)
        return []

    def _media_call(
        self, session: _Session, call_reference: int | None, channel: _Channel | None
    ) -> _Call | None:
        """The call a media message belongs to: its own callReference, the one its
        OpenReceiveChannel carried, or the session's single active call."""
        reference = _reference(call_reference, channel)
        if reference is None:
            return self._single_call(session)
        if _is_fork(session, reference):
            self.ignored["media-fork"] += 1
            return None
        return self._call(session, reference, None)

    def _single_call(self, session: _Session) -> _Call | None:
        started = [call for call in session.calls.values() if call.started]
        if len(started) != 1:
            self.errors["media-without-call"] += 1
            return None
        return started[0]

    def _media(
        self,
        session: _Session,
        call: _Call,
        side: Side,
        receive_at: Endpoint,
        payload_types: tuple[tuple[int, str], ...],
        at: datetime,
    ) -> list[Observation]:
        observations: list[Observation] = []
        if not call.started:  # picked up mid-call: media proves the call exists
            call.started = True
            observations += _release_key(session, call.key)
            observations.append(self._signal(session, call, CallEvent.START, at))
        observations += self._flush_ringing(session, call, at)
        if call.legacy and not call.answered:  # CallManager 2.x: media flows once connected
            call.answered = True
            observations.append(self._signal(session, call, CallEvent.ANSWER, at))
        offer = MediaOffer(side=side, receive_at=receive_at, payload_types=payload_types)
        call.offers[side] = offer
        return [*observations, self._signal(session, call, CallEvent.MEDIA, at, (offer,))]

    # --- Legacy CallManager 2.x --------------------------------------------------------------

    def _legacy_call(self, session: _Session, at: datetime) -> _Call | None:
        """The session's single active call, started here when the capture missed its start."""
        if session.uses_call_state or session.calls.keys() - {LEGACY}:
            return self._single_call(session)
        if LEGACY not in session.calls:
            session.legacy_calls += 1
            line = min(session.lines) if session.lines else None
            call = _Call(f"sccp:{session.identity}:{LEGACY}-{session.legacy_calls}", LEGACY, line)
            call.legacy = True
            session.calls[LEGACY] = call
        return session.calls[LEGACY]

    def _legacy_start(self, session: _Session, call: _Call, at: datetime) -> list[Observation]:
        if call.started:
            return []
        call.started = True
        return [self._signal(session, call, CallEvent.START, at)]

    def _on_legacy_call_info(
        self, session: _Session, message: m.CallInfo, at: datetime
    ) -> list[Observation]:
        call = self._legacy_call(session, at)
        if call is None:
            return []
        _set_parties(call, message)
        if call.local_side is None:
            call.local_side = _legacy_local_side(session, message)
        return self._legacy_start(session, call, at)

    def _on_start_media_reception(
        self, session: _Session, message: m.StartMediaReception, at: datetime
    ) -> list[Observation]:
        call = self._legacy_call(session, at)
        if call is None:
            return []
        if session.rtp_port is None:  # IpPortMessage not seen: the phone's port is unknown
            self.errors["media-reception-without-port"] += 1
            return self._legacy_start(session, call, at)
        receive_at = Endpoint(session.phone.ip, session.rtp_port)
        payload_types = m.rtp_payload_types(message.compression_type, 0)
        return self._media(session, call, _local_side(call), receive_at, payload_types, at)

    def _on_hook(self, session: _Session, message: m.HookEvent, at: datetime) -> list[Observation]:
        # Modern CallManagers confirm with CallState; only CallManager 2.x needs the hook.
        if session.uses_call_state:
            return []
        if message.off_hook:
            session.off_hook_first = LEGACY not in session.calls
            return []
        session.off_hook_first = False
        return self._end_call(session, LEGACY, at, "onhook")

    def _on_soft_key_event(
        self, session: _Session, message: m.SoftKeyEvent, at: datetime
    ) -> list[Observation]:
        if session.uses_call_state:
            feature = SOFT_KEY_FEATURES.get(message.event)
            return self._on_feature_key(session, feature, message.call_reference, at)
        if message.event != m.SOFT_KEY_END_CALL:
            return []
        return self._end_call(session, LEGACY, at, "onhook")

    def _on_stimulus(
        self, session: _Session, message: m.Stimulus, at: datetime
    ) -> list[Observation]:
        """Stimulus(Hold) toggles hold on a CallManager 2.x call (no CallState to tell us);
        the fixed Transfer and Conference keys of newer phones act as their soft keys do."""
        if session.uses_call_state:
            feature = STIMULUS_FEATURES.get(message.stimulus)
            return self._on_feature_key(session, feature, message.call_reference, at)
        if message.stimulus != m.STIMULUS_HOLD:
            return []
        call = self._legacy_call(session, at)
        if call is None:
            return []
        observations = self._legacy_start(session, call, at)
        call.held = not call.held
        call.answered = True
        event = CallEvent.HOLD if call.held else CallEvent.RESUME
        return [*observations, self._signal(session, call, event, at)]

    # --- Transfer and conference keys --------------------------------------------------------

    def _on_feature_key(
        self, session: _Session, feature: str | None, reference: int | None, at: datetime
    ) -> list[Observation]:
        """A key on the call it names (or, when it names none, the one call in talk)."""
        if feature is None:
            return []
        call = session.calls.get(reference) if reference else None
        call = call or _active_call(session)
        if call is None or not call.started:
            return []
        if feature == SELECT:
            session.selected ^= {call.key}
            return []
        if feature == JOIN:
            return self._join_calls(session, call, at)
        self._on_consult_key(session, call, at)
        return []

    def _on_consult_key(self, session: _Session, call: _Call, at: datetime) -> None:
        """Transfer or Confrn on a call: the CallManager holds it and opens a consult call.
        Pressed on a call whose consult is up (on either of the two), it completes the
        transfer or conference and opens nothing."""
        paired = call.consult_of in session.calls or any(
            other.consult_of == call.key for other in session.calls.values()
        )
        session.consult_key = None if paired else (call.key, at)

    def _join_calls(self, session: _Session, call: _Call, at: datetime) -> list[Observation]:
        """Join or DirTrfr on a call: it and the calls selected with it (with none selected,
        the calls held on its line) become one conversation, the oldest call's."""
        chosen, session.selected = session.selected - {call.key}, set()
        others = [
            other
            for other in session.calls.values()
            if other is not call
            and other.started
            and (other.key in chosen if chosen else other.held and _same_line(other, call))
        ]
        if not others:
            return []
        anchor, *rest = others
        observations: list[Observation] = []
        for joined in (*rest, call):
            joined.joined = True
            observations.append(
                self._signal(session, joined, CallEvent.TRANSFER, at, joins=anchor.call_id)
            )
        return observations


def _set_parties(call: _Call, message: m.CallInfo) -> None:
    call.caller, call.caller_name = message.calling_party, message.calling_party_name
    call.callee, call.callee_name = message.called_party, message.called_party_name


def _far_party(caller: str, caller_name: str, callee: str, callee_name: str, local: Side) -> str:
    """Who the phone talks to: the other party's number, or its name when it has none."""
    return callee or callee_name if local is Side.CALLER else caller or caller_name


def _far_party_changes(call: _Call, message: m.CallInfo, side: Side | None, at: datetime) -> bool:
    """CallInfo names another far party for a call answered a while ago (not a correction
    right after the answer, not a call still ringing, which may be forwarded)."""
    if call.answered_at is None or at - call.answered_at < PARTY_SETTLE:
        return False
    before = _far_party(
        call.caller, call.caller_name, call.callee, call.callee_name, _local_side(call)
    )
    after = _far_party(
        message.calling_party, message.calling_party_name, message.called_party,
        message.called_party_name, side or Side.CALLEE,
    )  # fmt: skip
    return bool(before and after and before != after)


def _release_key(session: _Session, key: int | str) -> list[Observation]:
    """The END held back for a call reference that starts again: the old call is over."""
    held_back = session.deferred_ends.pop(key, None)
    return [] if held_back is None else [held_back[0]]


def _note_held_call_ended(session: _Session, held: _Call, at: datetime) -> None:
    """A held call went on-hook: its consults (placed while it was held) learn when."""
    for call in session.calls.values():
        if call.consult_of == held.key and not call.joined:
            call.held_call_ended = (held.call_id, at)


def _held_call_ended_with(call: _Call, at: datetime) -> str:
    """The held call this consult joins, having gone on-hook just before it."""
    ended = call.held_call_ended
    return ended[0] if ended is not None and at - ended[1] <= CONSULT_END_WINDOW else ""


def _held_call_of(session: _Session, call: _Call) -> _Call | None:
    """The call still held for this consult placed without a key, if there is one."""
    if call.joined or call.consult_of is None:
        return None
    held = session.calls.get(call.consult_of)
    return held if held is not None and held.held else None


def _reference(call_reference: int | None, channel: _Channel | None) -> int | None:
    """The call reference of a media message: its own, or the one its channel's
    OpenReceiveChannel carried."""
    return call_reference or (channel.call_reference if channel else None)


def _is_fork(session: _Session, reference: int | str) -> bool:
    """Whether media under `reference` is a fork of a call the phone is in, not a call:
    CallManager's built-in-bridge recording and silent monitoring have the phone send a
    copy of its streams to the recorder under a call reference of their own, for which no
    CallState ever comes. So in a session whose calls are followed by CallState, media for
    a reference no CallState named, while another call of the phone is answered, is a fork:
    the call's own streams are recorded already, and the copy would be a second, one-way
    recording of the same voices."""
    if not session.uses_call_state:
        return False
    known = session.calls.get(reference)
    if known is not None and known.started:
        return False
    return any(call.started and call.answered for call in session.calls.values())


def _same_line(one: _Call, other: _Call) -> bool:
    lines = {one.line_instance, other.line_instance}
    return None in lines or len(lines) == 1


def _active_call(session: _Session) -> _Call | None:
    """The session's one call in talk (started, not held), if there is exactly one."""
    talking = [call for call in session.calls.values() if call.started and not call.held]
    return talking[0] if len(talking) == 1 else None


def _fill_local_party(session: _Session, call: _Call) -> None:
    """Write the phone's own DN (the call's line) where CallInfo left the local party empty."""
    dn = session.line_dn(call.line_instance)
    if call.local_side is Side.CALLER and not call.caller:
        call.caller = dn
    elif call.local_side is Side.CALLEE and not call.callee:
        call.callee = dn


def _legacy_local_side(session: _Session, message: m.CallInfo) -> Side:
    """CallManager 2.x CallInfo has no callType: find the phone's own DN among the parties."""
    own = set(session.lines.values())
    if message.calling_party in own:
        return Side.CALLER
    if message.called_party in own:
        return Side.CALLEE
    return Side.CALLER if session.off_hook_first else Side.CALLEE


def _local_side(call: _Call) -> Side:
    # A call picked up mid-stream may not know its direction yet; the phone is then taken as
    # the callee (the side a recorder most often serves) until CallInfo says otherwise.
    return call.local_side or Side.CALLEE


_HANDLERS: Final = {
    m.Register: SccpTracker._on_register,
    m.RegisterAck: SccpTracker._on_register_ack,
    m.RegisterReject: SccpTracker._on_unregistered,
    m.Unregister: SccpTracker._on_unregistered,
    m.KeepAlive: SccpTracker._on_keepalive,
    m.IpPort: SccpTracker._on_ip_port,
    m.LineStat: SccpTracker._on_line_stat,
    m.CallState: SccpTracker._on_call_state,
    m.CallInfo: SccpTracker._on_call_info,
    m.DialedNumber: SccpTracker._on_dialed_number,
    m.OpenReceiveChannel: SccpTracker._on_open_receive_channel,
    m.OpenReceiveChannelAck: SccpTracker._on_open_receive_channel_ack,
    m.StartMediaTransmission: SccpTracker._on_start_media_transmission,
    m.StopMedia: SccpTracker._on_stop_media,
    m.StartMediaReception: SccpTracker._on_start_media_reception,
    m.HookEvent: SccpTracker._on_hook,
    m.SoftKeyEvent: SccpTracker._on_soft_key_event,
    m.Stimulus: SccpTracker._on_stimulus,
}
