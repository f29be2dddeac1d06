"""A hostile TAPI bridge: a real HTTP server on 127.0.0.1 that answers /v1/events with
whatever a test scripts (bodies no bridge should send, answers dripped a byte at a time,
redirects), and /v1/lines with an empty, valid line list. It records every request it got
and, for a drip, how many bytes it had sent when the poller hung up."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOOT_ID = "hostile-boot-1"


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def events_page(events: list[dict], **fields: object) -> dict:
    return {"version": "1.0", "boot_id": BOOT_ID, "server_time": now_text(), "events": events,
            "next_cursor": f"{BOOT_ID}.{len(events)}", "more": False} | fields  # fmt: skip


def line_event(index: int, extension: str, ip: str, **fields: object) -> dict:
    return {"id": f"line-{index}", "time": now_text(), "kind": "line", "extension": extension,
            "ip": ip, "line_number": 1, "state": "inservice"} | fields  # fmt: skip


class HostileBridge:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
        self.server.daemon_threads = True
        self.server.bridge = self
        self.requests: list[tuple[str, str]] = []  # (path, Authorization header)
        self.events_answer: Callable[[HostileHandler], None] = lambda handler: handler.json(
            events_page([])
        )
        self.hung_up = threading.Event()
        self.sent_before_hang_up = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # What /v1/events answers ------------------------------------------------------------

    def answers_json(self, body: dict) -> None:
        self.events_answer = lambda handler: handler.json(body)

    def answers_bytes(self, raw: bytes) -> None:
        self.events_answer = lambda handler: handler.raw(200, {}, raw)

    def drips(self, body: dict, interval: float, headers_too: bool = False) -> None:
        self.events_answer = lambda handler: handler.drip(body, interval, headers_too)

    def redirects_to(self, location: str) -> None:
        self.events_answer = lambda handler: handler.raw(302, {"Location": location}, b"")


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    @property
    def bridge(self) -> HostileBridge:
        return self.server.bridge

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        self.bridge.requests.append((path, self.headers.get("Authorization", "")))
        if path == "/v1/events":
            self.bridge.events_answer(self)
        else:
            lines = {"version": "1.0", "boot_id": BOOT_ID, "server_time": now_text(), "lines": []}
            self.json(lines)

    def json(self, body: dict) -> None:
        self.raw(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def raw(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def drip(self, body: dict, interval: float, headers_too: bool) -> None:
        payload = json.dumps(body).encode()
        head = (
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        if headers_too:
            payload = head + payload
        else:
            self.wfile.write(head)
        for index in range(len(payload)):
            if self.bridge.stopping.wait(interval):
                return
            try:
                self.wfile.write(payload[index : index + 1])
                self.wfile.flush()
            except OSError:  # the poller hung up
                self.bridge.sent_before_hang_up = index
                self.bridge.hung_up.set()
                return

    def log_message(self, format: str, *args: object) -> None:
        pass  # the tests read what the poller recorded, not the server's log


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)
    return condition()
