"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from integrations.shoretel.bridge.simulator import BridgeSimulator
from tests.integrations.tapi_bridge import START, TOKEN


@pytest.fixture
def bridge_sim() -> Iterator[Callable[..., BridgeSimulator]]:
    """Start reference TAPI bridges on free ports of 127.0.0.1 (instant pace, the test
    token, the fixed START); every one is stopped at the end of the test."""
    started: list[BridgeSimulator] = []

    def start(scenario: str, **options: object) -> BridgeSimulator:
        options = {"token": TOKEN, "start_time": START, "pace": "instant"} | options
        simulator = BridgeSimulator(scenario, **options)
        simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()
