"""Follow SIP registrations and calls from mirrored packets; emit observations.

`SipTracker.feed` takes one SIP message (a UDP payload, or a message the TCP framer cut) and
returns what it taught: BindingSeen from REGISTER 2xx (see registrations.py for the IP rule)
and from calls (rule R6), and CallSignal for each step of a call. It never raises: bad input
is counted in `errors` by kind; every message is counted in `messages` by method or by status
class ("2xx"). `expire` forgets unanswered REGISTERs and idle calls so memory stays bounded.

Call rules (RFC 3261 §13-§15, RFC 3311, RFC 3515):
- INVITE: START (caller from P-Asserted-Identity, else From; callee from To, else the
  request-URI; the caller's SDP as MediaOffer side CALLER). An INVITE without a To tag, with
  the caller's From tag and a higher CSeq, on a call not answered, is the caller trying again
  (§8.1.3.5): the same call goes on, MEDIA only if its SDP moved.
- 180/183: RINGING (early media in the SDP, side CALLEE). 2xx: ANSWER with the callee's SDP.
  3xx-6xx to the current INVITE: END with the status code as reason. A refusal that asks the
  caller to try again (RETRY_ASKED, any 3xx) ends the call only when no retry follows within
  `retry_wait` (a challenge: `ringing_timeout`); the END then carries the refusal's time.
  A call answered is never ended or moved by a refusal: a final response to an established
  call's INVITE changes nothing.
- ACK, PRACK or UPDATE with SDP, and re-INVITE: HOLD (sendonly/inactive/c=0.0.0.0), RESUME
  (back from a hold), or MEDIA (address or port moved). A re-INVITE without SDP gets the offer
  in its 2xx and the answer in the ACK (§14.1): at the ACK the call is held when either holds.
  REFER: TRANSFER, reason = Refer-To URI. BYE: END "bye". CANCEL before the answer: END
  "cancel".
- Retransmissions (same From tag, CSeq and method, or the same response again) give nothing
  new. The From tag is part of it: each side numbers its own requests (§12.2.1.1).
- A 2xx to an INVITE of an unknown Call-ID (capture started mid-call) gives START + ANSWER.
- A call gives BindingSeen when a phone sent the message itself: the Contact host equals the
  packet's source IP and, for a request, there is one Via (proxies add theirs, §16.6 step 8).
  Addresses that received a REGISTER are registrars/PBXs and never become call bindings.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallEvent,
    Endpoint,
    MediaOffer,
    Observation,
    Side,
    direct_init,
)
from integrations.sip.calls import Call, LateOffer, Refusal, holds, media_offers, step_of
from integrations.sip.errors import SipDecodeError
from integrations.sip.lync import binding_source, extension_aliases, identity_aliases, protocol_of
from integrations.sip.message import SipMessage, parse_message
from integrations.sip.parties import callee_of, caller_of, extension_of, sip_instance
from integrations.sip.registrations import (
    PendingRegister,
    bindings_from_response,
    pending_register,
)
from integrations.sip.sdp import SessionDescription
from integrations.sip.uri import normalize_ip, parse_name_addr

logger = logging.getLogger(__name__)

OFFER_METHODS = frozenset({"ACK", "PRACK", "UPDATE"})
# Refusals after which the caller sends the INVITE again on the same Call-ID with a higher
# CSeq: a challenge (401, 407) or a request the caller can fix (413, 415, 416, 420, RFC 3261
# §8.1.3.5; 421, §21.4.16), Session Interval Too Small (422, RFC 4028 §6), another offer
# (488, §21.4.26), Request Pending (491, §14.1); and every redirect (3xx, §8.1.3.4).
RETRY_ASKED = frozenset({401, 407, 413, 415, 416, 420, 421, 422, 488, 491})
AUTH_CHALLENGES = frozenset({401, 407})
MAX_REGISTRARS = 1024


@direct_init
@dataclass(frozen=True, slots=True)
class Packet:
    """Where and when a SIP message was seen."""

    src: Endpoint
    dst: Endpoint
    at: datetime
    transport: str


class SipTracker:
    """REGISTER transactions and calls of one capture, in packet order."""

    def __init__(
        self,
        *,
        register_timeout: timedelta = timedelta(seconds=64),
        ringing_timeout: timedelta = timedelta(minutes=5),
        call_idle_timeout: timedelta = timedelta(hours=4),
        ended_linger: timedelta = timedelta(seconds=32),
        retry_wait: timedelta = timedelta(seconds=32),
        max_calls: int = 100_000,
        max_registers: int = 100_000,
    ) -> None:
        # 64 s is Timer F (64*T1, RFC 3261 §17.1.2.2): no final response by then, none comes.
        self.register_timeout = register_timeout
        self.ringing_timeout = ringing_timeout
        self.call_idle_timeout = call_idle_timeout
        self.ended_linger = ended_linger  # late retransmissions after BYE stay quiet
        # 64*T1 (Timer B, §17.1.1.2): a caller asked to try again has done so by then; a 491
        # is retried within 4 s (§14.1), the others at once.
        self.retry_wait = retry_wait
        self.max_calls = max_calls
        self.max_registers = max_registers
        self.errors: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.expired: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self._registers: OrderedDict[tuple[str, int, str], PendingRegister | datetime] = (
            OrderedDict()
        )
        self._calls: OrderedDict[str, Call] = OrderedDict()
        # Calls not answered, oldest first: the first to go when the table is full, so a
        # flood of INVITEs never evicts a call in progress (answered calls go last).
        self._unanswered: OrderedDict[str, None] = OrderedDict()
        self._registrars: OrderedDict[str, None] = OrderedDict()
        # Built once, not for every message: a dict of bound methods a message cost 1 %.
        self._on_request = self._request_handlers()
        self._on_response = self._response_handlers()

    # -- the edge ---------------------------------------------------------------------------

    def feed(
        self, payload: bytes, src: Endpoint, dst: Endpoint, at: datetime, transport: str
    ) -> list[Observation]:
        """One SIP message in, observations out. Never raises."""
        try:
            message = parse_message(payload, stream=transport.lower() not in ("udp", ""))
            return self._on_message(message, packet_at(src, dst, at, transport))
        except SipDecodeError as error:
            self.errors[error.kind] += 1
            return []
        except Exception:  # the capture's edge: one bad packet never stops the rest
            self.errors["internal"] += 1
            logger.exception("SIP tracker failed on a message from %s", src)
            return []

    def expire(self, now: datetime) -> list[Observation]:
        """Forget unanswered REGISTERs and idle calls; END the calls that were still live."""
        self._expire_registers(now)
        ended: list[Observation] = []
        for call_id, call in list(self._calls.items()):
            refusal = call.refusal
            if refusal is not None and now - refusal.at > self._retry_wait(refusal):
                ended.append(self._end_refused(call))
            if self._is_stale(call, now):
                del self._calls[call_id]
                self._unanswered.pop(call_id, None)
                self.expired["ended-call" if call.ended else "call"] += 1
                if not call.ended:
                    ended.append(call.signal(CallEvent.END, now, reason="timeout"))
        return ended

    def _retry_wait(self, refusal: Refusal) -> timedelta:
        """How long a refused call waits for the caller's retry. A challenge is answered by
        a person as often as by a phone (a softphone that asks for the password: 33 s in
        rtppcap-aaa.pcap), so it waits as long as a call may ring."""
        return self.ringing_timeout if refusal.status in AUTH_CHALLENGES else self.retry_wait

    def end_refused(self) -> list[Observation]:
        """The capture is over and no retry will come: each call still waiting for one ends,
        with its refusal's status and time."""
        return [self._end_refused(call) for call in self._calls.values() if call.refusal]

    def _end_refused(self, call: Call) -> Observation:
        refusal, call.refusal, call.ended = call.refusal, None, True
        return call.signal(CallEvent.END, refusal.at, reason=str(refusal.status))

    def holds_call(self, call_id: str) -> bool:
        """True while the call is followed and no BYE, CANCEL or failure has ended it."""
        call = self._calls.get(call_id)
        return call is not None and not call.ended

    @property
    def live_calls(self) -> int:
        return sum(1 for call in self._calls.values() if not call.ended)

    # -- dispatch ---------------------------------------------------------------------------

    def _on_message(self, message: SipMessage, packet: Packet) -> list[Observation]:
        if message.is_request:
            self.messages[message.method] += 1
            handler = self._on_request.get(message.method)
        else:
            self.messages[f"{message.status // 100}xx"] += 1
            handler = self._on_response.get(message.cseq.method)
        return [] if handler is None else handler(message, packet)

    def _request_handlers(self) -> dict[str, Callable[[SipMessage, Packet], list[Observation]]]:
        return {
            "REGISTER": self._on_register,
            "INVITE": self._on_invite,
            "ACK": self._on_offer,
            "PRACK": self._on_offer,
            "UPDATE": self._on_offer,
            "BYE": self._on_bye,
            "CANCEL": self._on_cancel,
            "REFER": self._on_refer,
        }

    def _response_handlers(self) -> dict[str, Callable[[SipMessage, Packet], list[Observation]]]:
        return {
            "REGISTER": self._on_register_response,
            "INVITE": self._on_invite_response,
            "UPDATE": self._on_update_response,
        }

    # -- REGISTER (RFC 3261 §10) ------------------------------------------------------------

    def _on_register(self, request: SipMessage, packet: Packet) -> list[Observation]:
        self._remember_registrar(packet.dst.ip)
        key = transaction_key(request)
        if key not in self._registers:  # else a retransmission
            self._registers[key] = pending_register(request, packet.src.ip, packet.at)
            self._bound(self._registers, self.max_registers, "register-table-full")
        return []

    def _on_register_response(self, response: SipMessage, packet: Packet) -> list[Observation]:
        if response.status < 200:
            return []
        key = transaction_key(response)
        pending = self._registers.get(key)
        if isinstance(pending, datetime):
            return []  # a retransmitted final response
        self._registers[key] = packet.at  # completed: remember it until it expires
        if not 200 <= response.status < 300:
            return []  # 401/407 challenge or a refusal: no binding (§10.3)
        pending = pending or unseen_register(response, packet)
        bindings = bindings_from_response(pending, response, packet.at, packet.src.ip)
        return self._not_at_registrar(bindings)

    def _not_at_registrar(self, bindings: list[BindingSeen]) -> list[Observation]:
        """An address that receives REGISTERs is a registrar or proxy, never a phone (a proxy
        that registers onward, as in heplify-sip_ipv4_tcp_retrans.pcap, is not the phone)."""
        kept: list[Observation] = []
        for binding in bindings:
            if binding.ip in self._registrars:
                self.ignored["binding-at-registrar"] += 1
            else:
                kept.append(binding)
        return kept

    def _remember_registrar(self, ip: str) -> None:
        self._registrars[ip] = None
        self._registrars.move_to_end(ip)
        if len(self._registrars) > MAX_REGISTRARS:
            self._registrars.popitem(last=False)

    def _expire_registers(self, now: datetime) -> None:
        for key, entry in list(self._registers.items()):
            started = entry if isinstance(entry, datetime) else entry.at
            if now - started > self.register_timeout:
                del self._registers[key]
                self.expired[
                    "register" if isinstance(entry, PendingRegister) else "register-done"
                ] += 1

    # -- calls --------------------------------------------------------------------------------

    def _on_invite(self, request: SipMessage, packet: Packet) -> list[Observation]:
        call = self._calls.get(request.call_id)
        if call is None:
            return self._start_call(request, packet)
        self._touch(call, packet.at)
        if call.ended:
            return []
        if not call.answered and not request.to.tag:
            return self._retry(call, request, packet.at)
        if not call.first_time(step_of(request)):
            return []
        return self._offer_in_dialog(call, request, packet.at)

    def _retry(self, call: Call, request: SipMessage, at: datetime) -> list[Observation]:
        """An INVITE outside the dialog before the answer: a retransmission, or the caller
        trying again after a refusal (or one the capture missed): a new transaction with the
        same Call-ID and From tag and a higher CSeq (§8.1.3.5). Anything else is not this
        caller's retry, and takes nothing from the call, not even its next CSeq."""
        if request.cseq.number == call.invite_cseq and request.from_.tag == call.caller_tag:
            return []
        if request.from_.tag != call.caller_tag or request.cseq.number < call.invite_cseq:
            self.ignored["not-a-retry"] += 1
            return []
        call.invite_cseq = request.cseq.number
        call.refusal = None
        return self._media_update(call, request, at)

    def _start_call(self, request: SipMessage, packet: Packet) -> list[Observation]:
        caller = caller_of(request)
        sender_ip = ua_source(request, packet)
        call = Call(
            call_id=request.call_id,
            protocol=protocol_of(request),
            caller=extension_of(caller.uri),
            caller_name=caller.display_name,
            callee=callee_of(request),
            callee_name=request.to.display_name,
            caller_ip=sender_ip or originating_ip(request, packet),
            caller_tag=request.from_.tag,
            invite_cseq=request.cseq.number,
            last_seen=packet.at,
        )
        call.first_time(step_of(request))
        offers = self._offers(request, Side.CALLER)
        call.media_changed(Side.CALLER, offers)
        seen: list[Observation] = self._call_binding(
            call,
            request,
            extension_of(request.from_.uri),
            sender_ip,
            packet.at,
            identity_aliases(request, request.from_.uri),
        )
        start = call.signal(CallEvent.START, packet.at, offers)
        replaces = (request.header("replaces") or "").partition(";")[0].strip()
        seen.append(replace(start, replaces_call_id=replaces) if replaces else start)
        return self._add_call(call) + seen

    def _on_invite_response(self, response: SipMessage, packet: Packet) -> list[Observation]:
        call = self._calls.get(response.call_id)
        if call is None:
            return self._pick_up(response, packet) if 200 <= response.status < 300 else []
        self._touch(call, packet.at)
        if call.ended or response.status < 180 or not call.first_time(step_of(response)):
            return []
        if response.cseq.number != call.invite_cseq or call.answered:
            return self._answer_in_dialog(call, response, packet.at)
        return self._progress(call, response, packet)

    def _progress(self, call: Call, response: SipMessage, packet: Packet) -> list[Observation]:
        """A response to the INVITE that set the call up: ringing, answer or failure."""
        status = response.status
        if status in (180, 183):
            return [call.signal(CallEvent.RINGING, packet.at, self._offers(response, Side.CALLEE))]
        if 200 <= status < 300:
            return self._answer(call, response, packet)
        if status < 300:
            return []
        if status in RETRY_ASKED or status < 400:
            call.refusal = Refusal(status, packet.at)  # ends unless the caller tries again
            return []
        call.ended = True
        return [call.signal(CallEvent.END, packet.at, reason=str(status))]

    def _answer(self, call: Call, response: SipMessage, packet: Packet) -> list[Observation]:
        call.answered = True
        call.refusal = None  # answered after all (a stray or forged refusal before it)
        self._unanswered.pop(call.call_id, None)
        sender_ip = ua_source(response, packet)
        call.callee_ip = sender_ip or call.callee_ip
        offers = self._offers(response, Side.CALLEE)
        call.media_changed(Side.CALLEE, offers)
        callee = extension_of(response.to.uri) or call.callee
        aliases = extension_aliases(response.to.uri)
        seen = self._call_binding(call, response, callee, sender_ip, packet.at, aliases)
        return [*seen, call.signal(CallEvent.ANSWER, packet.at, offers)]

    def _pick_up(self, response: SipMessage, packet: Packet) -> list[Observation]:
        """A 2xx to an INVITE we never saw: the capture started mid-call."""
        call = Call(
            call_id=response.call_id,
            protocol=protocol_of(response),
            caller=extension_of(response.from_.uri),
            caller_name=response.from_.display_name,
            callee=extension_of(response.to.uri),
            callee_name=response.to.display_name,
            caller_ip="",
            caller_tag=response.from_.tag,
            invite_cseq=response.cseq.number,
            last_seen=packet.at,
        )
        call.first_time(step_of(response))
        started = self._add_call(call)
        return [
            *started,
            call.signal(CallEvent.START, packet.at),
            *self._answer(call, response, packet),
        ]

    def _on_offer(self, request: SipMessage, packet: Packet) -> list[Observation]:
        """ACK (late offer's answer), PRACK or UPDATE carrying SDP (RFC 3264, RFC 3311)."""
        call = self._calls.get(request.call_id)
        if call is None or call.ended:
            return []
        self._touch(call, packet.at)
        if not call.first_time(step_of(request)):
            return []
        if request.method == "UPDATE":
            return self._offer_in_dialog(call, request, packet.at)
        late = call.late_offer
        if request.method == "ACK" and late is not None and late.of(request):
            return self._late_answer(call, request, packet.at)
        return self._media_update(call, request, packet.at)

    def _on_update_response(self, response: SipMessage, packet: Packet) -> list[Observation]:
        call = self._calls.get(response.call_id)
        if call is None or call.ended or not 200 <= response.status < 300:
            return []
        if not call.first_time(step_of(response)):
            return []
        return self._answer_in_dialog(call, response, packet.at)

    def _offer_in_dialog(self, call: Call, request: SipMessage, at: datetime) -> list[Observation]:
        """A re-INVITE or UPDATE offer: hold, resume or a media move (RFC 3264 §8). A
        re-INVITE without SDP asks for the offer: it comes in the 2xx (§14.1)."""
        sdp = self._sdp(request)
        if sdp is None:
            if request.method == "INVITE" and not request.body.strip():
                call.late_offer = LateOffer(request.from_.tag, request.cseq.number)
            return []
        side = call.side_of(request.from_.tag, response=False)
        offers = media_offers(sdp, side)
        return self._agreed(call, holds(sdp), offers, call.media_changed(side, offers), at)

    def _late_answer(self, call: Call, request: SipMessage, at: datetime) -> list[Observation]:
        """The ACK answering the offer a 2xx made (§13.2.1): the session is now what the two
        agreed, held when either the offer or this answer holds (RFC 3264 §8.4)."""
        late, sdp = call.late_offer, self._sdp(request)
        if late.offer_holds is None or sdp is None:
            return self._media_update(call, request, at)
        call.late_offer = None
        side = call.side_of(request.from_.tag, response=False)
        offers = media_offers(sdp, side)
        known = side in call.receive_at
        moved = call.media_changed(side, offers) or not known
        return self._agreed(call, late.offer_holds or holds(sdp), offers, moved, at)

    def _agreed(
        self, call: Call, held: bool, offers: tuple[MediaOffer, ...], moved: bool, at: datetime
    ) -> list[Observation]:
        """HOLD or RESUME when the session goes on or off hold, else MEDIA when it moved."""
        if held != call.on_hold:
            call.on_hold = held
            return [call.signal(CallEvent.HOLD if held else CallEvent.RESUME, at, offers)]
        return [call.signal(CallEvent.MEDIA, at, offers)] if moved else []

    def _media_update(self, call: Call, request: SipMessage, at: datetime) -> list[Observation]:
        """SDP outside hold logic: a late-offer answer in ACK, an offer in PRACK or a retried
        INVITE. MEDIA when the sender's receive address is new or moved."""
        side = call.side_of(request.from_.tag, response=False)
        return self._media_signal(call, side, self._offers(request, side), at)

    def _answer_in_dialog(
        self, call: Call, response: SipMessage, at: datetime
    ) -> list[Observation]:
        """A 2xx answering a re-INVITE or UPDATE: MEDIA when the answerer moved."""
        if not 200 <= response.status < 300:
            return []
        side = call.side_of(response.from_.tag, response=True)
        sdp = self._sdp(response)
        late = call.late_offer
        if late is not None and late.of(response) and sdp is not None:
            late.offer_holds = holds(sdp)  # the offer: its answer comes in the ACK
        return self._media_signal(call, side, media_offers(sdp, side), at)

    def _media_signal(
        self, call: Call, side: Side, offers: tuple[MediaOffer, ...], at: datetime
    ) -> list[Observation]:
        if not offers:
            return []
        known = side in call.receive_at
        moved = call.media_changed(side, offers)
        return [call.signal(CallEvent.MEDIA, at, offers)] if moved or not known else []

    def _on_bye(self, request: SipMessage, packet: Packet) -> list[Observation]:
        return self._end(request, packet, "bye", before_answer=False)

    def _on_cancel(self, request: SipMessage, packet: Packet) -> list[Observation]:
        return self._end(request, packet, "cancel", before_answer=True)

    def _end(
        self, request: SipMessage, packet: Packet, reason: str, *, before_answer: bool
    ) -> list[Observation]:
        call = self._calls.get(request.call_id)
        if call is None or call.ended or (before_answer and call.answered):
            return []
        self._touch(call, packet.at)
        call.ended, call.refusal = True, None
        return [call.signal(CallEvent.END, packet.at, reason=reason)]

    def _on_refer(self, request: SipMessage, packet: Packet) -> list[Observation]:
        """REFER (RFC 3515 §2.4.1): the call is being transferred to the Refer-To target."""
        call = self._calls.get(request.call_id)
        refer_to = request.header("refer-to")
        if call is None or call.ended or refer_to is None:
            return []
        self._touch(call, packet.at)
        if not call.first_time(step_of(request)):
            return []
        target = parse_name_addr(refer_to).uri_text.partition("?")[0]
        return [call.signal(CallEvent.TRANSFER, packet.at, reason=target)]

    # -- helpers --------------------------------------------------------------------------

    def _call_binding(
        self,
        call: Call,
        message: SipMessage,
        extension: str,
        ip: str,
        at: datetime,
        aliases: tuple[str, ...] = (),
    ) -> list[Observation]:
        """R6: a phone's own INVITE or answer says where its extension is."""
        if not extension or not ip:
            return []
        source = binding_source(call.protocol, BindingSource.SIP_CALL)
        device = sip_instance(message.contacts[0]) if message.contacts else ""
        seen = BindingSeen(extension, ip, source, at, device=device, aliases=aliases)
        return self._not_at_registrar([seen])

    def _offers(self, message: SipMessage, side: Side) -> tuple[MediaOffer, ...]:
        return media_offers(self._sdp(message), side)

    def _sdp(self, message: SipMessage) -> SessionDescription | None:
        """The SDP of a message; a broken body is counted and the message still counts."""
        try:
            return message.sdp
        except SipDecodeError as error:
            self.errors[error.kind] += 1
            return None

    def _add_call(self, call: Call) -> list[Observation]:
        self._calls[call.call_id] = call
        self._unanswered[call.call_id] = None
        if len(self._calls) <= self.max_calls:
            return []
        self.errors["call-table-full"] += 1
        evicted = self._calls.pop(self._eviction_candidate(call.call_id))
        self._unanswered.pop(evicted.call_id, None)
        if not evicted.ended:
            return [evicted.signal(CallEvent.END, call.last_seen, reason="evicted")]
        return []

    def _eviction_candidate(self, newest: str) -> str:
        """The oldest call not answered but the new one, else the least recently active."""
        oldest = next(iter(self._unanswered))
        return oldest if oldest != newest else next(iter(self._calls))

    def _touch(self, call: Call, at: datetime) -> None:
        call.last_seen = max(call.last_seen, at)
        self._calls.move_to_end(call.call_id)

    def _bound(self, table: OrderedDict, limit: int, kind: str) -> object | None:
        if len(table) <= limit:
            return None
        self.errors[kind] += 1
        return table.popitem(last=False)[1]

    def _is_stale(self, call: Call, now: datetime) -> bool:
        idle = now - call.last_seen
        if call.ended:
            return idle > self.ended_linger
        return idle > (self.call_idle_timeout if call.answered else self.ringing_timeout)


def transaction_key(message: SipMessage) -> tuple[str, int, str]:
    """Call-ID, CSeq number and top Via branch (§17.1.3, §17.2.3): the branch tells apart a
    phone's REGISTER from the one a proxy sends onward with the same Call-ID and CSeq."""
    branch = (message.vias[0].param("branch") or "") if message.vias else ""
    return message.call_id, message.cseq.number, branch


def packet_at(src: Endpoint, dst: Endpoint, at: datetime, transport: str) -> Packet:
    """The packet, with its addresses in the compressed form call bindings use."""
    return Packet(compressed(src), compressed(dst), at, transport)


def compressed(endpoint: Endpoint) -> Endpoint:
    """The endpoint with its IP in compressed form: the endpoint itself when it already is
    (an IPv4 address always), as the copy would equal it."""
    ip = normalize_ip(endpoint.ip) or endpoint.ip
    if ip == endpoint.ip and type(endpoint.ip) is str:
        return endpoint
    return Endpoint(ip, endpoint.port)


def ua_source(message: SipMessage, packet: Packet) -> str:
    """The packet source IP when the phone sent the message itself, else empty."""
    if message.is_request and len(message.vias) != 1:
        return ""
    contact_ip = message.contacts[0].uri.host_ip if message.contacts else None
    return packet.src.ip if contact_ip == packet.src.ip else ""


def originating_ip(request: SipMessage, packet: Packet) -> str:
    """The caller's IP when a proxy relayed the INVITE: the bottom Via is the phone's own
    (§16.6 step 8), with the `received` address the first hop saw when there is one."""
    if len(request.vias) <= 1:
        return packet.src.ip
    phone_via = request.vias[-1]
    return (
        normalize_ip(phone_via.param("received") or "")
        or normalize_ip(phone_via.host)
        or packet.src.ip
    )


def unseen_register(response: SipMessage, packet: Packet) -> PendingRegister:
    """A 2xx whose REGISTER the capture missed: the response goes back to where the REGISTER
    came from, so its destination stands in for the request's source."""
    return PendingRegister(
        at=packet.at,
        phone_ip=packet.dst.ip,
        extension=extension_of(response.to.uri),
        contacts=(),
        contact_star=False,
        expires=None,
        protocol=protocol_of(response),
    )
