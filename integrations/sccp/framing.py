"""Cut one direction of a Skinny TCP stream into messages.

Skinny frames itself: a 12-byte header whose `length` counts the messageId and payload
(protocols.md 1.1). A segment often carries several messages and a long message spans
several segments, so the framer buffers in-order bytes and emits whole messages.

When the capture starts in the middle of a session, or bytes were lost (`gap()`), the next
byte is not a header. The framer then scans for a plausible header -- a sane length, a known
header version and a known message id -- and, when the buffer holds it, confirms the
candidate with the header that follows it. Nothing here raises: bad frames are counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Final, NamedTuple

from integrations.sccp.messages import (
    HEADER,
    HEADER_SIZE,
    HEADER_VERSIONS,
    MAX_PAYLOAD,
    MESSAGE_NAMES,
    MIN_LENGTH,
)

# Asterisk caps a Skinny packet at 2000 bytes (SKINNY_MAX_PACKET); the largest messages seen
# (SoftKeyTemplateRes, 656 bytes; SoftKeySetRes, 784) are far below 4096.
MAX_LENGTH: Final = 4096
# Never hold more than this many unconsumed bytes (one maximal message and some slack).
MAX_BUFFER: Final = 4 * MAX_LENGTH


class SccpFrame(NamedTuple):
    """One whole Skinny message: header version, message id, payload."""

    version: int
    message_id: int
    payload: bytes


class SccpStreamFramer:
    """Frames the in-order bytes of one TCP direction. `errors` counts bad frames by kind."""

    def __init__(self, errors: Counter[str] | None = None) -> None:
        self._buffer = bytearray()
        self._synced = False
        # A tracker passes its own counter so framing errors are counted with decode errors.
        self.errors: Counter[str] = Counter() if errors is None else errors
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[SccpFrame]:
        """Add in-order bytes; return every message now complete."""
        self._buffer += data
        frames: list[SccpFrame] = []
        while self._next_frame(frames):
            pass
        self._bound_buffer()
        return frames

    def gap(self) -> None:
        """Bytes were lost: drop what is buffered and resynchronise on the next header."""
        if self._buffer:
            self.skipped_bytes += len(self._buffer)
        self._buffer.clear()
        self._synced = False
        self.errors["gap"] += 1

    def _next_frame(self, frames: list[SccpFrame]) -> bool:
        if not self._synced and not self._resynchronise():
            return False
        if len(self._buffer) < HEADER_SIZE:
            return False
        length, version, message_id = HEADER.unpack_from(self._buffer, 0)
        if not _plausible_header(length, version):
            self._lose_sync("bad-header")
            return True
        if len(self._buffer) < length + 8:
            return False
        frames.append(SccpFrame(version, message_id, bytes(self._buffer[HEADER_SIZE : length + 8])))
        del self._buffer[: length + 8]
        return True

    def _lose_sync(self, kind: str) -> None:
        self.errors[kind] += 1
        self._synced = False

    def _resynchronise(self) -> bool:
        """Find a confirmed header and drop the bytes before it; False when none is there yet."""
        offset = 0
        while len(self._buffer) - offset >= HEADER_SIZE:
            verdict = _candidate_verdict(self._buffer, offset)
            if verdict is None:
                self._skip(offset)
                return False
            if verdict:
                self._skip(offset)
                self._synced = True
                return True
            offset += 1
        self._skip(offset)
        return False

    def _skip(self, count: int) -> None:
        if count:
            del self._buffer[:count]
            self.skipped_bytes += count
            self.errors["resync-skipped"] += 1

    def _bound_buffer(self) -> None:
        excess = len(self._buffer) - MAX_BUFFER
        if excess > 0:
            self._skip(excess)
            self._synced = False
            self.errors["buffer-overflow"] += 1


def _plausible_header(length: int, version: int) -> bool:
    return MIN_LENGTH <= length <= MAX_LENGTH and version in HEADER_VERSIONS


def _plausible_candidate(buffer: bytearray, offset: int) -> bool:
    length, version, message_id = HEADER.unpack_from(buffer, offset)
    if not _plausible_header(length, version) or message_id not in MESSAGE_NAMES:
        return False
    return length - 4 <= MAX_PAYLOAD.get(message_id, MAX_LENGTH)


def _candidate_verdict(buffer: bytearray, offset: int) -> bool | None:
    """True: a header confirmed at `offset`; False: not a header; None: wait for more bytes.

    A candidate is confirmed by the plausible header right after it, or by ending exactly
    where the buffered bytes end (segments usually end on message boundaries).
    """
    if not _plausible_candidate(buffer, offset):
        return False
    following = offset + HEADER.unpack_from(buffer, offset)[0] + 8
    if following == len(buffer):
        return True
    if following + HEADER_SIZE > len(buffer):
        return None
    length, version, _ = HEADER.unpack_from(buffer, following)
    return _plausible_header(length, version)
