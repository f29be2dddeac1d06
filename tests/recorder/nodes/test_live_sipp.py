"""Live capture over loopback: SIPp phones register and call while `manage.py sniff` runs.

Each test starts a SIPp registrar-and-callee on 127.0.0.1 (scenarios in sipp/), starts
`manage.py sniff --interface lo` as a subprocess writing to the test database, waits until
sniff says it is capturing, drives SIPp phones from 127.0.0.11, .12 and .13, waits until
what they did has reached PostgreSQL, stops sniff with SIGTERM and checks the directory and
the call log. Every test uses free ports of its own and captures only its registrar's port,
so parallel runs on one machine do not see each other's signalling.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from extensions.models import Agent, Binding, Extension, Phone, SeenExtension
from extensions.services import assign_line
from recorder.models import Call
from tests.conftest import need, need_loopback_capture, need_tool

REPO_ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = Path(__file__).resolve().parent / "sipp"
REGISTRAR_IP = "127.0.0.1"
JOHN_IP, MARY_IP, JOHN_ELSEWHERE_IP = "127.0.0.11", "127.0.0.12", "127.0.0.13"
SNIFF_START_SECONDS = 20.0
SNIFF_STOP_SECONDS = 15.0
SIPP_SECONDS = 15
# The Done-when of issue 3 asks for bindings in the admin "within a second of the packet";
# the wait is longer so a loaded CI machine does not fail on scheduling alone.
LANDING_SECONDS = 5.0


@dataclass
class Directory:
    john: Agent
    mary: Agent
    john_phone: Phone
    mary_phone: Phone


@dataclass
class Started:
    """A subprocess of the test and the file its output goes to."""

    process: subprocess.Popen
    output: Path

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    def stop(self, seconds: float) -> int | None:
        """SIGTERM, then the exit status; None when it did not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class Loopback:
    """SIPp processes and `sniff` on loopback, all killed when the test ends."""

    sipp: str
    workdir: Path
    registrar_port: int = 0
    registrar_media_port: int = 0
    started: list[Started] = field(default_factory=list)

    # -- SIPp ------------------------------------------------------------------------------

    def start_registrar(self) -> None:
        """The registrar and callee (sipp/registrar_uas.xml), on a free port of 127.0.0.1."""
        self.registrar_port = free_udp_port(REGISTRAR_IP)
        self.registrar_media_port = free_udp_port(REGISTRAR_IP)
        command = [self.sipp, "-sf", str(SCENARIOS / "registrar_uas.xml")]
        command += ["-i", REGISTRAR_IP, "-p", str(self.registrar_port)]
        command += ["-mp", str(self.registrar_media_port), "-nostdin", "-trace_err"]
        self._spawn(command, "registrar", self.workdir)

    def register(self, extension: str, phone_ip: str, expires: int = 3600) -> None:
        """A phone at `phone_ip` registers `extension` (sipp/register_uac.xml)."""
        self._run_phone(
            "register_uac.xml",
            phone_ip,
            ["-key", "extension", extension, "-key", "expires", str(expires), "-m", "1"],
        )

    def call(self, extension: str, phone_ip: str, callee: str, calls: int = 1) -> int:
        """`calls` calls from `extension` at `phone_ip` to `callee` (sipp/call_uac.xml);
        returns the RTP port the calling phone announced."""
        media_port = free_udp_port(phone_ip)
        arguments = ["-key", "extension", extension, "-s", callee, "-mp", str(media_port)]
        arguments += ["-m", str(calls), "-r", "10"]
        self._run_phone("call_uac.xml", phone_ip, arguments)
        return media_port

    def _run_phone(self, scenario: str, phone_ip: str, arguments: list[str]) -> None:
        command = [self.sipp, f"{REGISTRAR_IP}:{self.registrar_port}"]
        command += ["-sf", str(SCENARIOS / scenario), "-i", phone_ip]
        command += ["-p", str(free_udp_port(phone_ip)), *arguments]
        command += ["-nostdin", "-trace_err", "-timeout", f"{SIPP_SECONDS}s", "-timeout_error"]
        phone = self._spawn(command, f"{scenario}-{phone_ip}", self.workdir)
        try:
            returncode = phone.process.wait(timeout=SIPP_SECONDS + 5)
        except subprocess.TimeoutExpired:
            returncode = None
        assert returncode == 0, f"SIPp {scenario} from {phone_ip} failed:\n{phone.tail()}"

    def _spawn(
        self, command: list[str], name: str, cwd: Path, env: dict[str, str] | None = None
    ) -> Started:
        output = self.workdir / f"{len(self.started):02d}-{name}.log"
        with output.open("w") as sink:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
            )
        started = Started(process, output)
        self.started.append(started)
        return started

    # -- sniff -----------------------------------------------------------------------------

    @contextmanager
    def sniffing(self, decode_errors: str = "none") -> Iterator[None]:
        """`manage.py sniff --interface lo` on this test's registrar port, capturing
        before the block starts and stopped by SIGTERM when it ends; its summary must
        count `decode_errors` and no storage failure."""
        command = [sys.executable, "manage.py", "sniff", "--interface", "lo"]
        command += ["--bpf", f"udp port {self.registrar_port}", "--node", "live-test"]
        sniff = self._spawn(command, "sniff", REPO_ROOT, sniff_environment())
        self._wait_until_capturing(sniff)
        yield
        returncode = sniff.stop(SNIFF_STOP_SECONDS)
        summary = sniff.tail()
        assert returncode == 0, f"sniff did not stop cleanly on SIGTERM:\n{summary}"
        assert f"decode errors: {decode_errors}" in summary, summary
        assert "storage failures" not in summary, summary

    @staticmethod
    def _wait_until_capturing(sniff: Started) -> None:
        deadline = time.monotonic() + SNIFF_START_SECONDS
        while time.monotonic() < deadline:
            if "capturing on lo" in sniff.output.read_text(errors="replace"):
                return
            if sniff.process.poll() is not None:
                pytest.fail(f"sniff exited before capturing:\n{sniff.tail()}")
            time.sleep(0.05)
        pytest.fail(f"sniff did not start capturing in time:\n{sniff.tail()}")

    def kill_all(self) -> None:
        """Every subprocess this test started, SIGTERM first, SIGKILL for the deaf."""
        for started in self.started:
            if started.stop(5) is None:
                started.process.kill()
                started.process.wait()


def free_udp_port(ip: str) -> int:
    """A UDP port nobody holds on `ip` now (the kernel's choice of an ephemeral port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((ip, 0))
        return probe.getsockname()[1]


def sniff_environment() -> dict[str, str]:
    """This process's environment, pointed at the test database so sniff writes where the
    test reads."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    user = quote(db["USER"], safe="")
    environment = dict(os.environ)
    environment.update(
        DEBUG="1",
        DATABASE_URL=f"postgres://{user}{password}@{db['HOST']}{port}/{quote(db['NAME'])}",
    )
    return environment


def eventually(landed: Callable[[], bool], seconds: float = LANDING_SECONDS) -> None:
    """Wait until sniff has written what the phones did; the assertions after it say what
    is missing when it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not landed():
        time.sleep(0.1)


def loopback_address_is_usable(ip: str) -> bool:
    try:
        free_udp_port(ip)
    except OSError:
        return False
    return True


@pytest.fixture
def loopback(postgresql: None, tmp_path: Path) -> Iterator[Loopback]:
    sipp = need_tool("sipp")
    need_loopback_capture()
    need(
        all(map(loopback_address_is_usable, (JOHN_IP, MARY_IP, JOHN_ELSEWHERE_IP))),
        "needs the loopback addresses 127.0.0.11-13 (Linux routes all of 127/8 to lo)",
    )
    live = Loopback(sipp, tmp_path)
    try:
        live.start_registrar()
        yield live
    finally:
        live.kill_all()


@pytest.fixture
def directory(postgresql: None) -> Directory:
    """John and Mary as in the product's example: each one's extension is line 1 on their
    own phone and line 2 on the other's."""
    john, mary = Agent.objects.create(name="John"), Agent.objects.create(name="Mary")
    john_phone = Phone.objects.create(device_name="john-desk", protocol=Phone.Protocol.SIP)
    mary_phone = Phone.objects.create(device_name="mary-desk", protocol=Phone.Protocol.SIP)
    assign_line(john_phone, 1, "9001")
    assign_line(john_phone, 2, "9002")
    assign_line(mary_phone, 1, "9002")
    assign_line(mary_phone, 2, "9001")
    Extension.objects.filter(number="9001").update(agent=john)
    Extension.objects.filter(number="9002").update(agent=mary)
    return Directory(john, mary, john_phone, mary_phone)


def open_bindings(number: str) -> list[Binding]:
    return list(Binding.objects.filter(extension_number=number, ended_at__isnull=True))


def ended_calls() -> int:
    return Call.objects.filter(state=Call.State.ENDED).count()


def test_registrations_from_two_phones_bind_their_extensions_to_their_ips(
    loopback: Loopback, directory: Directory
) -> None:
    with loopback.sniffing():
        loopback.register("9001", JOHN_IP)
        loopback.register("9002", MARY_IP)
        eventually(lambda: bool(open_bindings("9001") and open_bindings("9002")))

    (john_binding,) = open_bindings("9001")
    (mary_binding,) = open_bindings("9002")
    assert (john_binding.ip, john_binding.source) == (JOHN_IP, "sip-register")
    assert (mary_binding.ip, mary_binding.source) == (MARY_IP, "sip-register")
    assert (john_binding.phone, john_binding.line_number) == (directory.john_phone, 1)
    assert (mary_binding.phone, mary_binding.line_number) == (directory.mary_phone, 1)
    assert (john_binding.expires_at - john_binding.first_seen).total_seconds() == 3600
    directory.john.refresh_from_db()
    directory.mary.refresh_from_db()
    assert (directory.john.current_ip, directory.mary.current_ip) == (JOHN_IP, MARY_IP)


def test_three_answered_calls_from_9001_to_9002_each_leave_an_ended_call_row(
    loopback: Loopback, directory: Directory
) -> None:
    with loopback.sniffing():
        john_media_port = loopback.call("9001", JOHN_IP, "9002", calls=3)
        eventually(lambda: ended_calls() == 3)

    calls = list(Call.objects.all())
    assert len(calls) == 3
    assert len({call.call_id for call in calls}) == 3
    for call in calls:
        assert (call.protocol, call.caller, call.callee) == ("sip", "9001", "9002")
        assert (call.state, call.end_reason) == ("ended", "bye")
        assert call.started_at <= call.answered_at <= call.ended_at
        assert (call.caller_ip, call.callee_ip) == (JOHN_IP, REGISTRAR_IP)
        assert sorted((media["side"], media["ip"], media["port"]) for media in call.media) == [
            ("callee", REGISTRAR_IP, loopback.registrar_media_port),
            ("caller", JOHN_IP, john_media_port),
        ]
        assert (call.extension, call.agent, call.node) == ("9001", directory.john, "live-test")


def test_9001_registering_from_a_new_ip_moves_john_and_keeps_the_old_binding(
    loopback: Loopback, directory: Directory
) -> None:
    with loopback.sniffing():
        loopback.register("9001", JOHN_IP)
        eventually(lambda: bool(open_bindings("9001")))
        loopback.register("9001", JOHN_ELSEWHERE_IP)
        eventually(lambda: [row.ip for row in open_bindings("9001")] == [JOHN_ELSEWHERE_IP])

    history = list(Binding.objects.filter(extension_number="9001").order_by("first_seen"))
    assert [(row.ip, row.source) for row in history] == [
        (JOHN_IP, "sip-register"),
        (JOHN_ELSEWHERE_IP, "sip-register"),
    ]
    before, now = history
    assert (before.end_reason, before.ended_at) == ("moved", now.first_seen)
    assert now.ended_at is None
    directory.john.refresh_from_db()
    assert directory.john.current_ip == JOHN_ELSEWHERE_IP


def test_a_register_with_expires_zero_ends_the_binding_as_unregistered(
    loopback: Loopback, directory: Directory
) -> None:
    with loopback.sniffing():
        loopback.register("9001", JOHN_IP)
        eventually(lambda: bool(open_bindings("9001")))
        loopback.register("9001", JOHN_IP, expires=0)
        eventually(lambda: not open_bindings("9001"))

    (binding,) = Binding.objects.filter(extension_number="9001")
    assert (binding.ip, binding.source) == (JOHN_IP, "sip-register")
    assert binding.end_reason == "unregistered"
    assert binding.ended_at is not None and binding.ended_at >= binding.first_seen
    directory.john.refresh_from_db()
    assert directory.john.current_ip is None


def test_sniff_stopped_right_after_a_registration_still_applies_it(
    loopback: Loopback, directory: Directory
) -> None:
    # No wait before the SIGTERM: the 200 OK is still in libpcap's buffer when the stop
    # comes, and sniff must drain it rather than drop it.
    with loopback.sniffing():
        loopback.register("9001", JOHN_IP)

    (binding,) = open_bindings("9001")
    assert (binding.ip, binding.source) == (JOHN_IP, "sip-register")


def test_hostile_numbers_on_the_wire_cost_no_call_and_stop_no_capture(
    loopback: Loopback, directory: Directory
) -> None:
    # A 200-digit "extension" registered (and answered 2xx by the registrar), then a call
    # whose caller ID carries a NUL, then an ordinary call: on PostgreSQL, which refuses
    # NUL in text, each call is stored, and both claims (the registration's and the NUL
    # caller's binding) are refused and counted.
    with loopback.sniffing(decode_errors="bad-extension 2"):
        loopback.register("9" * 200, JOHN_ELSEWHERE_IP)
        loopback.call("555%00123", JOHN_IP, "9002")
        loopback.call("9001", JOHN_IP, "9002")
        eventually(lambda: ended_calls() == 2)

    callers = sorted(Call.objects.filter(state=Call.State.ENDED).values_list("caller", flat=True))
    assert callers == ["555\ufffd123", "9001"]
    assert not SeenExtension.objects.filter(number__startswith="999").exists()
    assert not Binding.objects.filter(ip=JOHN_ELSEWHERE_IP).exists()
