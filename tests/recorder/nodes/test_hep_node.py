"""A HEP listener on a capture node: the worker starts `capture_sniffer --hep` for a
CaptureInterface of kind HEP, and that sniffer's outbox carries each call with its HEP
agent's capture id to the database, where the call keeps its node and its agent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.models import Call
from recorder.nodes.models import CaptureInterface
from recorder.nodes.node import SnifferProcess
from recorder.sinks.ordered import apply_in_order
from recorder.sinks.outbox import RunReader, run_meta, runs_of
from tests.recorder.capture.hep_build import hep3_of_frame
from tests.recorder.nodes.test_hep_sniff import (
    AGENT,
    COLLECTOR,
    REPO_ROOT,
    Sniff,
    wait_for,
    whole_call,
)
from tests.recorder.nodes.test_live_sipp import free_udp_port, sniff_environment

pytestmark = pytest.mark.usefixtures("postgresql")


def test_the_worker_starts_a_hep_sniffer_for_a_hep_listener() -> None:
    row = CaptureInterface.objects.create(
        node="node-h", kind=CaptureInterface.Kind.HEP, interface="0.0.0.0:9060"
    )

    command = SnifferProcess(row, "node-h").command()

    assert command[command.index("--hep") + 1] == "0.0.0.0:9060"
    assert "--interface" not in command and "--bpf" not in command


def test_a_hep_sniffers_outbox_gives_each_call_its_node_and_agent(tmp_path: Path) -> None:
    port = free_udp_port(COLLECTOR)
    address = f"{COLLECTOR}:{port}"
    outbox = tmp_path / "outbox"
    environment = sniff_environment() | {
        "QMS_OUTBOX_DIR": str(outbox),
        "QMS_SPOOL_DIR": str(tmp_path / "spool"),
    }
    command = [sys.executable, "manage.py", "capture_sniffer", "--node", "node-h"]
    output = tmp_path / "sniffer.log"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [*command, "--hep", address], cwd=REPO_ROOT, env=environment,
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    sniffer = Sniff(process, output, port)
    try:
        wait_for(lambda: f"capturing on {address}" in sniffer.said() or process.poll() is not None)
        assert process.poll() is None, sniffer.said()
        call = whole_call("hep-node@pbx", time.time())
        sniffer.send([hep3_of_frame(at, frame, AGENT) for at, frame in call])
        sniffer.stop()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    (run,) = runs_of(outbox / address)
    meta = run_meta(run)
    for record in RunReader(run).read(1, 1000):
        apply_in_order(meta["run"], record.seq, record.kind, record.event, meta["node"])

    stored = Call.objects.get(call_id="hep-node@pbx")
    assert (stored.node, stored.hep_capture_id, stored.end_reason) == ("node-h", AGENT, "bye")
