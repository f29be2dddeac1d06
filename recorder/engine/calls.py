"""The table of live calls and the media endpoints that tie RTP to them.

Pure Python, no Django: it runs inside the capture loop. Each side of a call announces
where it receives RTP (SDP, SCCP OpenReceiveChannelAck / StartMediaTransmission); RTP is
matched by its destination, because a far end often sends from another port than the
one it receives on (seen in the pyskinny CUCM capture: announced 60186, sent from 64037).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from integrations.observations import (
    CallDirection,
    CallEvent,
    CallProtocol,
    CallSignal,
    CallState,
    Endpoint,
    MediaOffer,
    Side,
    direct_init,
)
from recorder.engine.floods import FLOOD_EVICTED, REFUSED_REMEMBERED, UnansweredCalls
from recorder.media.rtp import looks_like_rtp
from recorder.media.rtplog import DIRECTION_CODE, PendingRun, RtpLog

UNROUTABLE = {"0.0.0.0", "::"}
# How long an ended call's media addresses still claim their trailing packets (the far
# end sends a few after BYE or on-hook), so they do not look like a new, unsignalled call.
ENDED_MEDIA_GRACE = 5.0
# A call to a transfer's target within this many seconds continues the conversation.
TRANSFER_WINDOW = 60.0
CONVERSATIONS_REMEMBERED = 10_000
# RTP that a party sends from its announced media address to an address no SDP named is
# taken as the other party's direction once it has gone there this long while nothing
# reached that party's announced address: a relay that takes both legs of a call sends the
# voice on to the announced address within its jitter buffer's delay (50 ms in the public
# SIP_DTMF2 capture), a NAT'd far end's private address never receives anything. See
# docs/capture.md, "Media relays and NAT".
LATCH_PROBATION = 1.0
# Packets held while an address is on probation, at most: a second of 5 ms packets.
LATCH_HELD_PACKETS = 200
# How long an answered call whose signalling is still open (no BYE yet) may be silent before
# the media timeout ends it: a call is silent for minutes with silence suppression, a hold
# without music or media off the mirror, and its BYE is what ends it. The limit is for a BYE
# the mirror lost (docs/sip.md, "A call silent for minutes").
OPEN_SIGNALLING_SILENCE = 3600.0


def transfer_number(target: str) -> str:
    """The number a Refer-To URI names: its user part (sip:1002@pbx gives 1002), exactly
    as written; empty when the target names no user."""
    scheme, _, rest = target.strip().strip("<>").partition(":")
    if scheme.lower() == "tel":
        return rest.partition(";")[0]
    if scheme.lower() in ("sip", "sips") and "@" in rest:
        return rest.partition("@")[0].partition(";")[0]
    return ""


def moment(timestamp: float | None) -> datetime | None:
    """A capture timestamp (seconds since the epoch) as an aware UTC datetime."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def endpoint_key(endpoint: Endpoint) -> bytes | None:
    """The packed (address, port) the RTP fast path looks up: 6 bytes for IPv4, 18 for IPv6."""
    family = socket.AF_INET6 if ":" in endpoint.ip else socket.AF_INET
    try:
        return socket.inet_pton(family, endpoint.ip) + struct.pack("!H", endpoint.port)
    except (OSError, ValueError, struct.error):
        return None


def endpoint_of_key(key: bytes) -> Endpoint:
    """The endpoint a packed media index key stands for (the inverse of endpoint_key)."""
    family = socket.AF_INET6 if len(key) == 18 else socket.AF_INET
    return Endpoint(socket.inet_ntop(family, key[:-2]), struct.unpack("!H", key[-2:])[0])


class MediaIndex(dict):
    """{packed receive address: MediaStream}, with a version that every change bumps: the
    pcap loop classifies a run of packets against the index at once, and must know when
    the packet it hands to the slow path changed the index under the rest of the run."""

    version = 0

    def __setitem__(self, key: bytes, stream: MediaStream) -> None:
        self.version += 1
        super().__setitem__(key, stream)

    def __delitem__(self, key: bytes) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, *args):
        self.version += 1
        return super().pop(*args)

    def clear(self) -> None:
        self.version += 1
        super().clear()


@dataclass(slots=True, eq=False)
class MediaStream:
    """One direction of a call's RTP: the packets sent to one party's receive address."""

    call: LiveCall
    receiver: Side
    receive_at: Endpoint
    payload_types: tuple[tuple[int, str], ...]
    packets: int = 0
    octets: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    # Where this stream's packets are logged for recording; None when not recorded.
    log: RtpLog | LearnedLog | PendingLog | None = None
    log_code: int = 0
    # The RtpLog's own pending lists for this direction, for the packet path to append to
    # without a method call; None when the log is not an RtpLog (or there is none).
    log_packets: list[bytes] | None = None
    log_arrivals: list[float] | None = None
    # An address no SDP named that stands in for this (announced) stream's, on probation
    # or learned; and whether this direction may no longer learn one (docs/capture.md).
    latch: Latch | None = None
    latch_refused: bool = False
    # The recording channel its packets go to, by the side whose direction it is: its
    # receiver's for a side's first stream; for a further stream the other side's, or None
    # when it has no channel (docs/sip.md, "More than one audio stream").
    channel: Side | None = None

    def take(self, arrival: float, packet: bytes) -> None:
        """One RTP packet of this stream: counted, and logged as its direction."""
        self.packets += 1
        self.octets += len(packet)
        self.last_at = arrival
        if not self.first_at:
            self.first_at = arrival
        if self.log is not None:
            self.log.append_coded(arrival, self.log_code, packet)

    def set_log(self, log: RtpLog | LearnedLog | PendingLog | None, code: int = 0) -> None:
        """Where this stream's packets are logged, and as which direction."""
        self.log, self.log_code = log, code
        if isinstance(log, RtpLog):
            self.log_packets, self.log_arrivals = log.pending[code], log.arrivals[code]
        else:
            self.log_packets = self.log_arrivals = None


@dataclass(slots=True, eq=False)
class Latch:
    """An address no SDP named, where one party's announced media address sends RTP: it
    stands in for the other party's announced address (`toward`) while that stays silent.

    On probation for LATCH_PROBATION, its packets held; then learned: a MediaStream of its
    own in the media index, logging into the call's log as `toward`'s direction.
    """

    destination: bytes
    toward: MediaStream
    since: float
    # The announced stream's packet count when the latch began: any more, and it is in use.
    announced_packets: int
    last_at: float
    held: list[tuple[float, bytes]] = field(default_factory=list)
    learned: MediaStream | None = None
    ssrc: bytes = b""
    recorded: int = 0

    def announced_in_use(self) -> bool:
        return self.toward.packets > self.announced_packets

    def last_heard(self) -> float:
        return self.learned.last_at if self.learned is not None else self.last_at


class LearnedLog:
    """The log of a learned stream. The packet path hands it each packet sent to the
    learned address (`stream.log.append_coded`, the RTP fast path's call); it passes the
    party's RTP on to the call's log, and gives the address up once that is not safe: the
    announced address received RTP, or another sender's RTP (another SSRC) arrived, which
    the fast path, matching by destination only, cannot tell apart by its source."""

    __slots__ = ("latch", "table")

    def __init__(self, latch: Latch, table: CallTable) -> None:
        self.latch = latch
        self.table = table

    def append_coded(self, arrival: float, code: int, packet: bytes) -> None:
        latch = self.latch
        if not looks_like_rtp(packet):
            return
        if latch.announced_in_use():
            self.table.refuse_latch(latch.toward)
        elif packet[8:12] != latch.ssrc:
            self.table.unlatch(latch.toward)
        else:
            latch.recorded += 1
            if latch.toward.log is not None:
                latch.toward.log.append_coded(arrival, code, packet)


class PendingLog:
    """The log of a call whose spool is not open yet: it opens on the call's first RTP
    packet, so that a call without media (an unanswered INVITE of a flood) holds no file.

    The packet path and the pcap runs hand it their first packet as they would to the
    call's RtpLog (`append_coded`, `append_run`); it asks the table to open the log,
    points every stream of the call at it, and passes the packet on."""

    __slots__ = ("call", "table")

    def __init__(self, call: LiveCall, table: CallTable) -> None:
        self.call = call
        self.table = table

    def append_coded(self, arrival: float, code: int, packet: bytes) -> None:
        opened = self.table.start_log(self.call)
        if opened is not None:
            opened.append_coded(arrival, code, packet)

    def append_run(self, code: int, run: PendingRun) -> None:
        opened = self.table.start_log(self.call)
        if opened is not None:
            opened.append_run(code, run)


class SharedLog:
    """The log of a media address that two calls share: one media path seen on two legs
    (an internal call whose phones are both on the mirror, a B2BUA's direct media; see
    CallTable._index). Each packet is counted as each call's stream's and logged into each
    call's log, as that stream's direction, so each call's recording has it."""

    __slots__ = ("streams",)

    def __init__(self, streams: list[MediaStream]) -> None:
        self.streams = streams

    def append_coded(self, arrival: float, code: int, packet: bytes) -> None:
        for stream in self.streams:
            stream.take(arrival, packet)

    def append_run(self, code: int, run: PendingRun) -> None:
        first_at = struct.unpack_from("<d", run.arrivals)[0]
        last_at = struct.unpack_from("<d", run.arrivals, 8 * (run.count - 1))[0]
        for stream in self.streams:
            stream.packets += run.count
            stream.octets += len(run.data)
            stream.last_at = last_at
            if not stream.first_at:
                stream.first_at = first_at
            if stream.log is not None:
                stream.log.append_run(stream.log_code, run)


def holders(indexed: MediaStream | None) -> list[MediaStream]:
    """The streams of calls that receive at a media index entry: none, one, or the calls
    that share the address."""
    if indexed is None:
        return []
    if isinstance(indexed.log, SharedLog):
        return list(indexed.log.streams)
    return [indexed]


def shared_address(streams: list[MediaStream]) -> MediaStream:
    """The media index entry of an address the streams receive at: the stream itself when
    there is one, else a stream of its own whose log hands every packet to each of them
    (the packet paths count and log it as they would any stream's)."""
    if len(streams) == 1:
        return streams[0]
    first = streams[0]
    entry = MediaStream(first.call, first.receiver, first.receive_at, first.payload_types)
    entry.set_log(SharedLog(streams))
    return entry


def _shares(held: MediaStream, announced: MediaStream) -> bool:
    """Whether a live call keeps an address that another call announces, beside it: when
    exactly one of the two announced it as its own party's address (the address is that
    side's signalling IP) and the other on someone else's behalf. That is one media path
    on two legs: phone A's call has A's address as A's own, and the leg to phone B has it
    as the far party's (a B2BUA's direct media, CallManager's StartMediaTransmission to B).
    Two calls that both have it as their own party's are a phone that moved on to a new
    call (a lost BYE): the new call takes it. See docs/capture.md, "One media address, two
    calls"."""
    return _owns(held) != _owns(announced)


def _owns(stream: MediaStream) -> bool:
    """The stream's address is on its own party's host: the IP its call's signalling has
    for that side. An unknown side IP (a relayed 200, SCCP's far party) owns nothing."""
    call = stream.call
    side_ip = call.caller_ip if stream.receiver == Side.CALLER else call.callee_ip
    return bool(side_ip) and _packed_ip(side_ip) == _packed_ip(stream.receive_at.ip)


def _packed_ip(ip: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except (OSError, ValueError):
        return None


@dataclass(slots=True, eq=False)
class LiveCall:
    call_id: str
    protocol: CallProtocol
    started_at: float
    caller: str = ""
    caller_name: str = ""
    callee: str = ""
    callee_name: str = ""
    caller_ip: str = ""
    callee_ip: str = ""
    local_side: Side | None = None
    direction: CallDirection = CallDirection.UNKNOWN
    state: CallState = CallState.SETUP
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str = ""
    last_activity: float = 0.0
    # Each side's first audio stream (its offer, its stream), and the further ones.
    offers: dict[Side, MediaOffer] = field(default_factory=dict)
    streams: dict[Side, MediaStream] = field(default_factory=dict)
    extra_offers: dict[Side, tuple[MediaOffer, ...]] = field(default_factory=dict)
    extra_streams: dict[Side, tuple[MediaStream, ...]] = field(default_factory=dict)
    log: RtpLog | None = None
    spool: str = ""
    # The segments of one conversation share it (a call split at the maximum length, the
    # calls of a transfer or a conference).
    conversation_id: str = ""
    # Seconds of silence that end this call, when not the table's default.
    silence_limit: float | None = None
    # A do-not-record call, counted as such once.
    not_recorded: bool = False
    # Packets the capture lost (its kernel ring full, on any of its interfaces) while this
    # call was live: its gaps may be the recorder's, not the network's.
    capture_dropped: int = 0
    # The HEP agent whose packet opened the call (HEP's capture id); None from a mirror.
    hep_capture_id: int | None = None

    def last_sign_of_life(self) -> float:
        """Its last signalling or RTP, RTP to a learned address included."""
        times = [self.last_activity]
        for stream in self.all_streams():
            times.append(stream.last_at)
            if stream.latch is not None:
                times.append(stream.latch.last_heard())
        return max(times)

    def all_streams(self) -> list[MediaStream]:
        """Every audio stream the call follows: each side's first, then the further ones."""
        streams = list(self.streams.values())
        for extra in self.extra_streams.values():
            streams.extend(extra)
        return streams

    @property
    def local_ip(self) -> str:
        """The address of the phone this call is recorded for."""
        if self.local_side == Side.CALLEE or (
            not self.local_side and self.direction == CallDirection.INBOUND
        ):
            return self.callee_ip
        return self.caller_ip

    @property
    def local_number(self) -> str:
        if self.local_side == Side.CALLEE or (
            not self.local_side and self.direction == CallDirection.INBOUND
        ):
            return self.callee
        return self.caller

    def snapshot(self, event: CallEvent) -> CallSnapshot:
        return CallSnapshot(
            call_id=self.call_id,
            protocol=self.protocol,
            event=event,
            started_at=self.started_at,
            answered_at=self.answered_at,
            ended_at=self.ended_at,
            end_reason=self.end_reason,
            state=self.state,
            direction=self.direction,
            caller=self.caller,
            caller_name=self.caller_name,
            callee=self.callee,
            callee_name=self.callee_name,
            caller_ip=self.caller_ip,
            callee_ip=self.callee_ip,
            local_ip=self.local_ip,
            local_number=self.local_number,
            media=tuple(self.offers.values()),
            spool=self.spool,
            local_side=self.local_side,
            conversation_id=self.conversation_id,
            capture_dropped=self.capture_dropped,
            hep_capture_id=self.hep_capture_id,
        )


@direct_init
@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """A live call as it stands after one event: what leaves the capture loop per call."""

    call_id: str
    protocol: CallProtocol
    event: CallEvent
    started_at: float
    answered_at: float | None
    ended_at: float | None
    end_reason: str
    state: CallState
    direction: CallDirection
    caller: str
    caller_name: str
    callee: str
    callee_name: str
    caller_ip: str
    callee_ip: str
    local_ip: str
    local_number: str
    media: tuple[MediaOffer, ...]
    spool: str = ""
    local_side: Side | None = None
    conversation_id: str = ""
    capture_dropped: int = 0
    hep_capture_id: int | None = None


class CallTable:
    """Live calls by id, and the media index {packed receive address: stream}.

    `is_phone(ip)` tells whether an address is a phone QMS knows, which decides a SIP
    call's direction. `signalling_open(call_id)` tells whether a call's signalling has not
    ended it yet, which lets it be silent for `open_signalling_silence`, not
    `silence_timeout`.
    """

    def __init__(
        self,
        is_phone: Callable[[str], bool] = lambda ip: False,
        silence_timeout: float = 120.0,
        setup_timeout: float = 300.0,
        max_length: float = 0.0,
        open_log: Callable[[LiveCall], RtpLog | None] = lambda call: None,
        signalling_open: Callable[[str], bool] = lambda call_id: False,
        open_signalling_silence: float = OPEN_SIGNALLING_SILENCE,
    ) -> None:
        self.is_phone = is_phone
        self.signalling_open = signalling_open
        # Told how many packets held on probation were recorded when it was decided late.
        self.on_settled: Callable[[int], None] = lambda packets: None
        self.open_signalling_silence = open_signalling_silence
        self.max_length = max_length
        self.open_log = open_log
        self.silence_timeout = silence_timeout
        self.setup_timeout = setup_timeout
        self.calls: dict[str, LiveCall] = {}
        self.media = MediaIndex()
        self.ended_media: dict[bytes, float] = {}
        # Conversation of every recent call, and transfer targets waiting for their call.
        self.conversations: OrderedDict[str, str] = OrderedDict()
        self.transfers: dict[str, tuple[str, float]] = {}
        self.calls_seen = 0
        # RTP packets the spool could not write (disk full), over every ended call.
        self.spool_dropped_packets = 0
        # Addresses no SDP named that stand in for an announced one: {packed address: latch}.
        self.latches: dict[bytes, Latch] = {}
        # RTP taken as its direction through a learned address, over every latch let go.
        self.latched_before = 0
        # Floods (docs/capture.md, "Floods"): calls not yet answered, capped per source and
        # overall; the START of each call refused, kept for its answer; the calls evicted,
        # for the engine to report ended; the spools open now; each cap's trips.
        self.unanswered = UnansweredCalls()
        self.refused: OrderedDict[str, CallSignal] = OrderedDict()
        self.evicted: list[LiveCall] = []
        self.open_logs = 0
        self.caps: Counter[str] = Counter()

    def apply(self, signal: CallSignal, at: float) -> LiveCall | None:
        call = self.calls.get(signal.call_id)
        if call is None:
            call = self._admit(signal, at)
            if call is None:
                return None
        elif signal.joins_call_id:
            self._join(call, signal.joins_call_id)
        call.last_activity = at
        self._learn_parties(call, signal)
        self._attach_all(call, signal.media)
        self._advance(call, signal, at)
        return call

    def _admit(self, signal: CallSignal, at: float) -> LiveCall | None:
        """A call new to the table, if the caps let it in. An answered one always comes
        in, with the offers of its START if that was refused; an unanswered one from a
        source over its share is refused (remembered for its answer), or makes room by
        evicting the busiest source's oldest unanswered call."""
        if signal.event == CallEvent.END:
            self.refused.pop(signal.call_id, None)
            return None
        if signal.event == CallEvent.ANSWER:
            start = self.refused.pop(signal.call_id, None)
            if start is None:
                return self._open(signal, at)
            call = self._open(start, start.at.timestamp())
            self._learn_parties(call, start)
            self._attach_all(call, start.media)
            return call
        if signal.call_id in self.refused:
            return None
        source = signal.caller_ip or signal.callee_ip
        verdict = self.unanswered.verdict(source)
        if verdict.cap and not verdict.evict:
            self._refuse(signal, verdict.cap)
            return None
        if verdict.evict:
            self.caps[FLOOD_EVICTED] += 1
            self.evicted.append(self.finish(self.calls[verdict.evict], at, FLOOD_EVICTED))
        call = self._open(signal, at)
        self.unanswered.add(source, call.call_id)
        return call

    def _refuse(self, signal: CallSignal, cap: str) -> None:
        self.caps[cap] += 1
        self.refused[signal.call_id] = signal
        if len(self.refused) > REFUSED_REMEMBERED:
            self.refused.popitem(last=False)

    def take_evicted(self) -> list[LiveCall]:
        """The calls evicted since last asked, ended (reason flood-evicted)."""
        evicted, self.evicted = self.evicted, []
        return evicted

    def _open(self, signal: CallSignal, at: float) -> LiveCall:
        call = LiveCall(signal.call_id, signal.protocol, at, local_side=signal.local_side)
        call.conversation_id = self._conversation_of(signal, signal.callee, at)
        self.conversations[signal.call_id] = call.conversation_id
        while len(self.conversations) > CONVERSATIONS_REMEMBERED:
            self.conversations.popitem(last=False)
        self.calls[signal.call_id] = call
        self.calls_seen += 1
        return call

    def _learn_parties(self, call: LiveCall, signal: CallSignal) -> None:
        for name in ("caller", "caller_name", "callee", "callee_name", "caller_ip", "callee_ip"):
            value = getattr(signal, name)
            if value:
                setattr(call, name, value)
        if signal.local_side is not None:
            call.local_side = signal.local_side
        call.direction = self.direction_of(call)

    def direction_of(self, call: LiveCall) -> CallDirection:
        """Inbound, outbound or internal, by which side is a known phone."""
        caller_phone = call.local_side == Side.CALLER or (
            bool(call.caller_ip) and self.is_phone(call.caller_ip)
        )
        callee_phone = call.local_side == Side.CALLEE or (
            bool(call.callee_ip) and self.is_phone(call.callee_ip)
        )
        if caller_phone and callee_phone:
            return CallDirection.INTERNAL
        if caller_phone:
            return CallDirection.OUTBOUND
        if callee_phone:
            return CallDirection.INBOUND
        return CallDirection.UNKNOWN

    def _attach(self, call: LiveCall, offer: MediaOffer) -> None:
        call.offers[offer.side] = offer
        old = call.streams.get(offer.side)
        if old is not None and old.receive_at == offer.receive_at:
            old.payload_types = offer.payload_types or old.payload_types
            return
        if old is not None:
            # A latch is judged by both parties' announced addresses: a change starts over.
            for stream in call.streams.values():
                self.unlatch(stream)
            self._forget(old)
        if offer.receive_at.ip in UNROUTABLE or offer.receive_at.port == 0 or offer.encrypted:
            call.streams.pop(offer.side, None)
            return
        key = endpoint_key(offer.receive_at)
        if key is None:
            return
        stream = MediaStream(call, offer.side, offer.receive_at, offer.payload_types)
        stream.channel = offer.side
        self._log_into(stream, call.log or PendingLog(call, self))
        call.streams[offer.side] = stream
        self._index(call, key, stream)

    def _index(self, call: LiveCall, key: bytes, stream: MediaStream) -> None:
        """`stream` receives at `key` from now on. Another call that had the address keeps
        it beside `stream` when the two are one media path seen on two legs (see _shares);
        otherwise it gives the address up."""
        claimed = self.latches.get(key)
        if claimed is not None:
            self.unlatch(claimed.toward)  # announced now: the announcer's, not a stand-in
        kept = []
        for held in holders(self.media.get(key)):
            if held.call is call:
                continue  # the call announces the address again: the new stream has it
            if _shares(held, stream):
                kept.append(held)
                continue
            for old_stream in held.call.streams.values():
                self.unlatch(old_stream)
            self._release(held)
        self.media[key] = shared_address([*kept, stream])

    def _release(self, stream: MediaStream) -> None:
        """Take `stream` from its call (another call announced its address)."""
        call, side = stream.call, stream.receiver
        if call.streams.get(side) is stream:
            call.streams.pop(side)
            return
        kept = tuple(extra for extra in call.extra_streams.get(side, ()) if extra is not stream)
        call.extra_streams[side] = kept

    # --- more than one audio stream a side (docs/sip.md, "More than one audio stream") ---

    def _attach_all(self, call: LiveCall, media: tuple[MediaOffer, ...]) -> None:
        """The offers of a step, side by side: a side's first stream is its own; any
        further streams it announced in the same step are followed as the call's too."""
        sides: dict[Side, list[MediaOffer]] = {}
        for offer in media:
            sides.setdefault(offer.side, []).append(offer)
        for side, offers in sides.items():
            self._attach(call, offers[0])
            self._attach_extras(call, side, tuple(offers[1:]))
        self._route_extras(call)

    def _attach_extras(self, call: LiveCall, side: Side, offers: tuple[MediaOffer, ...]) -> None:
        """A side's second and further streams, replacing those it announced before."""
        old = call.extra_streams.pop(side, ())
        if tuple(stream.receive_at for stream in old) == tuple(o.receive_at for o in offers):
            call.extra_streams[side], call.extra_offers[side] = old, offers
            return
        for stream in old:
            self._forget(stream)
        call.extra_offers[side] = offers
        streams = []
        for offer in offers:
            key = endpoint_key(offer.receive_at)
            if key is None or offer.encrypted or offer.receive_at.ip in UNROUTABLE:
                continue
            stream = MediaStream(call, side, offer.receive_at, offer.payload_types)
            streams.append(stream)
            self._index(call, key, stream)
        call.extra_streams[side] = tuple(streams)

    def _route_extras(self, call: LiveCall) -> None:
        """The channel of each further stream. The two-channel recording has room for one
        more only where a side receives nothing (every stream of its sendonly or inactive,
        as a SIPREC client's offer, RFC 7866): the other side's second stream, the second
        party of a SIPREC session, takes that side's channel. Other further streams are
        followed and counted, and have no channel."""
        for side, streams in call.extra_streams.items():
            for index, stream in enumerate(streams):
                free = index == 0 and self._receives_nothing(call, side.other)
                stream.channel = side.other if free else None
                self._log_into(stream, call.log or PendingLog(call, self))

    def _receives_nothing(self, call: LiveCall, side: Side) -> bool:
        offers = (
            (call.offers[side], *call.extra_offers.get(side, ())) if side in call.offers else ()
        )
        return bool(offers) and all(offer.mode in ("sendonly", "inactive") for offer in offers)

    def _log_into(self, stream: MediaStream, log: RtpLog | PendingLog | None) -> None:
        """Point a stream at the call's log, as its channel's direction; at nothing when it
        has no channel or the call is not recorded."""
        if stream.channel is None or log is None:
            stream.set_log(None)
        else:
            stream.set_log(log, DIRECTION_CODE[stream.channel])

    def _advance(self, call: LiveCall, signal: CallSignal, at: float) -> None:
        event = signal.event
        if event == CallEvent.RINGING and call.state == CallState.SETUP:
            call.state = CallState.RINGING
        elif event == CallEvent.ANSWER:
            call.answered_at = call.answered_at or at
            call.state = CallState.CONNECTED
            self.unanswered.remove(call.call_id)
            self._arm_log(call)
        elif event == CallEvent.HOLD:
            call.state = CallState.HELD
        elif event == CallEvent.RESUME:
            call.state = CallState.CONNECTED
        elif event == CallEvent.TRANSFER:
            self._remember_transfer(call, signal.reason, at)
        elif event == CallEvent.END:
            self.end(call, at, signal.reason)

    def start_log(self, call: LiveCall) -> RtpLog | None:
        """The call's first RTP: open its log (the engine's open_log decides whether it
        may) and point its streams at it, or at nothing when it is not recorded."""
        if call.log is None:
            call.log = self.open_log(call)
            self.open_logs += call.log is not None
        for stream in call.all_streams():
            self._log_into(stream, call.log)
        return call.log

    def _arm_log(self, call: LiveCall) -> None:
        """An answered call whose spool was refused while it rang (the handles kept for
        answered calls) asks again at its next RTP packet."""
        if call.log is not None:
            return
        for stream in call.all_streams():
            if stream.log is None:
                self._log_into(stream, PendingLog(call, self))

    def _remember_transfer(self, call: LiveCall, target: str, at: float) -> None:
        """A REFER (or a transfer key) names who the call goes to next: a call to that
        number shortly after is the same conversation."""
        number = transfer_number(target)
        if number:
            self.transfers[number] = (call.conversation_id, at)

    def _join(self, call: LiveCall, other_call_id: str) -> None:
        """A live call found to continue another's conversation (SCCP Join, DirTrfr, or a
        consult ended with its held call) takes that conversation from now on."""
        call.conversation_id = self.conversations.get(other_call_id, other_call_id)
        self.conversations[call.call_id] = call.conversation_id

    def _conversation_of(self, signal: CallSignal, callee: str, at: float) -> str:
        """The conversation a new call belongs to: the one of the call it replaces or
        joins, or of the transfer that sent it to its callee; else its own."""
        linked = signal.replaces_call_id or signal.joins_call_id
        if linked:
            return self.conversations.get(linked, linked)
        transfer = self.transfers.pop(callee, None)
        if transfer is not None and at - transfer[1] <= TRANSFER_WINDOW:
            return transfer[0]
        return signal.call_id

    def end(self, call: LiveCall, at: float, reason: str) -> None:
        call.ended_at = at
        call.end_reason = reason
        call.state = CallState.ENDED
        for stream in call.all_streams():
            self._settle(stream.latch)
            self._forget(stream, grace_until=at + ENDED_MEDIA_GRACE)
            stream.set_log(None)
        if call.log is not None:
            call.log.close()
            self.spool_dropped_packets += call.log.dropped_packets
            self.open_logs -= 1
            call.log = None
        self.unanswered.remove(call.call_id)
        self.calls.pop(call.call_id, None)

    def _forget(self, stream: MediaStream, grace_until: float = 0.0) -> None:
        self.unlatch(stream, grace_until)
        key = endpoint_key(stream.receive_at)
        if key is None:
            return
        indexed = self.media.get(key)
        if indexed is stream:
            del self.media[key]
            if grace_until:
                self.ended_media[key] = grace_until
        elif stream in holders(indexed):
            # Shared: the other calls keep the address.
            self.media[key] = shared_address([held for held in holders(indexed)
                                              if held is not stream])  # fmt: skip

    # --- addresses no SDP named (docs/capture.md, "Media relays and NAT") ----------------

    def follow(self, sender: MediaStream, destination: bytes, packet: bytes, at: float) -> int:
        """RTP sent from `sender`'s announced address to `destination`, an address no SDP
        named. Return how many packets, this one and those held before it, are now the
        other party's direction; none while the address is on probation or refused."""
        toward = self._latch_direction(sender)
        latch = None if toward is None else self._latch_at(toward, destination, at)
        if latch is None:
            return 0
        if latch.announced_in_use():
            self.refuse_latch(latch.toward)
            return 0
        latch.last_at = at
        if len(latch.held) < LATCH_HELD_PACKETS:
            latch.held.append((at, packet))
        if at - latch.since < LATCH_PROBATION:
            return 0
        return self._learn(latch)

    def _latch_direction(self, sender: MediaStream) -> MediaStream | None:
        """The announced stream an address `sender` sends to may stand in for: the other
        party's, in a connected call, unless that direction was refused."""
        call = sender.call
        if call.state != CallState.CONNECTED or call.streams.get(sender.receiver) is not sender:
            return None
        toward = call.streams.get(sender.receiver.other)
        if toward is None or toward.latch_refused:
            return None
        return toward

    def _latch_at(self, toward: MediaStream, destination: bytes, at: float) -> Latch | None:
        """The latch of `destination` for `toward`, begun now if need be; None when the
        address serves another direction or call, or the direction follows another one."""
        latch = self.latches.get(destination)
        if latch is not None and latch.toward is not toward:
            # One address for two directions or two calls: a relay's shared port. Following
            # it could mix two voices into one channel, so neither direction follows it.
            self.refuse_latch(latch.toward)
            self.refuse_latch(toward)
            return None
        if latch is not None:
            return latch
        current = toward.latch
        if current is not None:
            if at - current.last_heard() < LATCH_PROBATION:
                return None
            self._settle(current)
            self.unlatch(toward)  # the party moved on from an address gone quiet
        latch = Latch(destination, toward, at, toward.packets, at)
        self.latches[destination] = toward.latch = latch
        return latch

    def _learn(self, latch: Latch) -> int:
        """Probation passed: the address joins the media index as a stream of its own, and
        the packets held meanwhile go to the call's log."""
        toward = latch.toward
        learned = MediaStream(
            toward.call, toward.receiver, endpoint_of_key(latch.destination), toward.payload_types
        )
        learned.set_log(LearnedLog(latch, self), toward.log_code)
        for at, packet in latch.held:
            if toward.log is not None:
                toward.log.append_coded(at, toward.log_code, packet)
            learned.octets += len(packet)
        learned.packets = latch.recorded = len(latch.held)
        learned.first_at, learned.last_at = latch.held[0][0], latch.held[-1][0]
        latch.ssrc = latch.held[-1][1][8:12]
        latch.held, latch.learned = [], learned
        self.media[latch.destination] = learned
        return learned.packets

    def _settle(self, latch: Latch | None) -> None:
        """A probation that never came to its end (a segment shorter than LATCH_PROBATION:
        its call ended, or the party moved on from the address) is decided now, by its
        rule: if nothing reached the announced address since the first packet, the packets
        held are the direction's, recorded with their own arrival times; if anything did,
        they stay counted as relayed."""
        if latch is None or latch.learned is not None or not latch.held:
            return
        toward = latch.toward
        if latch.announced_in_use() or toward.log is None:
            return
        for at, packet in latch.held:
            toward.log.append_coded(at, toward.log_code, packet)
        latch.recorded = len(latch.held)
        latch.held = []
        self.on_settled(latch.recorded)

    def unlatch(self, toward: MediaStream, grace_until: float = 0.0) -> None:
        """Let go of the address standing in for `toward`: out of the media index (held
        for its stragglers until `grace_until` when its call ended), packets held dropped."""
        latch = toward.latch
        if latch is None:
            return
        toward.latch = None
        if self.latches.get(latch.destination) is latch:
            del self.latches[latch.destination]
        learned = latch.learned
        if learned is not None:
            learned.set_log(None)
            if self.media.get(latch.destination) is learned:
                del self.media[latch.destination]
                if grace_until:
                    self.ended_media[latch.destination] = grace_until
        latch.held = []
        self.latched_before += latch.recorded

    def refuse_latch(self, toward: MediaStream) -> None:
        """The direction keeps to its announced address for as long as that is announced."""
        self.unlatch(toward)
        toward.latch_refused = True

    @property
    def latched_packets(self) -> int:
        """RTP taken as its direction through learned addresses, so far."""
        return self.latched_before + sum(latch.recorded for latch in self.latches.values())

    def ended_recently(self, key: bytes, now: float) -> bool:
        """A media address of a call that ended moments ago: its last packets still arrive."""
        return self.ended_media.get(key, 0.0) >= now

    def sweep(self, now: float) -> tuple[list[LiveCall], list[LiveCall]]:
        """End calls whose media and signalling went silent, and split calls longer than
        the maximum; return the calls ended and the continuations begun."""
        ended, begun = [], []
        self.ended_media = {key: until for key, until in self.ended_media.items() if until >= now}
        for call in list(self.calls.values()):
            last = call.last_sign_of_life()
            if now - last > self._silence_limit(call):
                ended.append(self.finish(call, last, "media-timeout"))
            elif self.max_length and now - call.started_at > self.max_length:
                ended.append(self.finish(call, now, "max-length"))
                begun.append(self._continue(call, now))
        return ended, begun

    def _silence_limit(self, call: LiveCall) -> float:
        """How long the call may go without RTP or signalling before the sweep ends it."""
        if call.silence_limit:
            return call.silence_limit
        if not call.answered_at:
            return self.setup_timeout
        # Asked only of a call already silent that long: most calls never get here.
        if self.signalling_open(call.call_id):
            return self.open_signalling_silence
        return self.silence_timeout

    def _continue(self, ended: LiveCall, at: float) -> LiveCall:
        """A new segment of an endless call: same parties and media, its own recording,
        linked to the first by the conversation id."""
        call = LiveCall(ended.call_id, ended.protocol, at, local_side=ended.local_side)
        for name in (
            "caller",
            "caller_name",
            "callee",
            "callee_name",
            "caller_ip",
            "callee_ip",
            "direction",
            "conversation_id",
            "silence_limit",
            "hep_capture_id",
        ):
            setattr(call, name, getattr(ended, name))  # fmt: skip
        call.answered_at, call.state, call.last_activity = at, ended.state, at
        self.calls[call.call_id] = call
        for side, offer in ended.offers.items():
            self._attach_all(call, (offer, *ended.extra_offers.get(side, ())))
        return call

    def finish_all(self, reason: str) -> list[LiveCall]:
        """End every live call (capture over); each at its last sign of life."""
        ended = []
        for call in list(self.calls.values()):
            ended.append(self.finish(call, call.last_sign_of_life(), reason))
        return ended

    def finish(self, call: LiveCall, at: float, reason: str) -> LiveCall:
        self.end(call, at, reason)
        return call
