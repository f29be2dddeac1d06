"""python manage.py tapi_bridge_sim --port N --scenario NAME"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.shoretel.bridge.simulator import FAULTS, SCENARIO_HELP, SCENARIOS, BridgeSimulator


class Command(BaseCommand):
    help = (
        "Serve a reference TAPI bridge (docs/tapi-bridge.md) from a scripted scenario, for "
        "tests and the demo: "
        + "; ".join(f"{name}: {text}" for name, text in SCENARIO_HELP.items())
    )
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, required=True, help="Port to listen on.")
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
        parser.add_argument(
            "--token",
            default=os.environ.get("QMS_TAPI_SIM_TOKEN", ""),
            help="The bearer token to require (default: $QMS_TAPI_SIM_TOKEN).",
        )
        parser.add_argument(
            "--start",
            default="",
            help="When the scenario begins: epoch seconds or an ISO 8601 time (default: now).",
        )
        parser.add_argument(
            "--pace",
            choices=["realtime", "instant"],
            default="realtime",
            help="realtime: each event appears when its time comes; instant: all at once.",
        )
        parser.add_argument(
            "--skew", type=float, default=0.0, help="Seconds the bridge's clock is ahead."
        )
        parser.add_argument("--fault", choices=FAULTS, help="Misbehave this way throughout.")
        parser.add_argument("--duration", type=float, default=0, help="Stop after S seconds.")

    def handle(self, *args: object, **options: object) -> None:
        if not options["token"]:
            raise CommandError("Give a bearer token with --token or $QMS_TAPI_SIM_TOKEN.")
        simulator = BridgeSimulator(
            scenario=options["scenario"],
            token=options["token"],
            start_time=start_time(options["start"]),
            pace=options["pace"],
            skew=options["skew"],
            host=options["host"],
            port=options["port"],
            fault=options["fault"],
        )
        try:
            simulator.start()
        except OSError as error:
            where = f"{options['host']}:{options['port']}"
            raise CommandError(f"cannot listen on {where}: {error}") from None
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        self.stdout.write(
            f"TAPI bridge simulator on {simulator.url} (scenario {options['scenario']}, "
            f"boot id {simulator.boot_id})"
        )
        self.stdout.flush()
        try:
            stopping.wait(options["duration"] or None)
        finally:
            simulator.stop()


def start_time(raw: str) -> float:
    if not raw:
        return time.time()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise CommandError(f"--start {raw!r} is neither epoch seconds nor an ISO time.") from None
    if moment.tzinfo is None:
        raise CommandError(f"--start {raw!r} needs a UTC offset, e.g. 2026-11-02T09:00:00Z.")
    return moment.timestamp()
