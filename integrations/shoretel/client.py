"""An HTTP client for a TAPI bridge (docs/tapi-bridge.md). Standard library only, no Django.

Every way a bridge can fail is one exception class with a short `kind` (down, timeout,
refused, http-500, bad-response, cursor-gone) that the poller records and the admin shows.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from integrations.shoretel.protocol import (
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
        # The bridge is on the telephony LAN: speak to it directly, whatever proxy the
        # process environment names for the web.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

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
        request = urllib.request.Request(  # noqa: S310 - the URL is an admin-configured http(s) bridge
            url,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
        )
        sent_at, started = time.time(), time.monotonic()
        status, headers, raw = self._fetch(request)
        exchange = Exchange(
            _json(raw), sent_at, time.time(), time.monotonic() - started, _date(headers)
        )
        if status != 200:
            raise _refusal(status, exchange.body)
        return exchange

    def _fetch(self, request: urllib.request.Request) -> tuple[int, http.client.HTTPMessage, bytes]:
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, response.headers, _read(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers, _read(error)
        except urllib.error.URLError as error:
            raise _unreachable(error.reason) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise _unreachable(error) from None


def _read(response: http.client.HTTPResponse | urllib.error.HTTPError) -> bytes:
    try:
        raw = response.read(MAX_BODY + 1)
    except TimeoutError:
        raise BridgeTimeout("the bridge stopped answering in the middle of its answer") from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise BridgeDown(f"the connection broke while reading the answer: {error}") from None
    if len(raw) > MAX_BODY:
        raise BadResponse(f"the answer is larger than {MAX_BODY} bytes")
    return raw


def _unreachable(reason: object) -> BridgeError:
    if isinstance(reason, TimeoutError):
        return BridgeTimeout("no answer within the timeout")
    if isinstance(reason, ConnectionRefusedError):
        return BridgeDown("connection refused: is the bridge running?")
    return BridgeDown(f"cannot reach the bridge: {reason}")


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return _NotJson(str(error), raw[:80])


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
    except (TypeError, ValueError):
        return None
