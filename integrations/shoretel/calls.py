"""ShoreTel calls from the TAPI feed, and the unsignalled recordings they explain.

A ShoreTel phone's signalling is not on the wire, so the engine records its RTP as an
unsignalled call of the phone's IP (recorder/engine/engine.py, `_unsignalled`): no parties, no
direction, a call id of its own. The TAPI feed says the rest. The rule that ties the two
(docs/tapi-bridge.md, "From TAPI calls to recordings"):

  An unsignalled recording whose local IP is a ShoreTel phone belongs to the TAPI call on
  that phone whose talking time (connected and not on hold: from each connected to the
  next hold or end, or to now while it lasts) overlaps the recording's RTP the longest,
  counting calls that come within SLACK of it.

Either side may arrive first: the rule runs when a recording is finalised (a post_save
signal) and again whenever the feed changes a call, and it always re-decides from scratch,
so the outcome does not depend on the order. The recording then takes the call's id,
direction, line and far party; the Call row keeps what the wire showed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.db.models import Q

from extensions.models import Extension
from extensions.services import where_was
from integrations.observations import (
    UNSIGNALLED_CALL_PREFIX,
    CallDirection,
    CallEvent,
    CallProtocol,
    CallSignal,
    Side,
)
from integrations.shoretel.bridge.protocol import STEPS, FeedEvent, TapiState, direction_of
from integrations.shoretel.models import (
    TAPI_CALL_PREFIX,
    TapiBridge,
    TapiCall,
    TapiEvent,
    TapiRecording,
)
from recorder.models import Call, Recording
from recorder.recordings.attribution import ReportedCall, adopt_call

log = logging.getLogger(__name__)

# Event times and RTP times come from different clocks (the bridge's, corrected, and the
# capture node's) and TAPI reports a state a moment after the phone acts on it.
SLACK = timedelta(seconds=2)
# How far back a recording without an end may have started and still be a call's.
LONGEST_CALL = timedelta(days=1)
TALKING = {TapiState.CONNECTED, TapiState.CONFERENCED}
PAUSING = {CallEvent.HOLD, CallEvent.END}


# The feed's calls --------------------------------------------------------------------------


def note_call(bridge: TapiBridge, event: FeedEvent) -> TapiCall:
    """Merge one call event into its TapiCall. Merging is order-free and idempotent: the
    earliest connect and end win, the latest event sets the state, so a replayed or
    late event changes nothing twice."""
    signal = event.observation
    assert isinstance(signal, CallSignal)
    call = TapiCall.objects.select_for_update().filter(bridge=bridge, call_id=event.call_id).first()
    if call is None:
        call = TapiCall(
            bridge=bridge,
            call_id=event.call_id,
            extension=event.extension,
            local_side=signal.local_side,
            state=event.state,
            started_at=signal.at,
            last_event_at=signal.at,
        )
    call.bridge = bridge
    _merge_times(call, event, signal)
    _merge_parties(call, event, signal)
    if call.phone_ip is None:
        call.phone_ip = (signal.caller_ip or signal.callee_ip) or where_was(
            call.extension, signal.at
        )
    call.save()
    return call


def _merge_times(call: TapiCall, event: FeedEvent, signal: CallSignal) -> None:
    at = signal.at
    call.started_at = min(call.started_at, at)
    if signal.event == CallEvent.ANSWER:
        call.connected_at = min(call.connected_at or at, at)
    elif signal.event == CallEvent.END:
        call.ended_at = min(call.ended_at or at, at)
    if at >= call.last_event_at:
        call.state, call.last_event_at = event.state, at


def _merge_parties(call: TapiCall, event: FeedEvent, signal: CallSignal) -> None:
    for name in ("caller", "caller_name", "callee", "callee_name"):
        value = getattr(signal, name)
        if value:
            setattr(call, name, value[:128])
    if event.origin:
        call.origin = event.origin
    # The side is only a guess from the state when the event names neither party nor
    # origin; a guess never overrides what an earlier event said plainly.
    if signal.caller or signal.callee or event.origin or not call.pk:
        call.local_side = signal.local_side
    call.direction = _direction(call)


def _direction(call: TapiCall) -> CallDirection:
    """TAPI's origin says internal only on the called line; a call placed to a number
    QMS knows as an extension is internal too."""
    direction = direction_of(Side(call.local_side), call.origin)
    far_number, _ = call.far_party
    if direction != CallDirection.INTERNAL and far_number and _is_extension(far_number):
        return CallDirection.INTERNAL
    return direction


def _is_extension(number: str) -> bool:
    return Extension.objects.filter(number=number).exists()


# Recordings --------------------------------------------------------------------------------


def link_recordings_of(call: TapiCall) -> set[int]:
    """Run the rule for every finished unsignalled recording near `call` on its phone;
    return the recordings now tied to a call (this one or another that suits them better)."""
    if call.phone_ip is None or call.connected_at is None:
        return set()
    start = call.connected_at - SLACK
    nearby = Recording.objects.filter(
        local_ip=call.phone_ip,
        signalling__protocol=CallProtocol.RTP,
        status__in=Recording.STORED_STATUSES,
        started_at__gte=start - LONGEST_CALL,
    ).filter(Q(ended_at__gte=start) | Q(ended_at__isnull=True))
    if call.ended_at is not None:
        nearby = nearby.filter(started_at__lte=call.ended_at + SLACK)
    return {recording.pk for recording in nearby if link_recording(recording) is not None}


def link_recording(recording: Recording) -> TapiRecording | None:
    """Tie an unsignalled recording to the TAPI call it was, or leave it as it is."""
    if not recording.local_ip:
        return None
    found = best_call(recording)
    if found is None:
        return None
    call, overlap = found
    link, _ = TapiRecording.objects.update_or_create(
        recording=recording, defaults={"tapi_call": call, "overlap_seconds": overlap}
    )
    take_call(recording, call)
    return link


def best_call(recording: Recording) -> tuple[TapiCall, float] | None:
    start, end = recording.started_at, recording_end(recording)
    candidates = (
        TapiCall.objects.filter(
            phone_ip=recording.local_ip,
            connected_at__isnull=False,
            connected_at__lte=end + SLACK,
        )
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=start - SLACK))
        .select_related("bridge")
    )
    scored = [(call, overlap(call, start, end)) for call in candidates]
    scored = [(call, seconds) for call, seconds in scored if seconds > -SLACK.total_seconds()]
    if not scored:
        return None
    return max(scored, key=lambda pair: (pair[1], pair[0].connected_at))


def overlap(call: TapiCall, start: datetime, end: datetime) -> float:
    """Seconds the call was talking while the recording ran; when not at all, the
    (negative) gap between them, so that a call just out of reach can be told from one
    far away."""
    spans = [
        (min(end, until or end) - max(start, since)).total_seconds()
        for since, until in talk_intervals(call)
    ]
    talking = sum(span for span in spans if span > 0)
    return talking if talking > 0 else max(spans)


def talk_intervals(call: TapiCall) -> list[tuple[datetime, datetime | None]]:
    """When the call was connected and not on hold, from its events in the feed, walked
    in time order (a restart's replay of a state already in force changes nothing).
    Events past QMS_TAPI_EVENTS_KEEP_DAYS are forgotten: then connect to end."""
    events = (
        TapiEvent.objects.filter(bridge_id=call.bridge_id, call_id=call.call_id, kind="call")
        .order_by("at", "pk")
        .values_list("at", "state")
    )
    intervals, since = [], None
    for at, state in events:
        if state in TALKING:
            since = since or at
        elif since is not None and STEPS.get(state) in PAUSING:
            intervals.append((since, at))
            since = None
    if since is not None:
        intervals.append((since, call.ended_at))
    return intervals or [(call.connected_at, call.ended_at)]


def recording_end(recording: Recording) -> datetime:
    if recording.ended_at is not None:
        return recording.ended_at
    return recording.started_at + timedelta(seconds=recording.duration_seconds)


def take_call(recording: Recording, call: TapiCall) -> None:
    """The recording becomes the call's: the recorder writes it (one attribution place)."""
    far_number, far_name = call.far_party
    adopt_call(
        recording,
        ReportedCall(call.qms_call_id, call.direction, call.extension, far_number, far_name),
    )


def recording_saved(sender: type, instance: Recording, **kwargs: object) -> None:
    """post_save of a Recording: a finished unsignalled one looks for its TAPI call.

    This runs inside whatever saved the recording (the capture's writer thread, a
    Celery task). Whatever goes wrong here is logged and must not undo the recording, so
    the work has a savepoint of its own and every failure stops at this edge."""
    if (
        instance.status not in Recording.STORED_STATUSES
        or not instance.local_ip
        or instance.signalling_id is None
    ):
        return
    # The engine names its unsignalled calls rtp:..., linked recordings are tapi:...: the
    # prefix spares every SIP and SCCP recording a query.
    if not instance.call_id.startswith((UNSIGNALLED_CALL_PREFIX, TAPI_CALL_PREFIX)):
        return
    try:
        with transaction.atomic():
            if Call.objects.filter(pk=instance.signalling_id, protocol=CallProtocol.RTP).exists():
                link_recording(instance)
    except DatabaseError as error:
        log.error("could not look up the TAPI call of recording %s: %s", instance.pk, error)
    except Exception:
        log.exception("could not look up the TAPI call of recording %s", instance.pk)
