"""The state the tracker keeps for one SIP call (one Call-ID, RFC 3261 §12).

A call is keyed by Call-ID alone: a passive recorder on a mirror port often sees both legs of
a call that a proxy forwards (the hairpin in rtppcap-SIP_DTMF2.pcap carries one Call-ID on the
phone->proxy and proxy->phone legs), and both legs are the same conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from integrations.observations import (
    CallEvent,
    CallProtocol,
    CallSignal,
    Endpoint,
    MediaOffer,
    Side,
    direct_init,
)
from integrations.sip.message import SipMessage
from integrations.sip.sdp import SessionDescription

MAX_REMEMBERED_STEPS = 64


@direct_init
@dataclass(frozen=True, slots=True)
class Refusal:
    """A final response that refused the INVITE of a call not answered, and asked the caller
    to try again (a challenge, a redirect, 422, 488, 491, ...): the call waits for the retry."""

    status: int
    at: datetime


@dataclass(slots=True)
class LateOffer:
    """A re-INVITE sent without SDP: the 2xx to it carries the offer and the ACK the answer
    (RFC 3261 §14.1, §13.2.1). Kept by the sender's From tag and the CSeq number, which the
    2xx and the ACK copy; `offer_holds` is None until the 2xx has made its offer."""

    tag: str
    cseq: int
    offer_holds: bool | None = None

    def of(self, message: SipMessage) -> bool:
        return (message.from_.tag, message.cseq.number) == (self.tag, self.cseq)


@dataclass(slots=True)
class Call:
    call_id: str
    protocol: CallProtocol
    caller: str
    caller_name: str
    callee: str
    callee_name: str
    caller_ip: str
    caller_tag: str
    invite_cseq: int
    last_seen: datetime
    callee_ip: str = ""
    answered: bool = False
    ended: bool = False
    on_hold: bool = False
    refusal: Refusal | None = None
    late_offer: LateOffer | None = None
    receive_at: dict[Side, tuple[Endpoint, ...]] = field(default_factory=dict)
    steps: dict[tuple[object, ...], None] = field(default_factory=dict)

    def first_time(self, step: tuple[object, ...]) -> bool:
        """False for a retransmission: a step (`step_of`) this call has already shown
        (§17.1.1.2, §17.2.1)."""
        if step in self.steps:
            return False
        if len(self.steps) >= MAX_REMEMBERED_STEPS:
            del self.steps[next(iter(self.steps))]
        self.steps[step] = None
        return True

    def side_of(self, from_tag: str, *, response: bool) -> Side:
        """Who sent a message: a request's From is its sender; a response copies the From
        of the request it answers, so it comes from the other side (§8.2.6.2)."""
        from_caller = not self.caller_tag or from_tag == self.caller_tag
        return Side.CALLER if from_caller != response else Side.CALLEE

    def media_changed(self, side: Side, offers: tuple[MediaOffer, ...]) -> bool:
        """Records where `side` receives; True when that differs from what it said before."""
        endpoints = tuple(offer.receive_at for offer in offers)
        previous = self.receive_at.get(side)
        self.receive_at[side] = endpoints
        return previous is not None and previous != endpoints

    def signal(
        self,
        event: CallEvent,
        at: datetime,
        media: tuple[MediaOffer, ...] = (),
        reason: str = "",
    ) -> CallSignal:
        return CallSignal(
            call_id=self.call_id,
            event=event,
            at=at,
            protocol=self.protocol,
            caller=self.caller,
            caller_name=self.caller_name,
            callee=self.callee,
            callee_name=self.callee_name,
            caller_ip=self.caller_ip,
            callee_ip=self.callee_ip,
            media=media,
            reason=reason,
        )


def step_of(message: SipMessage) -> tuple[object, ...]:
    """What tells a message from its retransmissions: for a request its CSeq and method,
    for a response also its status. Each party of a dialog numbers its own requests (RFC 3261
    §12.2.1.1) and two may use the same number (Cisco phones and CallManager both begin at
    101), so the step names whose CSeq it is by the From tag, which a response copies."""
    cseq = message.cseq
    if message.is_request:
        return ("request", message.from_.tag, cseq.number, message.method)
    return ("response", message.from_.tag, cseq.number, cseq.method, message.status)


def media_offers(sdp: SessionDescription | None, side: Side) -> tuple[MediaOffer, ...]:
    """One MediaOffer per audio stream in use (RFC 4566 §5.14; port 0 is left out)."""
    if sdp is None:
        return ()
    return tuple(
        MediaOffer(
            side=side,
            receive_at=Endpoint(stream.address, stream.port),
            payload_types=stream.payload_types,
            mode=stream.direction,
            encrypted=stream.encrypted,
        )
        for stream in sdp.audio
        if stream.address
    )


def holds(sdp: SessionDescription | None) -> bool:
    return sdp is not None and any(stream.holds for stream in sdp.audio)
