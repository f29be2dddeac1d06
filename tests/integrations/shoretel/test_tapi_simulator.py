"""The reference bridge over real HTTP on 127.0.0.1, read by QMS's client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integrations.observations import CallEvent
from integrations.shoretel.bridge.client import (
    BadResponse,
    BridgeClient,
    BridgeDown,
    BridgeHTTPError,
    BridgeRefused,
    BridgeTimeout,
    CursorGone,
)
from integrations.shoretel.bridge.simulator import BridgeSimulator
from tests.integrations.tapi_bridge import START, TOKEN

REPO_ROOT = Path(__file__).resolve().parents[3]
Sim = Callable[..., BridgeSimulator]


def client(simulator: BridgeSimulator, token: str = TOKEN, timeout: float = 2) -> BridgeClient:
    return BridgeClient(simulator.url, token, timeout)


def test_the_lines_place_each_extension_on_its_phone(bridge_sim: Sim) -> None:
    lines, _ = client(bridge_sim("move")).lines()
    assert [(line.extension, line.device, line.ip, line.line_number) for line in lines.lines] == [
        ("9007", "001049A0D151", "10.20.0.51", 1)
    ]


def test_the_feed_pages_by_cursor_and_says_when_more_is_waiting(bridge_sim: Sim) -> None:
    reader = client(bridge_sim("inbound-call"))
    first, _ = reader.events("", 4)
    rest, _ = reader.events(first.next_cursor, 100)
    assert (len(first.events), first.more) == (4, True)
    assert (len(rest.events), rest.more) == (2, False)
    states = [event.state for event in first.events + rest.events]
    assert states == ["inservice", "offering", "accepted", "connected", "disconnected", "idle"]
    connected = first.events[3].observation
    assert connected.event == CallEvent.ANSWER
    assert connected.at == datetime.fromtimestamp(START + 10, UTC)
    again, _ = reader.events(rest.next_cursor, 100)
    assert (again.events, again.more) == ((), False)


def test_realtime_pace_releases_events_as_their_time_comes(bridge_sim: Sim) -> None:
    simulator = bridge_sim("inbound-call", pace="realtime", start_time=time.time() - 6)
    page, _ = client(simulator).events("", 100)
    assert [event.state for event in page.events] == ["inservice", "offering", "accepted"]


def test_a_missing_or_wrong_token_is_refused_with_a_bearer_challenge(bridge_sim: Sim) -> None:
    simulator = bridge_sim("login")
    with pytest.raises(BridgeRefused, match="refused the token"):
        client(simulator, token="guess").lines()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(simulator.url + "v1/lines", timeout=2)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer realm="tapi-bridge"'
    assert json.loads(refused.value.read())["error"]["code"] == "unauthorized"


def test_a_cursor_of_an_earlier_boot_is_gone_and_the_new_boot_id_says_so(bridge_sim: Sim) -> None:
    simulator = bridge_sim("login")
    page, _ = client(simulator).events("", 100)
    old_boot = simulator.boot_id
    simulator.restart()
    with pytest.raises(CursorGone) as gone:
        client(simulator).events(page.next_cursor, 100)
    assert gone.value.boot_id == simulator.boot_id != old_boot
    replay, _ = client(simulator).events("", 100)
    assert replay.envelope.boot_id == simulator.boot_id
    assert [event.event_id for event in replay.events] != [event.event_id for event in page.events]


def test_a_skewed_bridge_stamps_its_answers_and_events_with_its_own_clock(bridge_sim: Sim) -> None:
    simulator = bridge_sim("login", skew=120.0)
    page, exchange = client(simulator).events("", 100)
    reading = exchange.clock(page.envelope.server_time)
    assert reading.offset == pytest.approx(120.0, abs=0.5)
    assert exchange.date - datetime.now(UTC) > timedelta(seconds=118)
    assert page.events[0].at == datetime.fromtimestamp(START + 120, UTC)


def test_each_failure_of_the_bridge_is_its_own_error(bridge_sim: Sim) -> None:
    simulator = bridge_sim("login", slow_seconds=2.0)
    simulator.fault = "http-500"
    with pytest.raises(BridgeHTTPError) as failed:
        client(simulator).lines()
    assert failed.value.kind == "http-500"
    simulator.fault = "bad-json"
    with pytest.raises(BadResponse, match="not JSON"):
        client(simulator).events("", 10)
    simulator.fault = "slow"
    with pytest.raises(BridgeTimeout):
        client(simulator, timeout=0.5).lines()
    simulator.fault = None
    simulator.stop()
    with pytest.raises(BridgeDown, match="connection refused"):
        client(simulator).lines()


def test_the_duplicate_fault_sends_every_event_twice_and_repeats_the_last(
    bridge_sim: Sim,
) -> None:
    simulator = bridge_sim("inbound-call", fault="duplicate")
    first, _ = client(simulator).events("", 2)
    second, _ = client(simulator).events(first.next_cursor, 1)
    numbers = [[int(event.event_id.rpartition("-")[2]) for event in page.events]
               for page in (first, second)]  # fmt: skip
    assert numbers == [[1, 1, 2, 2], [2, 2]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_management_command_serves_a_scenario_until_it_is_stopped() -> None:
    port = free_port()
    env = {**os.environ, "DEBUG": "1", "QMS_TAPI_SIM_TOKEN": TOKEN}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "manage.py", "tapi_bridge_sim", "--port", str(port),
               "--scenario", "outbound-call", "--pace", "instant",
               "--start", str(START)]  # fmt: skip
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner = server.stdout.readline()
        assert f"TAPI bridge simulator on http://127.0.0.1:{port}/" in banner
        reader = BridgeClient(f"http://127.0.0.1:{port}", TOKEN, 5)
        page, _ = reader.events("", 100)
        lines, _ = reader.lines()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode == 0
    assert [event.state for event in page.events][-4:] == [
        "onhold",
        "connected",
        "disconnected",
        "idle",
    ]
    assert page.events[1].observation.caller == "9007"
    assert [line.extension for line in lines.lines] == ["9007"]
    assert page.envelope.boot_id in banner
