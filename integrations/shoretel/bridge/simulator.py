"""A reference TAPI bridge: version 1 of docs/tapi-bridge.md served from scripted scenarios.

A real HTTP server (the standard library's, one thread per request) that speaks the
protocol exactly as a bridge beside ShoreTel's TAPI service provider would: bearer token,
GET /v1/lines, GET /v1/events with cursors, a boot id that changes when it restarts, and
its own clock. A scenario is a script of line and call events at offsets from a start
time; with pace "instant" every event is in the feed at once, with "realtime" each
appears when its time comes, with "manual" (for tests) when `elapsed` reaches it. The
faults a poller must live with are switches on the simulator: HTTP 500, answers that are
not JSON, slowness, duplicated events, a clock that runs ahead or behind, and restarts.
`manage.py tapi_bridge_sim` runs it from the shell.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import parse_qs, urlsplit

from integrations.shoretel.bridge.protocol import DEFAULT_LIMIT, MAX_LIMIT, format_time

log = logging.getLogger(__name__)

VERSION: Final = "1.0"
FAULTS: Final = ("http-500", "bad-json", "slow", "duplicate")


@dataclass(frozen=True, slots=True)
class ShoreTelPhone:
    """A ShoreTel IP phone as the configuration database knows it: MAC and address."""

    device: str
    ip: str


# ShoreTel's IEEE OUI is 00:10:49; the rest of each MAC is made up.
PHONE_A: Final = ShoreTelPhone("001049A0D150", "10.20.0.50")
PHONE_B: Final = ShoreTelPhone("001049A0D151", "10.20.0.51")
FAR_NUMBER: Final = "6175551212"
FAR_NAME: Final = "Acme Corp"


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted event: `offset` seconds after the scenario's start."""

    offset: float
    kind: str
    fields: dict


def line(offset: float, extension: str, phone: ShoreTelPhone, state: str = "inservice") -> Step:
    """An extension put on (inservice) or taken off (outofservice) a phone's line 1."""
    return Step(
        offset,
        "line",
        {
            "extension": extension,
            "line_name": f"ShoreTel {extension}",
            "device": phone.device,
            "ip": phone.ip,
            "line_number": 1,
            "state": state,
        },
    )


def call(
    call_id: str, extension: str, phone: ShoreTelPhone, parties: dict, states: list[tuple]
) -> list[Step]:
    """A call on `extension`'s line: its states at their offsets, each with the parties."""
    where = {"call_id": call_id, "extension": extension, "ip": phone.ip, "device": phone.device}
    return [Step(offset, "call", {**where, "state": state, **parties}) for offset, state in states]


def inbound_call(call_id: str, extension: str, phone: ShoreTelPhone, at: float) -> list[Step]:
    """An outside caller rings `extension`: answered 5 s later, two seconds of talk."""
    parties = {"origin": "external", "caller": FAR_NUMBER, "caller_name": FAR_NAME,
               "callee": extension, "callee_name": ""}  # fmt: skip
    states = [(at, "offering"), (at + 0.2, "accepted"), (at + 5, "connected"),
              (at + 7, "disconnected"), (at + 7.1, "idle")]  # fmt: skip
    return call(call_id, extension, phone, parties, states)


def outbound_call(call_id: str, extension: str, phone: ShoreTelPhone, at: float) -> list[Step]:
    """`extension` dials out: connected after 5 s, a second on hold, ends 10 s in."""
    parties = {"origin": "outbound", "caller": extension, "caller_name": "",
               "callee": "6175550100", "callee_name": ""}  # fmt: skip
    states = [(at, "dialtone"), (at + 1, "dialing"), (at + 2, "proceeding"),
              (at + 2.5, "ringback"), (at + 5, "connected"), (at + 7, "onhold"),
              (at + 8, "connected"), (at + 10, "disconnected"), (at + 10.1, "idle")]  # fmt: skip
    return call(call_id, extension, phone, parties, states)


def consult(extension: str, phone: ShoreTelPhone, at: float) -> list[Step]:
    """An inbound call put on hold while the line consults someone else, then taken back."""
    caller = {"origin": "external", "caller": FAR_NUMBER, "caller_name": FAR_NAME,
              "callee": extension, "callee_name": ""}  # fmt: skip
    held = [(at, "offering"), (at + 0.2, "accepted"), (at + 5, "connected"), (at + 10, "onhold"),
            (at + 18, "connected"), (at + 23, "disconnected"), (at + 23.1, "idle")]  # fmt: skip
    consulted = {"origin": "outbound", "caller": extension, "caller_name": "",
                 "callee": "6175550199", "callee_name": "Supervisor"}  # fmt: skip
    consulting = [(at + 10.2, "dialtone"), (at + 10.5, "dialing"), (at + 11, "ringback"),
                  (at + 12.5, "connected"), (at + 17, "disconnected"),
                  (at + 17.1, "idle")]  # fmt: skip
    first = call("1001", extension, phone, caller, held)
    return first + call("1004", extension, phone, consulted, consulting)


def move(extension: str, source: ShoreTelPhone, target: ShoreTelPhone, at: float) -> list[Step]:
    """Extension assignment: the user logs out of one phone and into another."""
    return [line(at, extension, source, "outofservice"), line(at, extension, target)]


SCENARIOS: Final[dict[str, tuple[Step, ...]]] = {
    "login": (line(0, "9007", PHONE_A),),
    "inbound-call": (line(0, "9007", PHONE_A), *inbound_call("1001", "9007", PHONE_A, 5)),
    "outbound-call": (line(0, "9007", PHONE_A), *outbound_call("1002", "9007", PHONE_A, 5)),
    "two-calls": (
        line(0, "9007", PHONE_A),
        *inbound_call("1001", "9007", PHONE_A, 5),
        *outbound_call("1003", "9007", PHONE_A, 25),
    ),
    "consult": (line(0, "9007", PHONE_A), *consult("9007", PHONE_A, 5)),
    "move": (line(0, "9007", PHONE_A), *move("9007", PHONE_A, PHONE_B, 30)),
    "demo": (
        line(0, "9007", PHONE_A),
        line(0, "9008", PHONE_B),
        *inbound_call("1001", "9007", PHONE_A, 5),
        *outbound_call("1002", "9008", PHONE_B, 15),
        line(40, "9008", PHONE_B, "outofservice"),
        *move("9007", PHONE_A, PHONE_B, 45),
    ),
}
SCENARIO_HELP: Final = {
    "login": "extension 9007 logs in at phone 10.20.0.50",
    "inbound-call": "9007 logs in; 6175551212 calls it at +5 s, talk from +10 s to +12 s",
    "outbound-call": "9007 logs in; dials 6175550100 at +5 s, talk +10 s to +15 s, held 1 s",
    "two-calls": "inbound-call, then 9007 dials out at +25 s: talk +30 s to +35 s",
    "consult": "inbound-call held at +15 s while 9007 talks to 6175550199 from +17.5 s to "
    "+22 s; back to the caller from +23 s to +28 s",
    "move": "9007 logs in at 10.20.0.50, moves to 10.20.0.51 at +30 s",
    "demo": "two extensions, an inbound and an outbound call, a log-out and a move",
}


@dataclass
class FeedEntry:
    seq: int
    offset: float
    kind: str
    fields: dict


@dataclass
class BridgeSimulator:
    """The bridge. `start()` serves it on host:port (port 0 picks a free one)."""

    scenario: str
    token: str
    start_time: float | None = None
    pace: str = "instant"
    skew: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    fault: str | None = None
    slow_seconds: float = 3.0
    elapsed: float = 0.0
    boot_id: str = ""
    requests: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}: one of {', '.join(SCENARIOS)}")
        if self.start_time is None:
            self.start_time = time.time()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.boot()

    # Life ----------------------------------------------------------------------------------

    def boot(self) -> None:
        """A fresh process: a new boot id, and the feed begins again from what TAPI
        reports, so the same facts come back under new event ids."""
        self.boot_id = secrets.token_hex(8)
        steps = sorted(SCENARIOS[self.scenario], key=lambda step: step.offset)
        self.feed = [FeedEntry(seq, s.offset, s.kind, s.fields) for seq, s in enumerate(steps, 1)]

    def start(self) -> None:
        self.server = BridgeServer((self.host, self.port), BridgeHandler)
        self.server.simulator = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """The bridge is down: its port refuses connections until start()."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.boot()
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # What the bridge knows ------------------------------------------------------------------

    def now(self) -> float:
        """The bridge's own clock: the true time plus its skew."""
        return time.time() + self.skew

    def released(self) -> list[FeedEntry]:
        """What has happened so far: everything (instant), what the clock has reached
        (realtime), or what a test has let through with `elapsed` (manual)."""
        if self.pace == "instant":
            return self.feed
        elapsed = self.elapsed if self.pace == "manual" else time.time() - self.start_time
        return [entry for entry in self.feed if entry.offset <= elapsed]

    def event(self, entry: FeedEntry) -> dict:
        moment = datetime.fromtimestamp(self.start_time + entry.offset + self.skew, UTC)
        return {"id": f"{self.boot_id}-{entry.seq}", "time": format_time(moment),
                "kind": entry.kind, **entry.fields}  # fmt: skip

    def lines(self) -> list[dict]:
        """Every line as the released events left it: in service at a phone, or not."""
        current: dict[tuple[str, str], dict] = {}
        for entry in self.released():
            if entry.kind != "line":
                continue
            key = (entry.fields["extension"], entry.fields["device"])
            if entry.fields["state"] == "inservice":
                current[key] = {name: value for name, value in entry.fields.items()
                                if name != "state"} | {"in_service": True}  # fmt: skip
            else:
                current.pop(key, None)
        return list(current.values())

    def envelope(self) -> dict:
        moment = datetime.fromtimestamp(self.now(), UTC)
        return {"version": VERSION, "boot_id": self.boot_id, "server_time": format_time(moment)}

    def events_page(self, after: int, limit: int) -> dict:
        released = self.released()
        start = after
        if self.fault == "duplicate":
            start = max(after - 1, 0)  # the last event of the previous page, once more
        page = [entry for entry in released if entry.seq > start][:limit]
        events = [self.event(entry) for entry in page]
        if self.fault == "duplicate":
            events = [copy for event in events for copy in (event, dict(event))]
        last = page[-1].seq if page else after
        return self.envelope() | {
            "events": events,
            "next_cursor": f"{self.boot_id}.{max(last, after)}",
            "more": any(entry.seq > last for entry in released),
        }

    def cursor_position(self, cursor: str) -> int | None:
        """The sequence number a cursor stands for; None if not one of this boot's."""
        if not cursor:
            return 0
        boot_id, _, seq = cursor.partition(".")
        if boot_id != self.boot_id or not seq.isdigit():
            return None
        return int(seq)


class BridgeServer(ThreadingHTTPServer):
    simulator: BridgeSimulator

    def handle_error(self, request: object, client_address: tuple) -> None:
        # A poller that gave up on a slow answer has closed its end: not worth a trace.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("%s hung up before the answer", client_address[0])
        else:
            log.exception("request from %s failed", client_address[0])


class BridgeHandler(BaseHTTPRequestHandler):
    server_version = "QMS-TAPI-bridge-simulator/1"
    protocol_version = "HTTP/1.0"

    @property
    def simulator(self) -> BridgeSimulator:
        return self.server.simulator

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.simulator.requests[url.path] += 1
        if not self.authorized():
            return
        if self.simulator.fault == "slow":
            time.sleep(self.simulator.slow_seconds)
        if self.simulator.fault == "http-500":
            self.fail(500, "internal", "the TAPI line of the simulator fell over")
        elif url.path == "/v1/lines":
            self.answer(200, self.simulator.envelope() | {"lines": self.simulator.lines()})
        elif url.path == "/v1/events":
            self.events(parse_qs(url.query))
        else:
            self.fail(404, "not_found", f"no such resource: {url.path}")

    def authorized(self) -> bool:
        # RFC 6750 §3: a missing token gets a bare challenge, a wrong one invalid_token.
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.simulator.token.encode()
        ):
            return True
        challenge = 'Bearer realm="tapi-bridge"'
        if given:
            challenge += ', error="invalid_token"'
        self.fail(401, "unauthorized", "a valid bearer token is needed", challenge)
        return False

    def events(self, query: dict[str, list[str]]) -> None:
        raw_limit = query.get("limit", [str(DEFAULT_LIMIT)])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            self.fail(400, "bad_request", f"limit must be a whole number from 1 to {MAX_LIMIT}")
            return
        after = self.simulator.cursor_position(query.get("cursor", [""])[0])
        if after is None:
            self.fail(410, "cursor_gone", "this cursor is not one of this boot's; start over")
            return
        self.answer(200, self.simulator.events_page(after, int(raw_limit)))

    def fail(self, status: int, code: str, message: str, challenge: str = "") -> None:
        body = {"error": {"code": code, "message": message}, "boot_id": self.simulator.boot_id}
        self.answer(status, body, {"WWW-Authenticate": challenge} if challenge else {})

    def answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        if self.simulator.fault == "bad-json" and status == 200:
            payload = payload[: len(payload) // 2]  # cut off mid-document
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header comes from the bridge's clock, skew and all.
        return formatdate(self.simulator.now() if timestamp is None else timestamp, usegmt=True)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)
