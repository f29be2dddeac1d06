"""The live source on the real loopback interface, through the real tcpdump: what it hands
over, what it says when it cannot capture, what it counts when the kernel drops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.capture.sources import CaptureFileError
from recorder.capture.synthesis import sip
from recorder.capture.tcpdump import TcpdumpCapture
from recorder.engine.engine import Engine
from recorder.engine.pcapfile import PcapStream
from recorder.nodes.live import CaptureLoop
from tests.conftest import need_loopback_capture
from tests.recorder.collected import Collected

ROOT = Path(__file__).resolve().parents[3]
PHONE_IP = "127.0.0.41"  # Linux routes all of 127/8 to lo


@pytest.fixture(autouse=True)
def loopback_capture() -> None:
    need_loopback_capture()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Frames:
    """A PcapStream's taker that keeps each frame's UDP payload: what reached the engine."""

    def __init__(self) -> None:
        from recorder.engine.calls import MediaIndex
        from recorder.engine.sink import EngineStats

        self.media = MediaIndex()
        self.next_tick = float("inf")
        self.stats = EngineStats()
        self.payloads: list[bytes] = []
        self.counted: list[str] = []

    def tick(self, now: float) -> None:
        pass

    def take(self, at: float, linktype: int, frame: bytes) -> None:
        self.slow_path(at, linktype, frame)

    def slow_path(self, at: float, linktype: int, frame: bytes) -> None:
        self.payloads.append(frame[42:])

    def count(self, kind: str) -> None:
        self.counted.append(kind)


def send(port: int, payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, ("127.0.0.1", port))


def test_every_datagram_sent_while_capturing_is_handed_over_by_the_stop() -> None:
    port = free_port()
    capture = TcpdumpCapture(["lo"], f"udp port {port}", buffer_mib=4)
    capture.start()
    sent = [f"datagram {index} ".encode() * (1 + index % 50) for index in range(500)]
    taker = Frames()
    stream = PcapStream(taker)
    try:
        send(port, sent)
        # Some now, while it runs; the rest after the stop, up to the pipe's end.
        deadline = time.monotonic() + 2
        for block in capture.blocks():
            if block is not None:
                stream.feed(block.data)
            if time.monotonic() > deadline:
                break
        capture.stop()
        for block in capture.rest():
            stream.feed(block.data)
    finally:
        capture.close()
    stream.end()
    assert taker.payloads == sent
    (stats,) = capture.stats()
    assert (stats.interface, stats.dropped, stats.interface_dropped) == ("lo", 0, 0)
    assert stats.received >= len(sent)
    assert taker.counted == []


def test_a_loop_stopped_right_after_a_registration_still_feeds_it() -> None:
    # The stop comes before the loop read anything: the REGISTER and its 200 OK are still
    # in tcpdump's ring or the pipe, and the loop catches up with them before it stops
    # tcpdump.
    port = free_port()
    capture = TcpdumpCapture(["lo"], f"udp port {port}", buffer_mib=4)
    sink = Collected()
    engine = Engine(sink)
    loop = CaptureLoop(3600, lambda *_: None)
    capture.start()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with phone, registrar:
        phone.bind((PHONE_IP, 0))  # not the registrar's address, which is never a phone's
        registrar.bind(("127.0.0.1", port))
        register, ok = registration(phone.getsockname()[1])
        phone.sendto(register, ("127.0.0.1", port))
        registrar.sendto(ok, phone.getsockname())
    loop.stop()
    loop.run(capture, engine)
    assert [(seen.extension, seen.ip) for seen in sink.bindings] == [("9001", PHONE_IP)]


def registration(phone_port: int) -> list[bytes]:
    """A REGISTER of 9001 from the phone's port and its 200 OK (RFC 3261 §10)."""
    via = [f"Via: SIP/2.0/UDP {PHONE_IP}:{phone_port};branch=z9hG4bKreg1"]
    common = ["From: <sip:9001@pbx>;tag=1", "To: <sip:9001@pbx>", "Call-ID: reg-1@qms"]
    contact = [f"Contact: <sip:9001@{PHONE_IP}:{phone_port}>;expires=3600", "CSeq: 1 REGISTER"]
    return [
        sip("REGISTER sip:pbx SIP/2.0", via + common + contact),
        sip("SIP/2.0 200 OK", via + common + contact),
    ]


def test_an_interface_that_does_not_exist_is_refused_with_tcpdumps_reason() -> None:
    capture = TcpdumpCapture(["lo", "qms-nosuch0"], "udp")
    with pytest.raises(CaptureFileError, match=r"Cannot capture on qms-nosuch0: .*No such device"):
        capture.start()
    assert capture.running == []  # lo's tcpdump was stopped too


def test_a_filter_tcpdump_cannot_compile_is_refused_with_its_reason() -> None:
    capture = TcpdumpCapture(["lo"], "udp and and")
    with pytest.raises(CaptureFileError, match=r"Cannot capture on lo: .*filter expression"):
        capture.start()


def test_a_tcpdump_that_ends_by_itself_stops_the_capture_loudly() -> None:
    capture = TcpdumpCapture(["lo"], f"udp port {free_port()}", buffer_mib=2)
    capture.start()
    try:
        (child,) = capture.running
        child.process.kill()
        with pytest.raises(CaptureFileError, match=r"Capture on lo stopped: tcpdump ended"):
            for _ in capture.blocks():
                pass
    finally:
        capture.close()


def test_a_full_ring_is_counted_as_kernel_drops() -> None:
    # A ring of 1 MiB and a pipe nobody reads: tcpdump waits on the pipe, its ring fills,
    # and the kernel drops the rest, as on a mirror port the engine cannot keep up with.
    port = free_port()
    capture = TcpdumpCapture(["lo"], f"udp port {port}", buffer_mib=1)
    capture.start()
    taker = Frames()
    stream = PcapStream(taker)
    try:
        payload = b"x" * 1200
        send(port, [payload] * 30000)
        capture.stop()
        for block in capture.rest():
            stream.feed(block.data)
    finally:
        capture.close()
    (stats,) = capture.stats()
    assert stats.dropped > 0
    assert len(taker.payloads) + stats.dropped <= stats.received
    assert 0 < len(taker.payloads) < 30000


ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from recorder.capture.tcpdump import TcpdumpCapture
capture = TcpdumpCapture(["lo"], sys.argv[1], buffer_mib=2, pid_file=Path(sys.argv[2]))
capture.start()
print(*(c.process.pid for c in capture.running), flush=True)
time.sleep(60)
"""


def orphaned_tcpdump(bpf: str, pid_file: Path) -> int:
    """A tcpdump whose capture process was killed outright (SIGKILL: no finally, no
    atexit), as the OOM killer would: its pid."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, bpf, str(pid_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    tcpdump = int(parent.stdout.readline())
    assert _alive(tcpdump)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return tcpdump


def test_an_orphaned_tcpdump_ends_at_its_next_packet(tmp_path: Path) -> None:
    port = free_port()
    tcpdump = orphaned_tcpdump(f"udp port {port}", tmp_path / "tcpdump.pid")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(tcpdump):
        send(port, [b"anyone?"])  # its write into a pipe nobody reads ends it (SIGPIPE)
        time.sleep(0.05)
    assert not _alive(tcpdump)


def test_an_orphaned_tcpdump_that_sees_nothing_is_ended_by_the_next_capture(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "tcpdump.pid"
    quiet = f"udp port {free_port()}"
    tcpdump = orphaned_tcpdump(quiet, pid_file)
    time.sleep(0.5)
    assert _alive(tcpdump)  # nothing for it to write: it would hold its ring for ever
    again = TcpdumpCapture(["lo"], quiet, buffer_mib=2, pid_file=pid_file)
    again.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(tcpdump):
            time.sleep(0.05)
        assert not _alive(tcpdump)
        (child,) = again.running
        assert pid_file.read_text().split() == [str(child.process.pid), str(os.getpid())]
    finally:
        again.close()
    assert not pid_file.exists()


def test_a_capture_running_beside_keeps_its_tcpdump(tmp_path: Path) -> None:
    # Two captures on one interface with one pid file (two sniffs on lo): the second must
    # not end the first's tcpdump, whose capture process is alive.
    pid_file = tmp_path / "tcpdump.pid"
    first = TcpdumpCapture(["lo"], "udp port 9", buffer_mib=2, pid_file=pid_file)
    first.start()
    second = TcpdumpCapture(["lo"], "udp port 9", buffer_mib=2, pid_file=pid_file)
    try:
        second.start()
        time.sleep(0.3)
        assert all(child.process.poll() is None for child in first.running)
    finally:
        second.close()
        first.close()


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for init to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
