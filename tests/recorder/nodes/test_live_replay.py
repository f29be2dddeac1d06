"""`manage.py sniff` keeps up with a replayed busy link: 100 concurrent SIP calls, replayed
onto loopback by tcpreplay at 10,000 packets/s, each become one complete recording with
every RTP packet of both directions. A functional test at a modest rate, not a timed one:
bench/live.py measures the rates (bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from recorder.capture import traffic
from recorder.models import Recording
from tests.conftest import need_loopback_capture, need_tool
from tests.recorder.nodes.test_live_sipp import REPO_ROOT, Started, sniff_environment

CALLS, SECONDS, RATE = 100, 8.0, 10_000
PACKETS_EACH_WAY = round(SECONDS * 50)  # G.711 at 20 ms
SNIFF_START_SECONDS, SNIFF_STOP_SECONDS = 20.0, 60.0


def test_a_hundred_calls_replayed_at_ten_thousand_packets_a_second_lose_nothing(
    postgresql: None, tmp_path: Path
) -> None:
    tcpreplay = need_tool("tcpreplay")
    need_loopback_capture()
    capture = tmp_path / "calls.pcap"
    traffic.write(capture, traffic.packets(traffic.make_calls(CALLS), SECONDS, use_sccp=False))
    output = tmp_path / "sniff.log"
    command = [sys.executable, "manage.py", "sniff", "--interface", "lo"]
    # The generator's addresses only: not the test's own database traffic on lo.
    command += ["--bpf", "udp and net 10.0.0.0/8", "--node", "replay", "--stats-every", "2"]
    with output.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=sniff_environment(), stdout=log, stderr=log
        )
    sniff = Started(process, output)
    try:
        deadline = time.monotonic() + SNIFF_START_SECONDS
        while "capturing on lo" not in output.read_text(errors="replace"):
            assert process.poll() is None, f"sniff ended before capturing:\n{sniff.tail()}"
            assert time.monotonic() < deadline, f"sniff did not start:\n{sniff.tail()}"
            time.sleep(0.05)
        replayed = subprocess.run(
            [tcpreplay, "-K", f"--pps={RATE}", "-i", "lo", str(capture)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert replayed.returncode == 0, replayed.stderr
        assert sniff.stop(SNIFF_STOP_SECONDS) == 0, sniff.tail()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary = sniff.tail()
    assert "lo: " in summary and " 0 dropped by the kernel" in summary, summary
    recordings = list(Recording.objects.select_related("signalling"))
    assert len(recordings) == CALLS, summary
    for recording in recordings:
        assert recording.status == Recording.Status.COMPLETE, recording.status_detail
        assert recording.signalling.end_reason == "bye"
        assert recording.signalling.capture_dropped == 0
        directions = recording.quality.values()
        assert len(directions) == 2
        assert all(d["received"] == PACKETS_EACH_WAY and d["lost"] == 0 for d in directions), (
            recording.call_id,
            recording.quality,
        )
