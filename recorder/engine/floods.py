"""The caps that keep a flood from the wire from costing a real call (docs/capture.md,
"Floods").

Pure Python, no Django: the engine and the call table ask these classes, per call or per
binding (never per RTP packet), whether to take what the wire offers. Every cap that trips
is counted by its kind; the capture commands turn the counts into alerts (CaptureAlert).

- UnansweredCalls: calls not yet answered, per source address and overall. Over a
  source's share a new call is refused; over the whole, the oldest unanswered call of the
  busiest source makes room, or the new one is refused when no source is busier than its
  own. Answered calls are never counted here, so never evicted for an unanswered one.
- NewNumbers: extensions never seen before, per source address and overall, per minute.
- SpoolHandles: the file handles kept back for answered calls' spools.
- StreamProbation: RTP to or from a known phone that no signalling announced becomes a
  call only once it looks like a real stream: one SSRC, sequence numbers going up, no gap
  of a second.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

# Calls not yet answered, from one source address and from all of them together.
UNANSWERED_PER_SOURCE = 200
UNANSWERED_OVERALL = 5_000
# Calls refused while unanswered, remembered so that their answer still records them.
REFUSED_REMEMBERED = 10_000
# Extensions never seen before, per minute: from one address, and from all of them.
NEW_NUMBERS_PER_SOURCE = 50
NEW_NUMBERS_OVERALL = 1_000
NUMBERS_REMEMBERED = 100_000
# File handles kept for the spools of answered calls: an unanswered call's spool is not
# opened when fewer than this remain (at least SPOOL_RESERVE_MIN, else an eighth).
SPOOL_RESERVE_MIN = 32
SPOOL_RESERVE_SHARE = 8
# A stream no signalling announced is plausible after this many packets of one SSRC in
# sequence, none more than STREAM_GAP seconds after the one before.
PLAUSIBLE_PACKETS = 25
STREAM_GAP = 1.0
# A sequence number may jump this far ahead (packets lost on the way) and still follow.
SEQUENCE_STEP = 100
STREAMS_ON_PROBATION = 1_024

# The kinds of the caps, as counted and shown (CaptureAlert.kind).
UNANSWERED_SOURCE_CAP = "unanswered-per-source"
UNANSWERED_OVERALL_CAP = "unanswered-overall"
FLOOD_EVICTED = "flood-evicted"
NEW_NUMBER_FLOOD = "new-number-flood"
SPOOL_RESERVE = "spool-reserve"
PROBATION_FULL = "rtp-probation-full"

CAP_MESSAGES = {
    UNANSWERED_SOURCE_CAP: (
        f"calls not yet answered refused: one address already had {UNANSWERED_PER_SOURCE} "
        "ringing (an INVITE flood?)"
    ),
    UNANSWERED_OVERALL_CAP: (
        f"calls not yet answered refused: {UNANSWERED_OVERALL} were ringing (an INVITE flood?)"
    ),
    FLOOD_EVICTED: "unanswered calls of the busiest address ended to make room for another's",
    NEW_NUMBER_FLOOD: (
        f"numbers never seen before ignored: over {NEW_NUMBERS_PER_SOURCE} a minute from one "
        f"address or {NEW_NUMBERS_OVERALL} from all (a REGISTER flood?)"
    ),
    SPOOL_RESERVE: (
        "unanswered calls not spooled: the file handles left are kept for answered calls"
    ),
    PROBATION_FULL: "RTP streams on probation forgotten: too many at once (junk RTP?)",
}


def cap_message(kind: str, count: int) -> str:
    """The sentence an alert shows for `count` trips of the cap `kind`."""
    return f"{count} {CAP_MESSAGES.get(kind, kind)}"


class Verdict(NamedTuple):
    """What to do with a new unanswered call: admit it (`cap` empty), refuse it (`cap`
    names the cap), or admit it after ending `evict` (`cap` is FLOOD_EVICTED)."""

    cap: str = ""
    evict: str = ""


class UnansweredCalls:
    """Calls not yet answered, by source address, oldest first.

    Sources are kept in buckets by how many calls they hold, so the busiest is found
    without looking at every source, whatever the number of addresses a flood forges.
    """

    def __init__(
        self, per_source: int = UNANSWERED_PER_SOURCE, overall: int = UNANSWERED_OVERALL
    ) -> None:
        self.per_source, self.overall = per_source, overall
        self.by_source: dict[str, OrderedDict[str, None]] = {}
        self.source_of: dict[str, str] = {}
        self.holding: dict[int, dict[str, None]] = {}
        self.most = 0

    def __len__(self) -> int:
        return len(self.source_of)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self.source_of

    def verdict(self, source: str) -> Verdict:
        held = len(self.by_source.get(source, ()))
        if held >= self.per_source:
            return Verdict(UNANSWERED_SOURCE_CAP)
        if len(self) < self.overall:
            return Verdict()
        # Room is made only by a source holding more than this one would: so the table
        # tends to equal shares, and a flood spread over many forged addresses is refused.
        if self.most > held + 1:
            busiest = next(iter(self.holding[self.most]))
            return Verdict(FLOOD_EVICTED, next(iter(self.by_source[busiest])))
        return Verdict(UNANSWERED_OVERALL_CAP)

    def add(self, source: str, call_id: str) -> None:
        if call_id in self.source_of:
            return
        calls = self.by_source.setdefault(source, OrderedDict())
        self._move(source, len(calls), len(calls) + 1)
        calls[call_id] = None
        self.source_of[call_id] = source

    def remove(self, call_id: str) -> None:
        """The call was answered or ended: it counts no more."""
        source = self.source_of.pop(call_id, None)
        if source is None:
            return
        calls = self.by_source[source]
        del calls[call_id]
        self._move(source, len(calls) + 1, len(calls))
        if not calls:
            del self.by_source[source]

    def _move(self, source: str, before: int, after: int) -> None:
        if before:
            bucket = self.holding[before]
            del bucket[source]
            if not bucket:
                del self.holding[before]
        if after:
            self.holding.setdefault(after, {})[source] = None
        self.most = max(after, self.most)
        while self.most and self.most not in self.holding:
            self.most -= 1


class NewNumbers:
    """Extensions never seen before, counted per minute of capture time: per source
    address and overall. A number allowed once is known, and always allowed after."""

    def __init__(
        self,
        per_source: int = NEW_NUMBERS_PER_SOURCE,
        overall: int = NEW_NUMBERS_OVERALL,
        remembered: int = NUMBERS_REMEMBERED,
    ) -> None:
        self.per_source, self.overall, self.remembered = per_source, overall, remembered
        self.known: OrderedDict[str, None] = OrderedDict()
        self.minute = -1
        self.this_minute: dict[str, int] = {}
        self.total = 0

    def allows(self, number: str, source: str, at: float) -> bool:
        if number in self.known:
            self.known.move_to_end(number)
            return True
        minute = int(at // 60)
        if minute != self.minute:
            self.minute, self.this_minute, self.total = minute, {}, 0
        taken = self.this_minute.get(source, 0)
        if self.total >= self.overall or taken >= self.per_source:
            return False
        self.this_minute[source] = taken + 1
        self.total += 1
        self.known[number] = None
        if len(self.known) > self.remembered:
            self.known.popitem(last=False)
        return True


class SpoolHandles:
    """File handles for spools (one each): an unanswered call's spool only while more
    than the reserve would remain; an answered call's while any does."""

    def __init__(self, limit: int, in_use: int, reserve: int | None = None) -> None:
        self.limit, self.in_use = limit, in_use
        self.reserve = (
            reserve if reserve is not None else max(SPOOL_RESERVE_MIN, limit // SPOOL_RESERVE_SHARE)
        )

    @classmethod
    def of_this_process(cls) -> SpoolHandles:
        """From RLIMIT_NOFILE and the handles the process holds now (its database
        connection, its capture, its logs)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        try:
            in_use = len(os.listdir("/proc/self/fd"))
        except OSError:
            in_use = SPOOL_RESERVE_MIN  # no /proc: a guess of a process's usual handles
        return cls(limit, in_use)

    def may_open(self, open_spools: int, answered: bool) -> bool:
        left = self.limit - self.in_use - open_spools
        return left > (0 if answered else self.reserve)


@dataclass(slots=True)
class Direction:
    """One direction of a stream on probation: its SSRC, last sequence number, how many
    packets in a row followed, and the packets held meanwhile."""

    ssrc: bytes = b""
    sequence: int = -1
    last_at: float = 0.0
    in_row: int = 0


@dataclass(slots=True)
class Candidate:
    """RTP between a known phone and a far end, not yet believed to be a call."""

    directions: dict[bool, Direction] = field(default_factory=dict)
    held: list[tuple[float, bytes, bytes]] = field(default_factory=list)


class StreamProbation:
    """RTP no signalling announced, held until it looks like a real stream.

    `offer` takes one packet of the pair (phone, far end) and says whether the pair is now
    plausible: PLAUSIBLE_PACKETS packets of one SSRC, in one direction, each sequence
    number after the one before (RFC 3550 A.1's test, with loss allowed) and none more
    than STREAM_GAP after the previous. Junk (random bytes, a packet or three to each of
    thousands of ports) never gets there. The packets held meanwhile are handed back, so
    the recording still starts with the stream's first packet.
    """

    def __init__(self, limit: int = STREAMS_ON_PROBATION) -> None:
        self.limit = limit
        self.candidates: OrderedDict[tuple[bytes, bytes], Candidate] = OrderedDict()
        self.forgotten = 0

    def offer(
        self, pair: tuple[bytes, bytes], to_phone: bool, packet: bytes, destination: bytes,
        at: float,
    ) -> list[tuple[float, bytes, bytes]] | None:  # fmt: skip
        """None while on probation; once plausible, the packets held, this one last, as
        (arrival, destination key, packet)."""
        candidate = self.candidates.get(pair)
        if candidate is None:
            candidate = self.candidates[pair] = Candidate()
            if len(self.candidates) > self.limit:
                self.candidates.popitem(last=False)
                self.forgotten += 1
        direction = candidate.directions.setdefault(to_phone, Direction())
        candidate.held.append((at, destination, packet))
        if len(candidate.held) > 2 * PLAUSIBLE_PACKETS:
            del candidate.held[0]
        if not _follows(direction, packet, at):
            direction.ssrc, direction.in_row = packet[8:12], 0
        direction.sequence = int.from_bytes(packet[2:4], "big")
        direction.last_at = at
        direction.in_row += 1
        if direction.in_row < PLAUSIBLE_PACKETS:
            return None
        del self.candidates[pair]
        return candidate.held


def _follows(direction: Direction, packet: bytes, at: float) -> bool:
    """The packet continues the direction's stream: same SSRC, a sequence number a little
    after the last one (modulo 2^16), soon after it."""
    if direction.sequence < 0 or packet[8:12] != direction.ssrc:
        return False
    step = (int.from_bytes(packet[2:4], "big") - direction.sequence) % 0x10000
    return 0 < step <= SEQUENCE_STEP and at - direction.last_at <= STREAM_GAP
