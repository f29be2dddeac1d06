"""One interface's two capture rings into the engine in capture-time order.

A live interface is captured by two tcpdumps (recorder/capture/tcpdump.py): a large ring
for media and a small one for signalling, so that RTP filling its ring never costs a BYE
or a REGISTER. The rings hand their packets over at different times. A ring's block is
handed over when it is full or a second (HANDOVER_SECONDS) after its first packet: a busy
media ring fills its blocks in milliseconds, the quiet signalling ring waits out the
second, so a 200 OK usually arrives after the RTP that follows it. And when the engine
falls behind, media waits in its ring while signalling does not, so a BYE arrives before
the RTP that precedes it. Fed as they come, the first would leave the start of a call's
audio unmatched (or make an unsignalled call of it), the second would end the call before
its last second of audio.

So each ring is a PcapStream of its own, and a record goes to the engine only once the
other ring is known to have handed over everything captured before it. A ring is known to
have come as far as the latest record looked at in it (records come in capture order);
and once it has said nothing for QUIET_SECONDS, which is longer than the hand-over, as far
as the wall clock less QUIET_SECONDS: anything captured before that would have been handed
over by now. A quiet ring that still holds a record has come only as far as that record
(the engine far behind, an answer waits for media to reach it, then the signalling ring
falls quiet until the BYE: the RTP after the answer must still wait for it). (A ring that
keeps handing over is not taken as quiet, as it may be working through a backlog.) The
loop merges only once it has read every pipe that had something to say (Block.more): a
ring whose pipe it has not read for a while, because the engine kept it busy, is not
quiet. At equal times signalling goes first.

The order is exact across blocks and inside them: a media block is fed up to the next
signalling record's time, through its run path (PcapStream.advance), the signalling record
is fed, and the media block goes on. What it costs is memory: media waits while the
signalling ring has not yet been heard up to its time, at most about QUIET_SECONDS after
the signalling ring last spoke (on a busy mirror port, the newest second or two of what
the engine takes), and signalling waits while media is behind. Each ring holds at most
HELD_BYTES; beyond that its oldest records go to the engine without waiting for the other
ring, and the first time this happens it is said.
"""

from __future__ import annotations

import logging
import math

from recorder.capture.tcpdump import HANDOVER_SECONDS, MEDIA, SIGNALLING
from recorder.engine.engine import Engine
from recorder.engine.pcapfile import PcapStream

log = logging.getLogger("qms.capture")

QUIET_SECONDS = HANDOVER_SECONDS + 0.5
HELD_BYTES = 256 << 20


class Ring:
    """One ring's stream, and how far it is known to have come."""

    def __init__(self, engine: Engine, name: str, now: float) -> None:
        self.name = name
        self.stream = PcapStream(engine)
        self.heard_at = now  # monotonic: when it last handed over a block (or the start)
        self.ended = False

    def add(self, data: bytes, now: float) -> None:
        """A block the ring handed over; an empty one says its stream has ended."""
        self.stream.add(data)
        self.heard_at = now
        self.ended = self.ended or not data

    def come_to(self, now: float, wall: float) -> float:
        """The capture time before which this ring has handed over everything."""
        if self.ended:
            # All it will ever hand over is here: it has come to its first record not yet
            # fed (advancing to minus infinity feeds nothing, it only looks).
            first = self.stream.advance(-math.inf)
            return first if first is not None else math.inf
        if now - self.heard_at >= QUIET_SECONDS:
            # Quiet: it has handed over everything captured before the wall clock less the
            # quiet time, but a record it still holds (waiting for the other ring) is still
            # where it has come to: the other ring is fed up to it, never past it.
            held = self.stream.advance(-math.inf)
            if held is not None:
                return held
            return max(self.stream.reached_at, wall - QUIET_SECONDS)
        return self.stream.reached_at


class InterfaceRings:
    """An interface's signalling and media rings, fed to one engine in capture-time order."""

    def __init__(self, engine: Engine, interface: str, now: float) -> None:
        self.interface = interface
        self.rings = {name: Ring(engine, name, now) for name in (SIGNALLING, MEDIA)}
        self.overflowed = False

    def add(self, ring: str, data: bytes, now: float) -> None:
        self.rings[ring].add(data, now)

    def release(self, now: float, wall: float) -> None:
        """Feed what both rings have handed over, in capture-time order, as far as the other
        ring is known to have come (`now` monotonic, `wall` the wall clock)."""
        signalling, media = self.rings[SIGNALLING], self.rings[MEDIA]
        while True:
            # Media strictly before the next signalling, signalling up to the next media.
            media_next = media.stream.advance(signalling.come_to(now, wall))
            signalling.stream.advance(math.nextafter(media.come_to(now, wall), math.inf))
            if media_next is None or signalling.come_to(now, wall) <= media_next:
                break
        self._bound_memory()

    def held_from(self) -> float:
        """When the earliest record held back was captured (infinity if none is)."""
        held = [ring.stream.held_at for ring in self.rings.values()]
        return min((at for at in held if at is not None), default=math.inf)

    def end(self) -> None:
        """Both rings have ended: what they still hold goes to the engine in capture-time
        order, and a packet cut short by the end is said."""
        for ring in self.rings.values():
            ring.ended = True
        self.release(0.0, 0.0)
        for ring in self.rings.values():
            ring.stream.end()

    def _bound_memory(self) -> None:
        for ring in self.rings.values():
            if ring.stream.held_bytes <= HELD_BYTES:
                continue
            if not self.overflowed:
                log.warning(
                    "%s: the %s ring holds more than %d MiB waiting for the other; its "
                    "oldest packets go to the engine out of order",
                    self.interface,
                    ring.name,
                    HELD_BYTES >> 20,
                )
                self.overflowed = True
            while ring.stream.held_bytes > HELD_BYTES and ring.stream.held_at is not None:
                ring.stream.advance(ring.stream.held_at + 1.0)
