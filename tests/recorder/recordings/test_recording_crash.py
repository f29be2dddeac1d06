"""kill -9 in the middle of calls, for real, and the recovery the next start runs.

A child Python process (its own interpreter, the production settings module, this test's
PostgreSQL database and spool folder) drives the capture engine with a DatabaseSink over
three generated SIP calls of 30 s, paced ten times faster than real time, and says after
each packet how far it got. The test kills it with SIGKILL half-way through the calls,
reads what the child left on disk with its own parser, runs the start-up recovery
(`recover_spools`, as `sniff` and `import_pcap` do) and checks that every call became a
partial recording holding the audio the child had written, and nothing beyond the kill.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from recorder.capture import traffic
from recorder.models import Call, Recording
from recorder.recordings.recovery import recover_spools

REPO_ROOT = Path(__file__).resolve().parents[3]
CALLS = 3
CALL_SECONDS = 30.0
SPEEDUP = 10.0
# Killed this far into the calls' media (capture time): mid-call, and after each call's
# log has been handed to the kernel a few times (64 KB buffers, ~18 KB/s per call).
KILL_AFTER_MEDIA_SECONDS = 12.0
CHILD_SECONDS = 30.0
PACKET_SECONDS = 0.020
# Ethernet, IPv4, UDP and RTP headers, then 160 bytes of G.711: the generator's RTP frames.
RTP_FRAME_BYTES = 14 + 20 + 8 + 12 + 160
# The RTP log reaches the kernel once a second of capture (recorder/engine/engine.py tick), or
# when a direction has 256 packets waiting (recorder/media/rtplog.py): at most that much
# of a call's log is still in the dead process's memory at the kill.
LOG_BUFFER_SECONDS = 1.0
# One packet the child may have fed after its last report and before the kill.
UNREPORTED_SECONDS = PACKET_SECONDS

# The log's record header (recorder/media/rtplog.py): receiver uint8, magic 0xB1, packet
# count uint16, packet bytes uint32, little-endian; then count float64 arrival times,
# count uint16 lengths, and the packets. The first record is the manifest: receiver 0xFF,
# magic 0xB2, count 0, then that many bytes of JSON.
LOG_BLOCK = struct.Struct("<BBHI")

CHILD = """
import sys, time
from pathlib import Path

import django

django.setup()

from recorder.capture.sources import read_capture
from recorder.engine.engine import Engine
from recorder.sinks.database import DatabaseSink

capture, spool_root, speedup = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
engine = Engine(DatabaseSink(node="crash-test"), set(), spool_root=spool_root)
began, first = time.monotonic(), None
for at, linktype, frame in read_capture(capture):
    first = at if first is None else first
    delay = began + (at - first) / speedup - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    engine.feed(at, linktype, frame)
    print(f"{at:.6f}", flush=True)
print("finished", flush=True)
"""


@dataclass(frozen=True)
class LoggedCall:
    """What a call's log held at the kill, read without QMS code."""

    call_id: str
    packets: int
    audio_seconds: float


def read_spool(path: Path) -> LoggedCall:
    """The whole records of a call's RTP log; the audio they span by RTP timestamps, each
    direction from its first packet's arrival (20 ms G.711 packets)."""
    data = path.read_bytes()
    code, magic, count, size = LOG_BLOCK.unpack_from(data, 0)
    assert (code, magic, count) == (0xFF, 0xB2, 0)
    manifest = json.loads(data[LOG_BLOCK.size : LOG_BLOCK.size + size])
    offset, directions = LOG_BLOCK.size + size, {}
    while offset + LOG_BLOCK.size <= len(data):
        receiver, magic, count, total = LOG_BLOCK.unpack_from(data, offset)
        end = offset + LOG_BLOCK.size + 10 * count + total
        if magic != 0xB1 or end > len(data):
            break  # a block torn by the kill
        arrivals = struct.unpack_from(f"<{count}d", data, offset + LOG_BLOCK.size)
        lengths = struct.unpack_from(f"<{count}H", data, offset + LOG_BLOCK.size + 8 * count)
        packet_at = offset + LOG_BLOCK.size + 10 * count
        for arrival, length in zip(arrivals, lengths, strict=True):
            timestamp = struct.unpack_from("!I", data, packet_at + 4)[0]
            packet_at += length
            first = directions.setdefault(receiver, [arrival, timestamp, timestamp, 0])
            first[2] = max(first[2], timestamp)
            first[3] += 1
        offset = end
    start = min(first_arrival for first_arrival, *_ in directions.values())
    end = max(
        first_arrival + (last - first_ts) / 8000 + PACKET_SECONDS
        for first_arrival, first_ts, last, _ in directions.values()
    )
    packets = sum(count for *_, count in directions.values())
    return LoggedCall(manifest["call_id"], packets, end - start)


def child_environment(spool_root: Path) -> dict[str, str]:
    """This process's environment pointed at the test database and spool folder, with the
    production settings module (tests.settings would make a scratch folder of its own)."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    environment = dict(os.environ)
    environment.update(
        DJANGO_SETTINGS_MODULE="qms.settings",
        DEBUG="1",
        DATABASE_URL=(
            f"postgres://{quote(db['USER'], safe='')}{password}@{db['HOST']}{port}"
            f"/{quote(db['NAME'])}"
        ),
        QMS_SPOOL_DIR=str(spool_root),
        QMS_RECORDINGS_DIR=str(settings.QMS_RECORDINGS_DIR),
    )
    return environment


def last_reported(output: Path) -> float:
    """The last capture time the child printed; its log lines (dated) share the output."""
    reported = [_moment(line) for line in output.read_text().split("\n")[:-1]]
    moments = [at for at in reported if at is not None]
    return moments[-1] if moments else 0.0


def _moment(line: str) -> float | None:
    try:
        return float(line)
    except ValueError:
        return None


def kill_mid_call(capture: Path, spool_root: Path, output: Path, kill_at: float) -> float:
    """Run the child until it has fed the capture up to `kill_at` and its three calls are
    in the database, SIGKILL it, and return the last capture time it reported."""
    command = [sys.executable, "-c", CHILD, str(capture), str(spool_root), str(SPEEDUP)]
    with output.open("w") as sink:
        child = subprocess.Popen(
            command, cwd=REPO_ROOT, env=child_environment(spool_root), stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + CHILD_SECONDS
        while last_reported(output) < kill_at or Call.objects.count() < CALLS:
            assert child.poll() is None, f"the child ended early:\n{output.read_text()[-3000:]}"
            assert time.monotonic() < deadline, output.read_text()[-3000:]
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "finished" not in output.read_text()
    return last_reported(output)


def test_calls_cut_by_kill_9_become_partial_recordings_at_the_next_start(
    postgresql: None, tmp_path: Path
) -> None:
    capture, spool_root = tmp_path / "three-calls.pcap", tmp_path / "spool"
    calls = traffic.make_calls(CALLS)
    traffic.write(capture, traffic.packets(calls, CALL_SECONDS, use_sccp=False))
    media_start = next(
        at
        for at, frame in traffic.packets(calls, CALL_SECONDS, use_sccp=False)
        if len(frame) == RTP_FRAME_BYTES
    )

    killed_at = kill_mid_call(
        capture, spool_root, tmp_path / "child.log", media_start + KILL_AFTER_MEDIA_SECONDS
    )

    spools = sorted(path for path in spool_root.iterdir() if path.suffix == ".rtp")
    logged = {found.call_id: found for found in map(read_spool, spools)}
    assert len(logged) == CALLS
    assert all(found.packets > 0 for found in logged.values())
    assert not Recording.objects.exists()

    assert len(recover_spools(spool_root)) == CALLS

    assert list(spool_root.iterdir()) == []
    rows = {call.call_id: call for call in Call.objects.all()}
    assert set(rows) == set(logged)
    recordings = list(Recording.objects.select_related("signalling"))
    assert len(recordings) == CALLS
    for recording in recordings:
        found = logged[recording.call_id]
        assert recording.signalling == rows[recording.call_id]
        assert recording.status == Recording.Status.PARTIAL
        assert recording.status_detail == "the capture process stopped during the call"
        # Everything the log held is in the audio, and nothing beyond the kill.
        assert recording.duration_seconds > 0
        assert recording.duration_seconds >= killed_at - media_start - LOG_BUFFER_SECONDS
        assert abs(recording.duration_seconds - found.audio_seconds) <= PACKET_SECONDS
        assert recording.duration_seconds <= (
            killed_at + PACKET_SECONDS + UNREPORTED_SECONDS - media_start
        )
        stored = Path(recording.file.path)
        assert recording.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
        with wave.open(str(stored)) as audio:
            assert (audio.getnchannels(), audio.getframerate()) == (2, 8000)
            assert audio.getnframes() / 8000 == pytest.approx(recording.duration_seconds)
