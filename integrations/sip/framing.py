"""Cut one direction of a SIP-over-TCP stream into messages (RFC 3261 §18.3).

Over a stream, Content-Length is the only way to find where a message ends. The framer is fed
the in-order bytes the TCP reassembler delivers; after `gap()` (bytes were lost) it throws
away what it holds and waits for the next start line. A message that cannot complete within
the decoder's limits is counted in `errors` by kind and dropped, so the buffer never holds
more than one header section plus one body.
"""

from __future__ import annotations

import re
from collections import Counter

from integrations.sip.errors import SipDecodeError
from integrations.sip.message import MAX_HEADER_BYTES, check_content_length, empty_line

# A start line (RFC 3261 §7.1, §7.2) at the buffer's start or right after a line feed.
START_LINE = re.compile(
    rb"(?:^|(?<=\n))"
    rb"(?:SIP/2\.0 [1-6][0-9][0-9][ \r\n]|[A-Z][A-Za-z0-9.!%*_+`'~-]* [^ \r\n]+ SIP/2\.0\r?\n)"
)
CONTENT_LENGTH = re.compile(rb"\n[ \t]*(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
MAX_START_LINE = 4096


class SipStreamFramer:
    """Feed bytes of one direction of one TCP connection; get whole SIP messages back."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_sync = True
        self.errors: Counter[str] = Counter()
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while self._buffer:
            held = len(self._buffer)
            message = self._next_message()
            if message is not None:
                messages.append(message)
            elif len(self._buffer) == held:
                break  # nothing dropped and nothing complete: wait for more bytes
        return messages

    def gap(self) -> None:
        """Bytes were lost: what is buffered cannot be trusted to start or end a message."""
        self.skipped_bytes += len(self._buffer)
        self._buffer.clear()
        self._in_sync = False
        self.errors["gap"] += 1

    def _next_message(self) -> bytes | None:
        if not self._in_sync and not self._resynchronise():
            return None
        self._skip_keepalives()
        head_end = empty_line(self._buffer, MAX_HEADER_BYTES + 4)
        if head_end is None:
            return self._wait_for_head()
        return self._take_message(*head_end)

    def _skip_keepalives(self) -> None:
        """RFC 5626 §3.5.1 keep-alives (CRLFCRLF ping, CRLF pong) sit between messages."""
        start = 0
        while start < len(self._buffer) and self._buffer[start] in b"\r\n":
            start += 1
        del self._buffer[:start]

    def _wait_for_head(self) -> None:
        if len(self._buffer) > MAX_HEADER_BYTES:
            self._drop("header-too-large", len(self._buffer))
        return None

    def _take_message(self, head_end: int, body_start: int) -> bytes | None:
        if START_LINE.match(self._buffer) is None:
            self._drop("not-sip", 1)
            return None
        try:
            length = self._content_length(head_end)
        except SipDecodeError as error:
            self._drop(error.kind, body_start)
            return None
        if len(self._buffer) < body_start + length:
            return None
        message = bytes(self._buffer[: body_start + length])
        del self._buffer[: body_start + length]
        return message

    def _content_length(self, head_end: int) -> int:
        """§18.3: a stream message without Content-Length has an empty body."""
        found = CONTENT_LENGTH.search(self._buffer, 0, head_end)
        if found is None:
            return 0
        return check_content_length(found.group(1).strip().decode("latin-1"))

    def _drop(self, kind: str, count: int) -> None:
        """Throw away a message that cannot be framed and look for the next start line."""
        self.errors[kind] += 1
        self.skipped_bytes += count
        del self._buffer[:count]
        self._in_sync = False

    def _resynchronise(self) -> bool:
        """Find the next start line; keep at most the last, unfinished line while waiting."""
        found = START_LINE.search(self._buffer)
        if found is None:
            keep_from = max(self._buffer.rfind(b"\n"), len(self._buffer) - MAX_START_LINE, 0)
            self.skipped_bytes += keep_from
            del self._buffer[:keep_from]
            return False
        self.skipped_bytes += found.start()
        del self._buffer[: found.start()]
        self._in_sync = True
        return True
