"""Remote capture over HEP: `manage.py sniff --hep 127.0.0.1:PORT` runs as a subprocess
writing to the test database, and the test is the agent, sending HEP packets built to the
specification (tests/recorder/capture/hep_build.py) over loopback UDP: a whole call's SIP
and RTP, which must become one complete recording of both directions with the agent's
capture id on its call; HEPv2; bad datagrams among them, each counted by kind in sniff's
summary and skipped; the shared secret taken and refused.

No capture public or otherwise of HEP traffic exists among ../shared/captures/public (its
heplify-* files are the plain pcaps of heplify's examples), so the packets are built here.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder.capture.synthesis import rtp, sdp, udp
from recorder.models import Call, Recording
from tests.recorder.capture.hep_build import chunk, hep2_of_frame, hep3, hep3_of_frame
from tests.recorder.nodes.test_live_sipp import free_udp_port, sniff_environment
from tests.recorder.recordings.sip_calls import answered_call

REPO_ROOT = Path(__file__).resolve().parents[3]
COLLECTOR = "127.0.0.1"
PHONE, FAR = "10.80.0.11", "10.80.9.1"
PHONE_MEDIA, FAR_MEDIA = 40000, 50000
RTP_PACKETS = 100  # each way: two seconds of G.711 at 20 ms
AGENT = 2001
START_SECONDS, STOP_SECONDS = 30.0, 30.0

pytestmark = pytest.mark.usefixtures("postgresql")

Frames = list[tuple[float, bytes]]


def whole_call(call_id: str, start: float) -> Frames:
    """A phone's answered call, its RTP both ways, then its BYE: the frames the agent saw."""
    signalling = answered_call(
        call_id, PHONE, FAR, sdp(PHONE, PHONE_MEDIA), sdp(FAR, FAR_MEDIA),
        (start, start + 0.2, start + 0.4 + RTP_PACKETS * 0.02),
    )  # fmt: skip
    media = []
    for index in range(RTP_PACKETS):
        at = start + 0.3 + index * 0.02
        voice = bytes([0x55 + index % 7]) * 160
        media.append(
            (at, udp(PHONE, PHONE_MEDIA, FAR, FAR_MEDIA, rtp(index, index * 160, 0x1111, voice)))
        )
        media.append((at + 0.001, udp(FAR, FAR_MEDIA, PHONE, PHONE_MEDIA,
                                      rtp(index, index * 160, 0x2222, voice))))  # fmt: skip
    return sorted(signalling[:3] + media + signalling[3:], key=lambda found: found[0])


@dataclass
class Sniff:
    process: subprocess.Popen
    output: Path
    port: int

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def send(self, datagrams: list[bytes]) -> None:
        """From one agent socket, paced so the collector's receive buffer never fills:
        a drop would make the test's counts the kernel's, not the decoder's."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as agent:
            for index, datagram in enumerate(datagrams):
                agent.sendto(datagram, (COLLECTOR, self.port))
                if index % 50 == 49:
                    time.sleep(0.005)

    def stop(self) -> str:
        """SIGTERM, its clean exit, and its summary."""
        time.sleep(0.5)  # the last datagrams read before the stop
        self.process.terminate()
        try:
            returncode = self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"sniff --hep did not stop on SIGTERM:\n{self.said()[-4000:]}")
        assert returncode == 0, self.said()[-4000:]
        return self.said()


@contextmanager
def sniffing(tmp_path: Path, **environment: str) -> Iterator[Sniff]:
    port = free_udp_port(COLLECTOR)
    command = [sys.executable, "manage.py", "sniff", "--hep", f"{COLLECTOR}:{port}"]
    command += ["--node", "hep-test", "--stats-every", "600"]
    output = tmp_path / f"sniff-{port}.log"
    env = sniff_environment() | environment
    with output.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    sniff = Sniff(process, output, port)
    try:
        wait_for(lambda: "capturing on HEP" in sniff.said() or process.poll() is not None)
        assert process.poll() is None, f"sniff --hep did not start:\n{sniff.said()}"
        yield sniff
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(done: Callable[[], bool], seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def decode_errors(summary: str) -> dict[str, int]:
    line = re.search(r"^decode errors: (.*)$", summary, re.MULTILINE).group(1)
    if line == "none":
        return {}
    return {kind: int(number) for kind, number in re.findall(r"([\w .-]+?) (\d+)(?:, |$)", line)}


def recording_of(call_id: str) -> tuple[Call, Recording]:
    call = Call.objects.get(call_id=call_id)
    return call, Recording.objects.get(signalling=call)


def assert_recorded_whole(call_id: str, capture_id: int) -> None:
    call, recording = recording_of(call_id)
    assert (call.node, call.hep_capture_id, call.end_reason) == ("hep-test", capture_id, "bye")
    assert recording.status == Recording.Status.COMPLETE, recording.status_detail
    received = {way: figures["received"] for way, figures in recording.quality.items()}
    assert received == {"agent_to_far": RTP_PACKETS, "far_to_agent": RTP_PACKETS}


def test_a_whole_call_over_hep_is_one_complete_recording_with_the_agents_id(
    tmp_path: Path,
) -> None:
    call = whole_call("hep-call-1@pbx", time.time())

    with sniffing(tmp_path) as sniff:
        sniff.send([hep3_of_frame(at, frame, AGENT) for at, frame in call])
        summary = sniff.stop()

    assert "decode errors: none" in summary, summary
    assert f"RTP packets: {2 * RTP_PACKETS} matched to calls" in summary, summary
    assert_recorded_whole("hep-call-1@pbx", AGENT)


def test_a_call_sent_as_hepv2_is_recorded_with_its_capture_id(tmp_path: Path) -> None:
    call = whole_call("hep2-call@pbx", time.time())

    with sniffing(tmp_path) as sniff:
        sniff.send([hep2_of_frame(at, frame, capture_id=7) for at, frame in call])
        summary = sniff.stop()

    assert "decode errors: none" in summary, summary
    assert_recorded_whole("hep2-call@pbx", 7)


def bad_datagrams(good: bytes) -> dict[str, list[bytes]]:
    """Each kind of bad input an agent or a stranger sends, by the kind it is counted as."""
    return {
        "hep-short": [b"", b"HEP", b"\x02\x10"],
        "hep-bad-length": [good[:4] + struct.pack("!H", len(good) + 9) + good[6:]],
        "hep-bad-chunk-length": [hep3([good[6:], b"\x00\x00\x00\x0f\x00\x02"])],
        "hep-unknown-version": [b"\x03" + bytes(60), b"HEP4" + good[4:]],
        "hep-no-payload": [hep3([chunk(0x0001, b"\x02")])],
        # A flood of junk: every datagram read, counted and skipped.
        "hep-missing-chunk": [hep3([chunk(0x000F, b"junk %d" % n)]) for n in range(3000)],
    }


def test_bad_hep_is_counted_by_kind_and_skipped_and_the_call_still_recorded(
    tmp_path: Path,
) -> None:
    call = [hep3_of_frame(at, frame, AGENT) for at, frame in whole_call("hep-bad@pbx", time.time())]
    bad = bad_datagrams(call[0])
    # An unknown chunk in every packet of the call: counted, skipped, the packet used.
    with_unknown = [hep3([datagram[6:], chunk(0x4242, b"?")]) for datagram in call]
    datagrams = []
    for index, datagram in enumerate(with_unknown):
        datagrams.append(datagram)
        for faulty in bad.values():
            datagrams.extend(faulty[index :: len(with_unknown)])

    with sniffing(tmp_path) as sniff:
        sniff.send(datagrams)
        summary = sniff.stop()

    assert decode_errors(summary) == {kind: len(found) for kind, found in bad.items()}, summary
    assert f"hep-unknown-chunk {len(call)}" in summary, summary
    assert re.search(rf"hep {COLLECTOR}:\d+: {len(datagrams)} received .*, 0 dropped", summary)
    assert_recorded_whole("hep-bad@pbx", AGENT)


def test_the_shared_secret_is_required_of_every_agent_when_set(tmp_path: Path) -> None:
    keyed = whole_call("hep-keyed@pbx", time.time())
    unkeyed = whole_call("hep-unkeyed@pbx", time.time())

    with sniffing(tmp_path, QMS_HEP_AUTH_KEY="s3cret-hep") as sniff:
        sniff.send([hep3_of_frame(at, f, AGENT, auth_key=b"s3cret-hep") for at, f in keyed])
        sniff.send([hep3_of_frame(at, f, 2002, auth_key=b"guess") for at, f in unkeyed[:5]])
        sniff.send([hep3_of_frame(at, f, 2002) for at, f in unkeyed[5:]])
        summary = sniff.stop()

    assert decode_errors(summary) == {"hep-auth-refused": len(unkeyed)}, summary
    assert_recorded_whole("hep-keyed@pbx", AGENT)
    assert not Call.objects.filter(call_id="hep-unkeyed@pbx").exists()


@pytest.mark.parametrize("secret", [" s3cret", "s3cret\t", "clé"])
def test_a_shared_secret_that_agents_cannot_send_stops_start_up_with_its_name(
    secret: str,
) -> None:
    port = free_udp_port(COLLECTOR)
    finished = subprocess.run(
        [sys.executable, "manage.py", "sniff", "--hep", f"{COLLECTOR}:{port}", "--duration", "1"],
        cwd=REPO_ROOT, env=sniff_environment() | {"QMS_HEP_AUTH_KEY": secret},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert finished.returncode != 0
    assert "QMS_HEP_AUTH_KEY must be printable ASCII" in finished.stderr, finished.stderr
    assert secret.strip() not in finished.stderr
    assert "Traceback" not in finished.stderr


def test_a_hep_address_already_taken_is_said_and_nothing_captured(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((COLLECTOR, 0))
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, "manage.py", "sniff", "--hep", f"{COLLECTOR}:{port}"],
            cwd=REPO_ROOT, env=sniff_environment(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert finished.returncode != 0
    assert f"Cannot listen for HEP on {COLLECTOR}:{port}: Address already in use" in (
        finished.stderr
    ), finished.stderr
