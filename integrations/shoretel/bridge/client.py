"""An HTTP client for a TAPI bridge (docs/tapi-bridge.md). Standard library only, no Django.

Every way a bridge can fail is one exception class with a short `kind` (down, timeout,
refused, redirect, http-500, bad-response, cursor-gone) that the poller records and the
admin shows.

Two rules hold whatever the bridge answers: a request ends at its deadline (the timeout
bounds the whole request, not each read, so a bridge sending a byte a second cannot hold
a worker), and a redirect is never followed (the bearer token goes to the configured
bridge and nowhere else).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from integrations.shoretel.bridge.protocol import (
    ClockReading,
    EventsPage,
    LinesPage,
    ProtocolError,
    decode_events,
    decode_lines,
    read_clock,
)

Page = TypeVar("Page", LinesPage, EventsPage)
# A page of 1,000 events is well under a megabyte; anything near this is not the protocol.
MAX_BODY = 16 * 1024 * 1024
USER_AGENT = "QMS-TAPI-poller/1"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class BridgeError(Exception):
    """The bridge could not be read this time."""

    kind = "error"


class BridgeDown(BridgeError):
    kind = "down"


class BridgeTimeout(BridgeError):
    kind = "timeout"


class BridgeRefused(BridgeError):
    """HTTP 401 or 403: the token is wrong or missing."""

    kind = "refused"


class BridgeRedirected(BridgeError):
    """HTTP 3xx: the bridge sent QMS elsewhere. Not followed: the token would go along."""

    kind = "redirect"


class BridgeHTTPError(BridgeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def kind(self) -> str:
        return f"http-{self.status}"


class BadResponse(BridgeError):
    """Not JSON, or JSON that is not version 1 of the protocol."""

    kind = "bad-response"


class CursorGone(BridgeError):
    """HTTP 410: the bridge no longer has (or never had, in this boot) the cursor sent."""

    kind = "cursor-gone"

    def __init__(self, message: str, boot_id: str) -> None:
        super().__init__(message)
        self.boot_id = boot_id


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its answer, with the times the clock estimate needs."""

    body: object
    sent_at: float
    received_at: float
    latency: float
    date: datetime | None

    def clock(self, server_time: datetime | None) -> ClockReading | None:
        return read_clock(server_time, self.date, self.sent_at, self.received_at)


class BridgeClient:
    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    def lines(self) -> tuple[LinesPage, Exchange]:
        exchange = self.get("v1/lines")
        return _decoded(decode_lines, exchange), exchange

    def events(self, cursor: str, limit: int) -> tuple[EventsPage, Exchange]:
        query = {"limit": str(limit)}
        if cursor:
            query["cursor"] = cursor
        exchange = self.get("v1/events", query)
        return _decoded(decode_events, exchange), exchange

    def get(self, path: str, query: dict[str, str] | None = None) -> Exchange:
        url = urllib.parse.urljoin(self.base_url, path)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        sent_at, started = time.time(), time.monotonic()
        status, headers, raw = self._fetch(urllib.parse.urlsplit(url))
        if status in REDIRECTS:
            raise _redirected(status, headers.get("Location", ""))
        exchange = Exchange(
            _json(raw), sent_at, time.time(), time.monotonic() - started, _date(headers)
        )
        if status != 200:
            raise _refusal(status, exchange.body)
        return exchange

    def _fetch(self, url: urllib.parse.SplitResult) -> tuple[int, http.client.HTTPMessage, bytes]:
        # http.client, not urllib: it follows no redirect and asks no proxy (the bridge is
        # on the telephony LAN, whatever proxy the environment names for the web).
        connection = _connection(url, self.timeout)
        deadline = Deadline(self.timeout)
        response = None
        try:
            with deadline:
                _connect(connection)
                deadline.watch(connection.sock)
                _send(connection, url, self._headers())
                response = _response(connection)
                answer = response.status, response.headers, _read(response)
        except BridgeError:
            if deadline.expired.is_set():
                raise deadline.error() from None
            raise
        finally:
            if response is not None:
                response.close()
            connection.close()
        if deadline.expired.is_set():
            raise deadline.error()
        return answer

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }


class Deadline:
    """Ends a request still running `seconds` after it began. A socket timeout bounds each
    read, not their sum: without this, an answer dripped a byte a second would hold the
    poll for as long as the bridge likes. Shutting the socket down wakes the blocked read."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def __enter__(self) -> Deadline:
        self.timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.timer.cancel()

    def watch(self, sock: socket.socket | None) -> None:
        """The connected socket. Held here, as http.client lets go of it once the answer's
        headers are read and hands it to the response."""
        with self.lock:
            self.sock = sock
            if self.expired.is_set():
                self._shut()  # it expired while connecting

    def _expire(self) -> None:
        with self.lock:
            self.expired.set()
            self._shut()

    def _shut(self) -> None:
        if self.sock is not None:
            # socket.socket's own shutdown, also for TLS: the reading thread owns the TLS
            # state, this only shuts the connection under it. Already closed: it has ended.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def error(self) -> BridgeTimeout:
        return BridgeTimeout(
            f"no answer within the timeout ({self.seconds:g} s for the whole request)"
        )


def _connection(url: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    try:
        host, port = url.hostname, url.port
    except ValueError:
        raise BridgeDown(f"the bridge's URL has no usable port: {url.netloc!r}") from None
    if url.scheme == "https":
        context = ssl.create_default_context()
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    if url.scheme == "http":
        return http.client.HTTPConnection(host, port, timeout=timeout)
    raise BridgeDown(f"the bridge's URL must be http or https, not {url.scheme!r}")


def _connect(connection: http.client.HTTPConnection) -> None:
    try:
        connection.connect()
    except OSError as error:  # refused, unreachable, no such host, TLS, timeout
        raise _unreachable(error) from None


def _send(
    connection: http.client.HTTPConnection, url: urllib.parse.SplitResult, headers: dict
) -> None:
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    try:
        connection.request("GET", target, headers=headers)
    except (OSError, http.client.HTTPException) as error:
        raise BridgeDown(f"the connection broke while sending the request: {error}") from None


def _response(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    try:
        return connection.getresponse()
    except TimeoutError:
        raise BridgeTimeout("no answer within the timeout") from None
    except (OSError, http.client.HTTPException) as error:
        raise BridgeDown(f"the connection broke before the answer: {error}") from None


def _read(response: http.client.HTTPResponse) -> bytes:
    try:
        raw = response.read(MAX_BODY + 1)
    except TimeoutError:
        raise BridgeTimeout("the bridge stopped answering in the middle of its answer") from None
    except (OSError, http.client.HTTPException) as error:
        raise BridgeDown(f"the connection broke while reading the answer: {error}") from None
    if len(raw) > MAX_BODY:
        raise BadResponse(f"the answer is larger than {MAX_BODY} bytes")
    return raw


def _unreachable(reason: OSError) -> BridgeError:
    if isinstance(reason, TimeoutError):
        return BridgeTimeout("no answer within the timeout")
    if isinstance(reason, ConnectionRefusedError):
        return BridgeDown("connection refused: is the bridge running?")
    return BridgeDown(f"cannot reach the bridge: {reason}")


def _redirected(status: int, location: str) -> BridgeRedirected:
    return BridgeRedirected(
        f"HTTP {status} to {location[:200]!r}: QMS does not follow redirects, so the token "
        "is never sent anywhere but the bridge's URL; set the URL to where the bridge answers"
    )


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError as error:  # not UTF-8, not JSON, or a number of over 4,300 digits
        return _NotJson(str(error), raw[:80])
    except RecursionError:
        return _NotJson("it nests arrays or objects too deeply to read", raw[:80])


@dataclass(frozen=True, slots=True)
class _NotJson:
    """An answer that did not parse; an error only if it was meant to be the document."""

    error: str
    start: bytes


def _refusal(status: int, body: object) -> BridgeError:
    message = _error_message(body) or f"HTTP {status}"
    if status in (401, 403):
        return BridgeRefused(f"the bridge refused the token: {message}")
    if status == 410:
        boot_id = body.get("boot_id", "") if isinstance(body, dict) else ""
        return CursorGone(message, boot_id if isinstance(boot_id, str) else "")
    return BridgeHTTPError(status, f"HTTP {status}: {message}")


def _error_message(body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    code, message = error.get("code", ""), error.get("message", "")
    return f"{code}: {message}" if code and message else str(code or message)


def _decoded(decode: Callable[[object], Page], exchange: Exchange) -> Page:
    if isinstance(exchange.body, _NotJson):
        raise BadResponse(
            f"the answer is not JSON ({exchange.body.error}); it begins {exchange.body.start!r}"
        )
    try:
        return decode(exchange.body)
    except ProtocolError as error:
        raise BadResponse(str(error)) from None


def _date(headers: http.client.HTTPMessage) -> datetime | None:
    raw = headers.get("Date") if headers is not None else None
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw)
    except (TypeError, ValueError, OverflowError):
        return None
