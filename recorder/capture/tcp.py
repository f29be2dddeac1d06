"""TCP stream reassembly for SIP over TCP and SCCP (RFC 9293 sequence arithmetic).

Each direction of a connection is handed to its consumer as in-order bytes: retransmitted
and overlapping segments are trimmed, out-of-order ones wait (bounded) for the hole to
fill. When a hole cannot fill (the mirror port dropped a segment), the consumer is told
of the gap and delivery goes on after it. A capture that starts mid-stream starts at the
first segment seen. Idle connections expire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from integrations.observations import Endpoint

SEQ_MODULO = 1 << 32
FIN, SYN, RST = 0x01, 0x02, 0x04


class StreamConsumer(Protocol):
    """Whoever decodes one TCP connection (a SIP framer, an SCCP station session)."""

    def data(self, from_client: bool, chunk: bytes, at: float) -> None: ...

    def gap(self, from_client: bool) -> None: ...

    def close(self, at: float) -> None: ...


def seq_distance(seq: int, expected: int) -> int:
    """Signed distance from the expected sequence number, modulo 2**32."""
    distance = (seq - expected) % SEQ_MODULO
    return distance - SEQ_MODULO if distance >= SEQ_MODULO // 2 else distance


@dataclass(slots=True)
class Direction:
    next_seq: int | None = None
    waiting: dict[int, bytes] = field(default_factory=dict)
    waiting_bytes: int = 0
    waiting_since: float = 0.0
    finished: bool = False


@dataclass(slots=True)
class Connection:
    client: Endpoint
    server: Endpoint
    consumer: StreamConsumer
    last_seen: float
    directions: tuple[Direction, Direction] = field(
        default_factory=lambda: (Direction(), Direction())
    )


class TcpReassembler:
    """Reassembles every TCP connection whose consumer `classify` provides.

    `classify(client, server, payload)` is asked on each segment of a connection that has
    no consumer yet and returns one, or None to ignore the segment (not signalling).
    """

    def __init__(
        self,
        classify: Callable[[Endpoint, Endpoint, bytes], StreamConsumer | None],
        count: Callable[[str], None],
        max_waiting_bytes: int = 256 * 1024,
        hole_timeout: float = 2.0,
        idle_timeout: float = 600.0,
        max_connections: int = 100_000,
    ) -> None:
        self.classify = classify
        self.count = count
        self.max_waiting_bytes = max_waiting_bytes
        self.hole_timeout = hole_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connections: dict[tuple[Endpoint, Endpoint], Connection] = {}

    def segment(
        self, src: Endpoint, dst: Endpoint, seq: int, flags: int, payload: bytes, at: float
    ) -> None:
        connection, from_client = self._connection(src, dst, payload, flags)
        if connection is None:
            return
        connection.last_seen = at
        direction = connection.directions[0 if from_client else 1]
        if flags & SYN:
            direction.next_seq = (seq + 1) % SEQ_MODULO
        elif payload:
            self._deliver(connection, direction, from_client, seq, payload, at)
        if flags & RST:
            self._close(connection, at)
        elif flags & FIN:
            direction.finished = True
            if all(side.finished for side in connection.directions):
                self._close(connection, at)

    def _connection(
        self, src: Endpoint, dst: Endpoint, payload: bytes, flags: int
    ) -> tuple[Connection | None, bool]:
        found = self.connections.get((src, dst))
        if found is not None:
            return found, True
        found = self.connections.get((dst, src))
        if found is not None:
            return found, False
        if flags & (RST | FIN) and not payload:
            return None, True
        consumer = self.classify(src, dst, payload)
        if consumer is None:
            return None, True
        if len(self.connections) >= self.max_connections:
            self.count("tcp-connections-over-limit")
            return None, True
        connection = Connection(src, dst, consumer, 0.0)
        self.connections[(src, dst)] = connection
        return connection, True

    def _deliver(
        self,
        connection: Connection,
        direction: Direction,
        from_client: bool,
        seq: int,
        payload: bytes,
        at: float,
    ) -> None:
        if direction.next_seq is None:
            direction.next_seq = seq  # picked up mid-stream
        distance = seq_distance(seq, direction.next_seq)
        if distance > 0:
            self._wait(connection, direction, from_client, seq, payload, at)
            return
        if -distance >= len(payload):
            self.count("tcp-retransmission")
            return
        self._hand_over(connection, direction, from_client, payload[-distance:], at)
        self._drain(connection, direction, from_client, at)

    def _hand_over(
        self,
        connection: Connection,
        direction: Direction,
        from_client: bool,
        data: bytes,
        at: float,
    ) -> None:
        direction.next_seq = (direction.next_seq + len(data)) % SEQ_MODULO
        connection.consumer.data(from_client, data, at)

    def _wait(
        self,
        connection: Connection,
        direction: Direction,
        from_client: bool,
        seq: int,
        payload: bytes,
        at: float,
    ) -> None:
        if not direction.waiting:
            direction.waiting_since = at
        if len(payload) > len(direction.waiting.get(seq, b"")):
            direction.waiting_bytes += len(payload) - len(direction.waiting.get(seq, b""))
            direction.waiting[seq] = payload
        self.count("tcp-out-of-order")
        if direction.waiting_bytes > self.max_waiting_bytes:
            self._skip_hole(connection, direction, from_client, at)

    def _drain(
        self, connection: Connection, direction: Direction, from_client: bool, at: float
    ) -> None:
        while direction.waiting:
            ready = [seq for seq in direction.waiting if seq_distance(seq, direction.next_seq) <= 0]
            if not ready:
                return
            for seq in ready:
                payload = direction.waiting.pop(seq)
                direction.waiting_bytes -= len(payload)
                overlap = -seq_distance(seq, direction.next_seq)
                if overlap < len(payload):
                    self._hand_over(connection, direction, from_client, payload[overlap:], at)
        direction.waiting_since = at

    def _skip_hole(
        self, connection: Connection, direction: Direction, from_client: bool, at: float
    ) -> None:
        """Give up on a hole: the bytes are gone. The consumer resynchronises after it."""
        self.count("tcp-gap")
        connection.consumer.gap(from_client)
        direction.next_seq = min(
            direction.waiting, key=lambda seq: seq_distance(seq, direction.next_seq)
        )
        self._drain(connection, direction, from_client, at)

    def _close(self, connection: Connection, at: float) -> None:
        for from_client, direction in (
            (True, connection.directions[0]),
            (False, connection.directions[1]),
        ):
            if direction.waiting:
                self._skip_hole(connection, direction, from_client, at)
        self.connections.pop((connection.client, connection.server), None)
        connection.consumer.close(at)

    def expire(self, now: float) -> None:
        """Fill holes that waited too long, and close idle connections."""
        for connection in list(self.connections.values()):
            if now - connection.last_seen > self.idle_timeout:
                self.count("tcp-idle-expired")
                self._close(connection, now)
                continue
            for from_client, direction in zip((True, False), connection.directions, strict=True):
                if direction.waiting and now - direction.waiting_since > self.hole_timeout:
                    self._skip_hole(connection, direction, from_client, now)
