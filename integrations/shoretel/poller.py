"""Polling TAPI bridges: their feed and lines into the directory and the call history.

One poll of one bridge (docs/tapi-bridge.md, "How QMS polls"):

1. Claim the bridge with a conditional UPDATE of its lease, so two workers never poll it
   at once.
2. Read the event feed from the stored cursor, page by page. Each page is applied in one
   transaction with the cursor that follows it, every event in a savepoint of its own;
   an event whose id was seen before changes nothing. Line events are bindings through
   the directory's apply_binding (source tapi), call events merge into TapiCalls, and
   every call touched is offered its unsignalled recordings (integrations.shoretel.calls).
3. A new boot id means the bridge restarted: its old cursor means nothing now, so the feed
   is read again from the beginning (what the bridge reports again is merged, never
   doubled). HTTP 410 means the bridge has lost the cursor: the same.
4. After the feed, the line list, when due (QMS_TAPI_LINES_SECONDS, or after a restart):
   each line refreshes its binding, and a line gone since the last list is unregistered.
5. Times are put on QMS's clock: each answer's server_time (or Date header) measures the
   bridge's clock, and an offset of a second or more is taken off every time it reports.

Failures (down, timeout, redirects, HTTP errors, bad JSON, and whatever else an answer
makes go wrong) are logged, counted and shown in the admin; the next polls back off,
doubling up to five minutes. A malformed event, or one whose time is out of range, is
rejected and counted on its own: the rest of its page is applied and the cursor moves on.
A poll learns at most MAX_NEW_EXTENSIONS extensions QMS has never seen; bindings of
further new ones are held back and counted, so a bridge cannot flood the directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from extensions.models import Extension, SeenExtension
from extensions.services import apply_binding
from integrations.bounds import Refused, bounded
from integrations.observations import BindingSeen, BindingSource, CallSignal
from integrations.shoretel.bridge.client import (
    BridgeClient,
    BridgeError,
    CursorGone,
    Exchange,
)
from integrations.shoretel.bridge.protocol import (
    ZERO,
    EventsPage,
    FeedEvent,
    LinesPage,
    format_time,
)
from integrations.shoretel.calls import link_recordings_of, note_call
from integrations.shoretel.models import TapiBridge, TapiBridgeState, TapiCall, TapiEvent

log = logging.getLogger(__name__)

PAGE_LIMIT = 500
# Pages read per poll at most; a longer backlog waits for the next poll.
MAX_PAGES = 20
MAX_BACKOFF = 300.0
# Extensions QMS has never seen that one poll may learn; a real ShoreTel system adds a
# handful at a time, a hostile or broken bridge thousands.
MAX_NEW_EXTENSIONS = 100
LEASE = timedelta(minutes=5)
STATE_FIELDS = [
    "boot_id",
    "cursor",
    "events_applied",
    "duplicates_skipped",
    "events_rejected",
    "restarts_seen",
    "clock_offset_seconds",
    "new_extensions_held",
]


@dataclass
class PollReport:
    """What one poll of one bridge did: `outcome` is ok, busy, or the failure's kind."""

    bridge: str
    outcome: str = "ok"
    events: int = 0
    duplicates: int = 0
    bindings: int = 0
    calls: int = 0
    linked: int = 0
    rejected: int = 0
    restarts: int = 0
    held: int = 0


class InternalError(BridgeError):
    """QMS could not handle what the bridge answered: a bug, or an answer no check foresaw."""

    kind = "internal-error"


def poll_due_bridges(now: datetime) -> list[PollReport]:
    """Poll every enabled bridge whose next poll is due; one bridge's trouble never stops
    the others."""
    reports = []
    for bridge in TapiBridge.objects.filter(enabled=True):
        state = state_of(bridge)
        if state.next_poll_at is not None and state.next_poll_at > now:
            continue
        try:
            reports.append(poll_bridge(bridge, now))
        except Exception:
            log.exception("polling TAPI bridge %s failed", bridge)
            reports.append(PollReport(bridge.name, "internal-error"))
    forget_old_events(now)
    return reports


def forget_old_events(now: datetime) -> int:
    """Events are kept to recognise duplicates; past QMS_TAPI_EVENTS_KEEP_DAYS their
    cursor is long gone and their effects are in the directory and the calls."""
    horizon = now - timedelta(days=settings.QMS_TAPI_EVENTS_KEEP_DAYS)
    deleted, _ = TapiEvent.objects.filter(received_at__lt=horizon).delete()
    return deleted


def state_of(bridge: TapiBridge) -> TapiBridgeState:
    state, _ = TapiBridgeState.objects.get_or_create(bridge=bridge)
    return state


def poll_bridge(bridge: TapiBridge, now: datetime | None = None) -> PollReport:
    now = now or timezone.now()
    state = state_of(bridge)
    if not claim(state, now):
        return PollReport(bridge.name, "busy")
    poll = Poll(bridge, state, now)
    try:
        poll.run()
    except BridgeError as error:
        poll.failed(error)
    except Exception as error:
        # The poll's edge: whatever went wrong is recorded, shown and backed off like a
        # bridge failure, never retried at every beat with nothing in the admin.
        log.exception("polling TAPI bridge %s failed", bridge)
        state.refresh_from_db()  # what the failed page left in memory was never stored
        poll.failed(InternalError(f"{type(error).__name__}: {error}"))
    else:
        poll.succeeded()
    finally:
        release(state)
    return poll.report


def claim(state: TapiBridgeState, now: datetime) -> bool:
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    return bool(
        TapiBridgeState.objects.filter(pk=state.pk).filter(free).update(lease_until=now + LEASE)
    )


def release(state: TapiBridgeState) -> None:
    TapiBridgeState.objects.filter(pk=state.pk).update(lease_until=None)


def interval_of(bridge: TapiBridge) -> float:
    return float(bridge.poll_seconds or settings.QMS_TAPI_POLL_SECONDS)


class Poll:
    def __init__(self, bridge: TapiBridge, state: TapiBridgeState, now: datetime) -> None:
        self.bridge = bridge
        self.state = state
        self.now = now
        self.report = PollReport(bridge.name)
        self.latency = 0.0
        self.new_extensions = 0
        self.client = BridgeClient(bridge.url, bridge.token, settings.QMS_TAPI_TIMEOUT_SECONDS)

    def run(self) -> None:
        self.read_feed()
        if self.lines_due():
            self.read_lines()

    # The feed ----------------------------------------------------------------------------

    def read_feed(self) -> None:
        for _ in range(MAX_PAGES):
            try:
                page, exchange = self.client.events(self.state.cursor, PAGE_LIMIT)
            except CursorGone as gone:
                if not self.state.cursor:
                    raise  # not even the beginning of the feed: the bridge is broken
                self.start_over(gone)
                continue
            page = page.shifted(self.clock_correction(page.envelope.server_time, exchange))
            if page.envelope.boot_id != self.state.boot_id:
                answered_old_cursor = bool(self.state.cursor)
                self.new_boot(page.envelope.boot_id)
                if answered_old_cursor:
                    continue  # read again from the beginning of this boot's feed
            self.apply_page(page)
            if not page.more:
                return

    def start_over(self, gone: CursorGone) -> None:
        log.warning(
            "TAPI bridge %s no longer has cursor %r (%s): reading its feed from the beginning",
            self.bridge,
            self.state.cursor,
            gone,
        )
        if gone.boot_id and gone.boot_id != self.state.boot_id:
            self.new_boot(gone.boot_id)
        self.state.cursor = ""
        self.state.lines_read_at = None

    def new_boot(self, boot_id: str) -> None:
        if self.state.boot_id:
            log.warning(
                "TAPI bridge %s restarted (boot id %s, was %s): reading its feed from the "
                "beginning; what it reports again is merged, not doubled",
                self.bridge,
                boot_id,
                self.state.boot_id,
            )
            self.state.restarts_seen += 1
            self.report.restarts += 1
        self.state.boot_id = boot_id
        self.state.cursor = ""
        self.state.lines_read_at = None  # what it knows of the lines is read again too

    def apply_page(self, page: EventsPage) -> None:
        for reason in page.rejected:
            log.warning("TAPI bridge %s sent a malformed %s; skipped", self.bridge, reason)
        self.report.rejected += len(page.rejected)
        self.state.events_rejected += len(page.rejected)
        touched: dict[int, TapiCall] = {}
        linked: set[int] = set()
        with transaction.atomic():
            for event in page.events:
                call = self.apply_event(event, page.envelope.boot_id)
                if call is not None:
                    touched[call.pk] = call
            for call in touched.values():
                linked |= self.link(call)
            self.report.linked += len(linked)
            self.state.cursor = page.next_cursor
            self.state.save(update_fields=STATE_FIELDS)

    def apply_event(self, event: FeedEvent, boot_id: str) -> TapiCall | None:
        # The loop's edge: one event that cannot be stored is logged and counted; the
        # rest of the page goes on.
        try:
            with transaction.atomic():
                return self._apply(event, boot_id)
        except DatabaseError as error:
            log.error("TAPI bridge %s: could not store event %s: %s", self.bridge, event, error)
        except Exception:
            log.exception("TAPI bridge %s: could not apply event %s", self.bridge, event)
        self.report.rejected += 1
        self.state.events_rejected += 1
        return None

    def link(self, call: TapiCall) -> set[int]:
        try:
            with transaction.atomic():
                return link_recordings_of(call)
        except DatabaseError as error:
            log.error("TAPI call %s: could not tie its recordings: %s", call, error)
        except Exception:
            log.exception("TAPI call %s: could not tie its recordings", call)
        return set()

    def _apply(self, event: FeedEvent, boot_id: str) -> TapiCall | None:
        _, created = TapiEvent.objects.get_or_create(
            bridge=self.bridge,
            event_id=event.event_id,
            defaults={
                "boot_id": boot_id,
                "at": event.at,
                "kind": event.kind[:20],
                "state": event.state[:32],
                "extension": event.extension[:128],
                "call_id": event.call_id[:200],
                "payload": event.payload,
            },
        )
        if not created:
            self.report.duplicates += 1
            self.state.duplicates_skipped += 1
            return None
        self.report.events += 1
        self.state.events_applied += 1
        observation = event.observation
        if isinstance(observation, BindingSeen):
            kept = self.kept(observation)
            if kept is not None:
                apply_binding(kept)
                self.report.bindings += 1
        elif isinstance(observation, CallSignal):
            self.report.calls += 1
            return note_call(self.bridge, event)
        return None

    # Lines -------------------------------------------------------------------------------

    def lines_due(self) -> bool:
        read_at = self.state.lines_read_at
        return read_at is None or self.now - read_at >= timedelta(
            seconds=settings.QMS_TAPI_LINES_SECONDS
        )

    def read_lines(self) -> None:
        page, exchange = self.client.lines()
        correction = self.clock_correction(page.envelope.server_time, exchange)
        if page.envelope.boot_id != self.state.boot_id:
            # Restarted since the feed was read: the next poll reads both afresh.
            self.new_boot(page.envelope.boot_id)
            return
        seen_at = (page.envelope.server_time or self.now) - correction
        with transaction.atomic():
            self.apply_lines(page, seen_at)
            self.state.lines_read_at = self.now
            self.state.save(update_fields=[*STATE_FIELDS, "lines", "lines_read_at"])

    def apply_lines(self, page: LinesPage, seen_at: datetime) -> None:
        for reason in page.rejected:
            log.warning("TAPI bridge %s listed a malformed %s; skipped", self.bridge, reason)
        current = {(line.extension, line.ip) for line in page.lines if line.ip and line.in_service}
        gone = {tuple(pair) for pair in self.state.lines} - current
        bindings = [line.binding(seen_at) for line in page.lines]
        bindings += [
            BindingSeen(extension, ip, BindingSource.TAPI, seen_at, unregister=True)
            for extension, ip in sorted(gone)
        ]
        for binding in bindings:
            if binding is not None and self.apply_line(binding):
                self.report.bindings += 1
        self.state.lines = sorted([extension, ip] for extension, ip in current)

    def kept(self, binding: BindingSeen) -> BindingSeen | None:
        """The binding as the directory may take it: bounded as every observation from a
        call system is (integrations/bounds.py), and within this poll's new extensions."""
        try:
            bounded_binding = bounded(binding)
        except Refused as refused:
            log.warning("TAPI bridge %s: %s refused (%s)", self.bridge, binding, refused.kind)
            self.report.rejected += 1
            return None
        return bounded_binding if self.admits(bounded_binding) else None

    def admits(self, binding: BindingSeen) -> bool:
        """Whether this binding may be applied: its extension is known, or the poll has not
        yet learned its MAX_NEW_EXTENSIONS new ones."""
        number = binding.extension
        if Extension.objects.filter(number=number).exists():
            return True
        if SeenExtension.objects.filter(number=number).exists():
            return True
        if self.new_extensions < MAX_NEW_EXTENSIONS:
            self.new_extensions += 1
            return True
        if not self.report.held:
            log.warning(
                "TAPI bridge %s names more than %d extensions QMS has never seen in one "
                "poll: the bindings of the others are held back",
                self.bridge,
                MAX_NEW_EXTENSIONS,
            )
        self.report.held += 1
        self.state.new_extensions_held += 1
        return False

    def apply_line(self, binding: BindingSeen) -> bool:
        kept = self.kept(binding)
        if kept is None:
            return False
        try:
            with transaction.atomic():
                apply_binding(kept)
            return True
        except DatabaseError as error:
            log.error("TAPI bridge %s: could not apply %s: %s", self.bridge, binding, error)
        except Exception:
            log.exception("TAPI bridge %s: could not apply %s", self.bridge, binding)
        return False

    # Clock -------------------------------------------------------------------------------

    def clock_correction(self, server_time: datetime | None, exchange: Exchange) -> timedelta:
        self.latency = max(self.latency, exchange.latency)
        reading = exchange.clock(server_time)
        if reading is None:
            return ZERO
        previous = self.state.clock_offset_seconds
        self.state.clock_offset_seconds = round(reading.offset, 3)
        correction = reading.correction()
        if correction and (previous is None or abs(previous - reading.offset) >= 1.0):
            log.warning(
                "TAPI bridge %s's clock is %.1f s %s QMS's (bridge time %s): its times are "
                "corrected by that much",
                self.bridge,
                abs(reading.offset),
                "ahead of" if reading.offset > 0 else "behind",
                format_time(server_time) if server_time else "from its Date header",
            )
        return correction

    # Outcome -----------------------------------------------------------------------------

    def succeeded(self) -> None:
        state = self.state
        state.last_poll_at = state.last_success_at = self.now
        state.consecutive_failures = 0
        state.last_latency_ms = round(self.latency * 1000)
        state.next_poll_at = self.now + timedelta(seconds=interval_of(self.bridge))
        state.save()
        log.debug("TAPI bridge %s polled: %s", self.bridge, self.report)

    def failed(self, error: BridgeError) -> None:
        state = self.state
        state.last_poll_at = state.last_error_at = self.now
        state.consecutive_failures += 1
        state.last_error, state.last_error_kind = str(error)[:500], error.kind
        backoff = min(interval_of(self.bridge) * 2 ** (state.consecutive_failures - 1), MAX_BACKOFF)
        state.next_poll_at = self.now + timedelta(seconds=backoff)
        state.save()
        self.report.outcome = error.kind
        log.warning(
            "TAPI bridge %s at %s: %s (%s); %d failure(s) in a row, next try in %.0f s",
            self.bridge,
            self.bridge.url,
            error,
            error.kind,
            state.consecutive_failures,
            backoff,
        )
