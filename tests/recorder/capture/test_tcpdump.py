"""The live source on the real loopback interface, through the real tcpdumps: what its two
rings hand over, what it says when it cannot capture, what it counts when the kernel drops."""

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
from recorder.capture.tcpdump import (
    HANDOVER_SECONDS,
    MEDIA,
    RINGS,
    SIGNALLING,
    Block,
    TcpdumpCapture,
)
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
        self.frames: list[bytes] = []
        self.counted: list[str] = []

    @property
    def payloads(self) -> list[bytes]:
        """Each frame's UDP payload (IPv4 without options in Ethernet)."""
        return [frame[42:] for frame in self.frames]

    def tick(self, now: float) -> None:
        pass

    def take(self, at: float, linktype: int, frame: bytes) -> None:
        self.slow_path(at, linktype, frame)

    def slow_path(self, at: float, linktype: int, frame: bytes) -> None:
        self.frames.append(frame)

    def count(self, kind: str) -> None:
        self.counted.append(kind)


class Rings:
    """What each ring of one interface handed over, through a PcapStream of its own."""

    def __init__(self) -> None:
        self.frames = {ring: Frames() for ring in RINGS}
        self.streams = {ring: PcapStream(self.frames[ring]) for ring in RINGS}
        self.ended: list[str] = []  # the rings whose stream ended, in turn

    def feed(self, block: Block) -> None:
        if not block.data:
            self.ended.append(block.ring)
        self.streams[block.ring].feed(block.data)

    def end(self) -> None:
        for stream in self.streams.values():
            stream.end()

    def __getitem__(self, ring: str) -> Frames:
        return self.frames[ring]


def everything(capture: TcpdumpCapture, seconds: float = 0.0) -> Rings:
    """What the capture hands over for `seconds` while it runs, then up to its pipes' end
    after a stop."""
    rings = Rings()
    try:
        deadline = time.monotonic() + seconds
        for block in capture.blocks() if seconds else ():
            if block is not None:
                rings.feed(block)
            if time.monotonic() > deadline:
                break
        capture.stop()
        for block in capture.rest():
            rings.feed(block)
    finally:
        capture.close()
    rings.end()
    return rings


def send(port: int, payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, ("127.0.0.1", port))


def rtp_like(index: int, size: int) -> bytes:
    """A datagram that starts as RTP version 2 does (RFC 3550 section 5.1), numbered."""
    return b"\x80\x00" + index.to_bytes(4, "big") + b"r" * (size - 6)


def test_every_datagram_sent_while_capturing_is_handed_over_by_the_stop_in_its_ring() -> None:
    port = free_port()
    capture = TcpdumpCapture(["lo"], f"udp port {port}", buffer_mib=4, signalling_buffer_mib=2)
    capture.start()
    text = [f"datagram {index} ".encode() * (1 + index % 50) for index in range(500)]
    media = [rtp_like(index, 20 + index % 300) for index in range(500)]
    send(port, [datagram for pair in zip(text, media, strict=True) for datagram in pair])
    # Some now, while it runs; the rest after the stop, up to the pipes' end.
    rings = everything(capture, seconds=2)
    assert rings[SIGNALLING].payloads == text
    assert rings[MEDIA].payloads == media
    (stats,) = capture.stats()
    assert (stats.interface, stats.dropped, stats.interface_dropped) == ("lo", 0, 0)
    assert stats.received >= len(text) + len(media)
    assert rings[SIGNALLING].counted == rings[MEDIA].counted == []


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


@pytest.mark.parametrize("ring", RINGS)
def test_a_tcpdump_that_ends_by_itself_stops_the_capture_loudly(ring: str) -> None:
    capture = TcpdumpCapture(["lo"], f"udp port {free_port()}", buffer_mib=2)
    capture.start()
    try:
        assert sorted(child.ring for child in capture.running) == sorted(RINGS)
        (child,) = [child for child in capture.running if child.ring == ring]
        child.process.kill()
        with pytest.raises(
            CaptureFileError, match=rf"Capture on lo stopped: tcpdump ended by itself \({ring}"
        ):
            for _ in capture.blocks():
                pass
    finally:
        capture.close()


def test_signalling_is_all_there_while_rtp_overflows_its_ring() -> None:
    # A media ring of 1 MiB and pipes nobody reads: the media tcpdump waits on its pipe,
    # its ring fills, and the kernel drops the RTP, as on a mirror port the engine cannot
    # keep up with. SIP sent among that RTP is in a ring of its own, and all of it is kept;
    # the RTP sent just before each SIP message shows the pressure it was sent under.
    port = free_port()
    capture = TcpdumpCapture(["lo"], f"udp port {port}", buffer_mib=1, signalling_buffer_mib=4)
    capture.start()
    messages = [sip(f"OPTIONS sip:{index}@qms SIP/2.0", [f"CSeq: {index} OPTIONS"])
                for index in range(200)]  # fmt: skip
    before_message = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for index in range(40_000):
            sender.sendto(rtp_like(index, 1200), ("127.0.0.1", port))
            if index % 200 == 199:
                before_message.append(rtp_like(index, 1200))
                sender.sendto(messages[index // 200], ("127.0.0.1", port))
    # A stop loses what a ring has not yet handed over (the loop catches up before it
    # stops): the signalling ring's last block is handed over within a second.
    time.sleep(HANDOVER_SECONDS + 1)
    rings = everything(capture)
    assert rings[SIGNALLING].payloads == messages
    (stats,) = capture.stats()
    assert stats.dropped > 20_000 and stats.signalling_dropped == 0
    kept = rings[MEDIA].payloads
    assert len(kept) + stats.dropped <= stats.received
    # Had the SIP shared the media ring, most of it would have gone the way of its neighbours.
    assert len(set(before_message) - set(kept)) > 0.8 * len(before_message)


ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from recorder.capture.tcpdump import TcpdumpCapture
capture = TcpdumpCapture(["lo"], sys.argv[1], buffer_mib=2, pid_file=Path(sys.argv[2]))
capture.start()
print(*(c.process.pid for c in capture.running), flush=True)
time.sleep(60)
"""


def orphaned_tcpdumps(bpf: str, pid_file: Path) -> list[int]:
    """The tcpdumps (both rings') whose capture process was killed outright (SIGKILL: no
    finally, no atexit), as the OOM killer would: their pids."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, bpf, str(pid_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    tcpdumps = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(tcpdumps) == 2 and all(_alive(pid) for pid in tcpdumps)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return tcpdumps


def test_orphaned_tcpdumps_end_at_their_next_packet(tmp_path: Path) -> None:
    port = free_port()
    tcpdumps = orphaned_tcpdumps(f"udp port {port}", tmp_path / "tcpdump.pid")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in tcpdumps):
        # A write into a pipe nobody reads ends each (SIGPIPE): a packet for each ring.
        send(port, [b"anyone?", rtp_like(0, 40)])
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in tcpdumps)


def test_orphaned_tcpdumps_that_see_nothing_are_ended_by_the_next_capture(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "tcpdump.pid"
    quiet = f"udp port {free_port()}"
    tcpdumps = orphaned_tcpdumps(quiet, pid_file)
    time.sleep(0.5)
    # Nothing for them to write: they would hold their rings for ever.
    assert all(_alive(pid) for pid in tcpdumps)
    again = TcpdumpCapture(["lo"], quiet, buffer_mib=2, pid_file=pid_file)
    again.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in tcpdumps):
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in tcpdumps)
        lines = [line.split() for line in pid_file.read_text().splitlines()]
        assert lines == [[str(child.process.pid), str(os.getpid())] for child in again.running]
        assert len(lines) == 2
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
