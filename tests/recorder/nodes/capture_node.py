"""A capture node for real, for the worker tests: a redis-server of the test's own, a TCP
proxy in front of PostgreSQL that the test can cut, `celery -A qms worker -Q capture.test`
as a subprocess, and SIPp phones that call with audio on loopback.

John's desk phone is SIPp on 127.0.0.41 (9001, learned from its REGISTER); the far end, a
registrar that also answers calls, is SIPp on 127.0.0.42. Both stream G.711 audio, so each
call is a recording of known length. The worker captures on lo with the filter
"udp and host 127.0.0.41", so it sees only this test's phones.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from extensions.models import Agent, Extension, Phone
from extensions.services import assign_line
from recorder.nodes.models import CaptureInterface
from tests.conftest import need, need_loopback_capture, need_tool

REPO_ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = Path(__file__).resolve().parent / "sipp"
REGISTER_SCENARIO = SCENARIOS / "register_uac.xml"
AGENT_IP, FAR_END_IP = "127.0.0.41", "127.0.0.42"
NODE = "test"
BPF = f"udp and host {AGENT_IP}"
WORKER_START_SECONDS = 30.0
WORKER_STOP_SECONDS = 40.0
SIPP_SECONDS = 30.0
SIPP_START_SECONDS = 10.0
# The caller hangs up this long after its audio ends.
HANG_UP_AFTER_SECONDS = 0.4


def free_port(kind: int = socket.SOCK_STREAM, ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((ip, 0))
        return probe.getsockname()[1]


def eventually(landed: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not landed():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-6000:] if log.exists() else ""
            pytest.fail(f"{what} within {seconds:.0f} s; worker log:\n{tail}")
        time.sleep(0.2)


def stop_process(process: subprocess.Popen, seconds: float) -> int | None:
    """SIGTERM, then the exit status; SIGKILL and None for one that did not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


# --- Redis --------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """redis-server on a free port, without persistence: a restart forgets every message."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [need_tool("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, (self.workdir / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
            return True
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None


# --- a TCP proxy in front of PostgreSQL ---------------------------------------------------------


class TcpProxy:
    """Forwards a local port to PostgreSQL; cut() closes every connection and refuses new
    ones, so the database is unreachable from the worker while the test still reads it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def open(self) -> None:
        self.stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            self.stopping.set()
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, 5)
            except OSError:
                client.close()
                continue
            # Idle is normal for a database connection: no timeout once connected.
            client.settimeout(None)
            server.settimeout(None)
            with self.lock:
                if self.stopping.is_set():  # cut while this one was being connected
                    client.close()
                    server.close()
                    return
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def database_url(host: str | None = None, port: int | None = None) -> str:
    """The test database as a DATABASE_URL (pytest-django's test_<name>), optionally
    reached through another host and port."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    address = f"{host or db['HOST']}:{port or db['PORT'] or 5432}"
    return f"postgres://{quote(db['USER'], safe='')}{password}@{address}/{quote(db['NAME'])}"


# --- the worker ----------------------------------------------------------------------------


@dataclass
class CaptureWorker:
    """`celery -A qms worker -Q capture.test` on node "test", configured only through its
    environment, as an operator runs it."""

    workdir: Path
    broker_url: str
    database_url: str
    process: subprocess.Popen | None = None
    starts: int = 0
    lease_seconds: int = 10
    # The interpreter it runs on (a production virtualenv's, tests/production), the queues
    # it takes, and settings over those the tests give every worker.
    python: str = sys.executable
    queues: str = ""  # capture.<node> when empty
    overrides: dict[str, str] = field(default_factory=dict)
    # The node it is, and the interface its node captures on (tests/recorder/nodes/
    # test_two_nodes.py runs two nodes on veth pairs).
    node: str = NODE
    interface: str = "lo"

    @property
    def log(self) -> Path:
        return self.workdir / "worker.log"

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
        env.update(
            DEBUG="1",
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            QMS_NODE=self.node,
            QMS_VAR_DIR=str(self.workdir / "var"),
            QMS_SPOOL_DIR=str(self.workdir / "var" / "spool"),
            QMS_RECORDINGS_DIR=str(settings.QMS_RECORDINGS_DIR),
            QMS_CAPTURE_HEARTBEAT_SECONDS="1",
            QMS_CAPTURE_LEASE_SECONDS=str(self.lease_seconds),
            QMS_OUTBOX_REDELIVER_SECONDS="3",
        )
        env.update(self.overrides)
        return env

    def start(self, capturing: bool = True) -> None:
        """Start the worker and wait until its sniffer captures on lo (or, for a worker
        that should not capture, until it is ready)."""
        command = [self.python, "-m", "celery", "-A", "qms", "worker", "--pool", "solo"]
        command += ["--queues", self.queues or f"capture.{self.node}"]
        command += ["--hostname", f"capture-{self.node}@%h"]
        command += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat"]
        before = self.captures_announced()
        with self.log.open("a") as log:
            log.write(f"\n===== worker start {self.starts + 1}\n")
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.environment(), stdout=log, stderr=log
            )
        self.starts += 1
        if capturing:
            started = lambda: self.captures_announced() > before  # noqa: E731
        else:
            started = lambda: self.text().count(" ready.") >= self.starts  # noqa: E731
        eventually(
            lambda: started() or self.process.poll() is not None,
            WORKER_START_SECONDS,
            "the worker did not start",
            self.log,
        )
        assert self.process.poll() is None, self.text()[-6000:]

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sniffer_pids(self) -> list[int]:
        """The sniffer processes this worker started, in order."""
        started = rf"{re.escape(self.interface)}: sniffer started \(pid (\d+)\)"
        return [int(pid) for pid in re.findall(started, self.text())]

    def captures_announced(self) -> int:
        return self.text().count(f"capturing on {self.interface}")

    def stop(self) -> int | None:
        if self.process is None:
            return 0
        status = stop_process(self.process, WORKER_STOP_SECONDS)
        self.process = None
        return status

    def outbox(self) -> Path:
        return self.workdir / "var" / "outbox" / self.interface


# --- SIPp phones --------------------------------------------------------------------------------


@dataclass
class Phones:
    """John's desk phone (127.0.0.41) and the far end (127.0.0.42), as SIPp processes."""

    sipp: str
    workdir: Path
    far_end: subprocess.Popen | None = None
    far_end_port: int = 0
    calls: list[subprocess.Popen] = field(default_factory=list)
    # Where the two are, the phone's number, and what the phone's SIPp is run through
    # (`ip netns exec <ns>` for a phone in a network namespace of its own).
    agent_ip: str = AGENT_IP
    far_end_ip: str = FAR_END_IP
    extension: str = "9001"
    agent_side: list[str] = field(default_factory=list)
    agent_ports: Iterator[int] = field(default_factory=lambda: iter(range(31000, 32000, 2)))

    def agent_port(self) -> int:
        """A free port of the phone's: any in a namespace of its own, which is empty."""
        if self.agent_side:
            return next(self.agent_ports)
        return free_port(socket.SOCK_DGRAM, self.agent_ip)

    def audio(self, seconds: float) -> Path:
        """Raw G.711 µ-law for SIPp to stream: any byte is a valid sample."""
        path = self.workdir / f"audio-{seconds:g}s.ulaw"
        if not path.exists():
            path.write_bytes(bytes(range(256)) * int(8000 * seconds / 256 + 1))
            path.write_bytes(path.read_bytes()[: int(8000 * seconds)])
        return path

    def scenario(self, name: str, **values: object) -> Path:
        path = self.workdir / f"{name}-{'-'.join(str(v) for v in values.values())}".replace(
            "/", "_"
        )
        path = path.with_suffix(".xml")
        text = (SCENARIOS / f"{name}.xml").read_text()
        for key, value in values.items():
            text = text.replace("{" + key + "}", str(value))
        path.write_text(text)
        return path

    def start_far_end(self, seconds: float, audio: Path | None = None) -> None:
        """The registrar and callee, streaming `seconds` of audio into every call (or the
        µ-law file `audio`). Its ports are free when picked but may be taken before SIPp
        binds them: a far end that exits at once is started again on others."""
        far_end = self.far_end_ip
        scenario = self.scenario("callee_uas", audio=audio or self.audio(seconds))
        for _ in range(3):
            self.far_end_port = free_port(socket.SOCK_DGRAM, far_end)
            command = [self.sipp, "-sf", str(scenario), "-i", far_end]
            command += ["-p", str(self.far_end_port)]
            command += ["-mp", str(free_port(socket.SOCK_DGRAM, far_end)), "-nostdin"]
            command += ["-trace_err"]
            self.far_end = self._spawn(command, "far-end")
            if self._listening(self.far_end, far_end, self.far_end_port):
                return
            stop_process(self.far_end, 5)
        log = self.far_end.output.read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
        pytest.fail(f"SIPp's far end did not listen (exit {self.far_end.poll()}):\n{log}")

    @staticmethod
    def _listening(process: subprocess.Popen, ip: str, port: int) -> bool:
        """Whether `process` came to hold its SIP port (a bind there fails) before it
        exited, so that nothing is sent to a far end still starting."""
        deadline = time.monotonic() + SIPP_START_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((ip, port))
            except OSError:
                return process.poll() is None
            time.sleep(0.05)
        return False

    def register(self, extension: str = "9001") -> None:
        command = [*self.agent_side, self.sipp, f"{self.far_end_ip}:{self.far_end_port}"]
        command += ["-sf", str(REGISTER_SCENARIO), "-i", self.agent_ip]
        command += ["-p", str(self.agent_port())]
        command += ["-key", "extension", extension, "-key", "expires", "3600", "-m", "1"]
        self._finish(self._spawn([*command, *self._limits()], "register"))

    def call(
        self, seconds: float, wait: bool = True, audio: Path | None = None
    ) -> subprocess.Popen:
        """John calls 9002; both sides speak for `seconds` (John the µ-law file `audio`, if
        given), then John hangs up."""
        talk_ms = int((seconds + HANG_UP_AFTER_SECONDS) * 1000)
        sent = audio or self.audio(seconds)
        scenario = self.scenario("agent_uac", audio=sent, talk_ms=talk_ms)
        command = [*self.agent_side, self.sipp, f"{self.far_end_ip}:{self.far_end_port}"]
        command += ["-sf", str(scenario), "-s", "9002", "-key", "extension", self.extension]
        command += ["-i", self.agent_ip, "-p", str(self.agent_port())]
        command += ["-mp", str(self.agent_port()), "-m", "1"]
        caller = self._spawn([*command, *self._limits()], "call")
        if wait:
            self._finish(caller)
        return caller

    @staticmethod
    def _limits() -> list[str]:
        return ["-nostdin", "-trace_err", "-timeout", f"{SIPP_SECONDS:.0f}s", "-timeout_error"]

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        output = self.workdir / f"sipp-{len(self.calls):02d}-{name}.log"
        with output.open("w") as log:
            process = subprocess.Popen(
                command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        process.output = output  # type: ignore[attr-defined]
        self.calls.append(process)
        return process

    def _finish(self, phone: subprocess.Popen) -> None:
        try:
            status = phone.wait(timeout=SIPP_SECONDS + 5)
        except subprocess.TimeoutExpired:
            status = None
        if status == 0:
            return
        far_end = ""
        if self.far_end is not None and self.far_end is not phone:
            far_end = (f"\nthe far end (exit {self.far_end.poll()}):\n"
                       f"{self.far_end.output.read_text(errors='replace')[-2000:]}")  # fmt: skip
        pytest.fail(f"SIPp failed:\n{phone.output.read_text()[-3000:]}{far_end}")

    def stop_all(self) -> None:
        for process in self.calls:
            stop_process(process, 5)


def loopback_usable(ip: str) -> bool:
    try:
        free_port(socket.SOCK_DGRAM, ip)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def phones(
    workdir: Path, far_end_seconds: float, far_end_audio: Path | None = None
) -> Iterator[Phones]:
    sipp = need_tool("sipp")
    need_loopback_capture()
    need(
        loopback_usable(AGENT_IP) and loopback_usable(FAR_END_IP),
        "needs the loopback addresses 127.0.0.41 and .42 (Linux routes all of 127/8 to lo)",
    )
    found = Phones(sipp, workdir)
    try:
        found.start_far_end(far_end_seconds, far_end_audio)
        yield found
    finally:
        found.stop_all()


def johns_desk() -> Agent:
    """John's phone has 9001 as line 1; where it is comes from its REGISTER."""
    john = Agent.objects.create(name="John")
    assign_line(Phone.objects.create(device_name="john-desk", protocol="sip"), 1, "9001")
    Extension.objects.filter(number="9001").update(agent=john)
    return john


def loopback_interface() -> CaptureInterface:
    return CaptureInterface.objects.create(node=NODE, interface="lo", bpf_filter=BPF)
