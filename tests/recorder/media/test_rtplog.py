"""The capture loop's RTP log: every complete block survives, a torn tail ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from integrations.observations import Side
from recorder.media.rtplog import (
    MAX_BLOCK_PACKETS,
    LoggedPacket,
    PendingRun,
    RtpLog,
    read_blocks,
    read_log,
    read_manifest,
)
from tests.conftest import mounted_tmpfs

ROOT = Path(__file__).resolve().parents[3]


def test_packets_read_back_in_order_with_their_direction(tmp_path: Path) -> None:
    log = RtpLog(tmp_path / "call", {"call_id": "c1"})
    log.append(1.5, Side.CALLER, b"\x80\x00abc")
    log.append(1.52, Side.CALLEE, b"\x80\x08defg")
    log.close()
    assert list(read_log(tmp_path / "call")) == [
        LoggedPacket(1.5, Side.CALLER, b"\x80\x00abc"),
        LoggedPacket(1.52, Side.CALLEE, b"\x80\x08defg"),
    ]
    assert read_manifest(tmp_path / "call") == {"call_id": "c1"}


def test_a_log_is_one_file_that_opens_with_its_manifest_and_keeps_it_when_reopened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "1700000000-abc.rtp"
    first = RtpLog(path, {"call_id": "c1", "protocol": "sip"})
    first.append(1.0, Side.CALLER, b"\x80\x00one")
    first.close()
    # The same call logged again (a capture restarted on the same file): appended to.
    again = RtpLog(path, {"call_id": "someone else"})
    again.append(2.0, Side.CALLEE, b"\x80\x00two")
    again.close()
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes()[:2] == b"\xff\xb2"
    assert read_manifest(path) == {"call_id": "c1", "protocol": "sip"}
    assert [p.packet for p in read_log(path)] == [b"\x80\x00one", b"\x80\x00two"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xb2\x00",
        b"\x00\xb1\x01\x00\x03\x00\x00\x00",
        b"\xff\xb2\x00\x00\x10\x00\x00\x00{}",
    ],
    ids=["empty", "torn-header", "a-block-first", "cut-short"],
)
def test_a_log_without_a_whole_manifest_first_is_refused_with_a_reason(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "x.rtp"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="manifest"):
        read_manifest(path)
    assert list(read_log(path)) == []


def test_a_whole_run_after_single_packets_keeps_every_block_within_16_bits(
    tmp_path: Path,
) -> None:
    """A run as long as a block can be, appended after packets still pending: they are
    written first, so no block counts more than MAX_BLOCK_PACKETS, and the order holds."""
    log = RtpLog(tmp_path / "call", {}, block_packets=MAX_BLOCK_PACKETS)
    for index in range(10):
        log.append(float(index), Side.CALLEE, b"\x80\x00" + bytes([index]))
    count = MAX_BLOCK_PACKETS
    arrivals = np.arange(10, 10 + count, dtype="<f8")
    payloads = np.arange(count, dtype=">u2").tobytes()
    log.append_run(1, PendingRun(count, arrivals.tobytes(), b"\x02\x00" * count, payloads))
    log.close()
    blocks = list(read_blocks(tmp_path / "call"))
    assert [len(block.lengths) for block in blocks] == [10, MAX_BLOCK_PACKETS]
    logged = list(read_log(tmp_path / "call"))
    assert [packet.arrival for packet in logged] == [float(at) for at in range(10 + count)]
    assert logged[10].packet == b"\x00\x00" and logged[-1].packet == b"\xff\xfe"


def test_a_torn_last_block_ends_the_log_there(tmp_path: Path) -> None:
    log = RtpLog(tmp_path / "call", {})
    for index in range(3):
        log.append(float(index), Side.CALLER, bytes([index]) * 172)
        log.flush()
    log.close()
    path = tmp_path / "call"
    path.write_bytes(path.read_bytes()[:-40])
    assert [packet.arrival for packet in read_log(tmp_path / "call")] == [0.0, 1.0]


def test_a_killed_writer_leaves_every_flushed_record_readable(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from integrations.observations import Side\n"
        "from recorder.media.rtplog import RtpLog\n"
        f"log = RtpLog(Path({str(tmp_path / 'call')!r}), {{}}, block_packets=20)\n"
        "index = 0\n"
        "while True:\n"
        "    log.append(float(index), Side.CALLEE, index.to_bytes(4, 'big') * 43)\n"
        "    index += 1\n"
        "    if index % 50 == 0:\n"
        "        log.flush()\n"
        # Through a new name: a kill in the middle of a write must not leave it empty.
        f"        new = Path({str(tmp_path / 'progress.new')!r})\n"
        "        new.write_text(str(index))\n"
        f"        new.replace({str(tmp_path / 'progress')!r})\n"
        "    time.sleep(0.0005)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 10
        while (
            not (tmp_path / "progress").exists()
            or int((tmp_path / "progress").read_text() or 0) < 200
        ):
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    flushed = int((tmp_path / "progress").read_text())
    packets = list(read_log(tmp_path / "call"))
    assert len(packets) >= flushed
    assert [packet.packet[:4] for packet in packets] == [
        index.to_bytes(4, "big") for index in range(len(packets))
    ]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a spool disk that fills up for real."""
    with mounted_tmpfs(tmp_path / "small", "64k") as mount_point:
        yield mount_point


def test_a_full_disk_drops_packets_keeps_whole_records_and_resumes(small_disk: Path) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\x00" * 40 * 1024)
    log = RtpLog(small_disk / "call", {"call_id": "c1"}, block_packets=20)
    for index in range(400):  # about 72 KiB of records: more than the disk has left
        log.append(float(index), Side.CALLEE, index.to_bytes(4, "big") * 43)
    log.flush()
    assert log.failed_writes > 0 and log.dropped_packets > 0
    ballast.unlink()  # space returns
    for index in range(400, 420):
        log.append(float(index), Side.CALLEE, index.to_bytes(4, "big") * 43)
    log.close()
    packets = list(read_log(small_disk / "call"))
    numbers = [int.from_bytes(packet.packet[:4], "big") for packet in packets]
    assert numbers[-20:] == list(range(400, 420))
    assert numbers == sorted(numbers) and len(numbers) == log.packets
    assert log.packets + log.dropped_packets == 420
