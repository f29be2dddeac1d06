"""Known speech through a live call on loopback, and back out of the recording.

espeak-ng speaks one sentence for the agent and another for the customer; sox makes each an
8 kHz mono G.711 WAV (µ-law, or A-law in the second case). SIPp 3.6 streams a file's bytes
as they are, header included, so each phone streams the WAV's data chunk. John's desk phone
(static IP 127.0.0.11, line 1 = 9001) calls 9002 at a SIPp callee on 127.0.0.1 while
`manage.py sniff --interface lo` records; both sides stream their sentence with SIPp's
`<exec rtp_stream="FILE,1,PT"/>`. The recording's left channel must be John's sentence and
the right channel the customer's: normalised cross-correlation >= 0.99 at the best offset,
and the recording as long as the longer sentence (within 0.1 s).
"""

from __future__ import annotations

import audioop
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import pytest

from extensions.models import Agent, Extension, Phone
from extensions.services import assign_line
from recorder.models import Recording
from tests.conftest import need, need_loopback_capture, need_tool
from tests.recorder.nodes.test_live_sipp import (
    Started,
    free_udp_port,
    loopback_address_is_usable,
    sniff_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
AGENT_IP, CUSTOMER_IP = "127.0.0.11", "127.0.0.1"
AGENT_SENTENCE = "Thank you for calling the support line. This is John. How can I help you today?"
CUSTOMER_SENTENCE = "Hello. My order number is four five seven two, and it has not arrived yet."
RATE = 8000
SNIFF_START_SECONDS = 20.0
SNIFF_STOP_SECONDS = 15.0
LANDING_SECONDS = 10.0
# The caller hangs up this long after its sentence ends, so both sentences are in the call.
HANG_UP_AFTER_SECONDS = 0.6
MIN_CORRELATION = 0.99
DURATION_TOLERANCE = 0.1


@dataclass(frozen=True)
class Law:
    """A G.711 law: sox's name for it, its static RTP payload type and SDP encoding name."""

    sox_encoding: str
    payload_type: int
    encoding_name: str

    def expand(self, codes: bytes) -> bytes:
        expand = audioop.ulaw2lin if self.payload_type == 0 else audioop.alaw2lin
        return expand(codes, 2)


MU_LAW = Law("u-law", 0, "PCMU")
A_LAW = Law("a-law", 8, "PCMA")

CALLEE_SCENARIO = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="customer answers and speaks">
  <recv request="INVITE" crlf="true" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=customer 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP {payload_type}
      a=rtpmap:{payload_type} {encoding_name}/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true">
    <action>
      <exec rtp_stream="{audio},1,{payload_type}" />
    </action>
  </recv>
  <recv request="BYE" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

CALLER_SCENARIO = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent calls and speaks">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: "John" <sip:9001@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:9001@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=john 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP {payload_type}
      a=rtpmap:{payload_type} {encoding_name}/8000

    ]]>
  </send>
  <recv response="100" optional="true" />
  <recv response="200" rrs="true" />
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: "John" <sip:9001@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:9001@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec rtp_stream="{audio},1,{payload_type}" />
    </action>
  </nop>
  <pause milliseconds="{talk_ms}" />
  <send retrans="500">
    <![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: "John" <sip:9001@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:9001@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" />
</scenario>
"""


@dataclass(frozen=True)
class Speech:
    """A sentence as G.711 codes (what SIPp streams) and as the PCM they stand for."""

    codes: Path
    pcm: numpy.ndarray

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE


def data_chunk(path: Path) -> bytes:
    """The samples of a RIFF/WAVE file (its "data" chunk), whatever chunks come before."""
    riff = path.read_bytes()
    assert riff[:4] == b"RIFF" and riff[8:12] == b"WAVE"
    offset = 12
    while offset + 8 <= len(riff):
        name, size = riff[offset : offset + 4], struct.unpack_from("<I", riff, offset + 4)[0]
        if name == b"data":
            return riff[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    pytest.fail(f"{path} has no data chunk")


def speak(workdir: Path, name: str, sentence: str, law: Law, voice: str) -> Speech:
    """espeak-ng's speech, made an 8 kHz mono G.711 WAV by sox; SIPp gets its data chunk."""
    spoken, g711 = workdir / f"{name}-espeak.wav", workdir / f"{name}-{law.encoding_name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(spoken), sentence], check=True)
    subprocess.run(
        ["sox", str(spoken), "-r", str(RATE), "-c", "1", "-e", law.sox_encoding, str(g711)],
        check=True,
    )
    codes = data_chunk(g711)
    streamed = workdir / f"{name}.{law.encoding_name.lower()}"
    streamed.write_bytes(codes)
    pcm = numpy.frombuffer(law.expand(codes), dtype="<i2").astype(numpy.float64)
    return Speech(streamed, pcm)


def best_correlation(channel: numpy.ndarray, source: numpy.ndarray) -> tuple[float, int]:
    """The highest normalised cross-correlation of `source` against any stretch of
    `channel` (zero-padded at both ends), and the offset of that stretch."""
    padded = numpy.concatenate([numpy.zeros(len(source)), channel, numpy.zeros(len(source))])
    size = 1 << (len(padded) + len(source)).bit_length()
    products = numpy.fft.irfft(
        numpy.fft.rfft(padded, size) * numpy.conj(numpy.fft.rfft(source, size)), size
    )[: len(padded) - len(source) + 1]
    energy = numpy.concatenate([[0.0], numpy.cumsum(padded * padded)])
    windows = energy[len(source) :] - energy[: -len(source)]
    scores = products / numpy.sqrt(numpy.maximum(windows, 1e-9) * numpy.dot(source, source))
    lag = int(numpy.argmax(scores))
    return float(scores[lag]), lag - len(source)


@dataclass
class LiveCall:
    """SIPp phones and `sniff` on loopback for one call; every process killed at the end."""

    sipp: str
    workdir: Path
    started: list[Started] = field(default_factory=list)

    def spawn(self, command: list[str], name: str, cwd: Path, env: dict | None = None) -> Started:
        output = self.workdir / f"{len(self.started):02d}-{name}.log"
        with output.open("w") as sink:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
            )
        self.started.append(Started(process, output))
        return self.started[-1]

    def scenario(self, name: str, template: str, **values: object) -> Path:
        path = self.workdir / name
        path.write_text(template.format(**values))
        return path

    @contextmanager
    def sniffing(self, ports: list[int]) -> Iterator[Started]:
        """`manage.py sniff` on lo for this call's SIP and RTP ports only."""
        bpf = " or ".join(f"udp port {port}" for port in ports)
        command = [sys.executable, "manage.py", "sniff", "--interface", "lo", "--bpf", bpf]
        sniff = self.spawn(
            [*command, "--node", "fidelity"], "sniff", REPO_ROOT, sniff_environment()
        )
        deadline = time.monotonic() + SNIFF_START_SECONDS
        while "capturing on lo" not in sniff.output.read_text(errors="replace"):
            if sniff.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sniff did not start capturing:\n{sniff.tail()}")
            time.sleep(0.05)
        yield sniff
        assert sniff.stop(SNIFF_STOP_SECONDS) == 0, sniff.tail()
        assert "decode errors: none" in sniff.tail(), sniff.tail()

    def kill_all(self) -> None:
        for started in self.started:
            if started.stop(5) is None:
                started.process.kill()
                started.process.wait()


@pytest.fixture
def live_call(postgresql: None, tmp_path: Path) -> Iterator[LiveCall]:
    need_tool("espeak-ng")
    need_tool("sox")
    sipp = need_tool("sipp")
    need_loopback_capture()
    need(loopback_address_is_usable(AGENT_IP), f"needs the loopback address {AGENT_IP}")
    live = LiveCall(sipp, tmp_path)
    try:
        yield live
    finally:
        live.kill_all()


@pytest.fixture
def john(postgresql: None) -> Agent:
    """John's desk phone has the static IP 127.0.0.11 and 9001 as line 1: the agent side."""
    john = Agent.objects.create(name="John")
    phone = Phone.objects.create(
        device_name="john-desk", protocol=Phone.Protocol.SIP, static_ip=True, configured_ip=AGENT_IP
    )
    assign_line(phone, 1, "9001")
    Extension.objects.filter(number="9001").update(agent=john)
    return john


def place_call(live: LiveCall, law: Law, agent: Speech, customer: Speech) -> None:
    """The customer's SIPp answers on 127.0.0.1; John's calls it from 127.0.0.11; each
    streams its sentence once; John hangs up after the longer sentence has played."""
    sip_port, agent_rtp = free_udp_port(CUSTOMER_IP), free_udp_port(AGENT_IP)
    customer_rtp = free_udp_port(CUSTOMER_IP)
    sdp = {"payload_type": law.payload_type, "encoding_name": law.encoding_name}
    callee = live.scenario("callee.xml", CALLEE_SCENARIO, audio=customer.codes, **sdp)
    talk_ms = round(1000 * (max(agent.seconds, customer.seconds) + HANG_UP_AFTER_SECONDS))
    caller = live.scenario("caller.xml", CALLER_SCENARIO, audio=agent.codes, talk_ms=talk_ms, **sdp)
    common = ["-nostdin", "-trace_err", "-m", "1", "-timeout", "30s", "-timeout_error"]
    with live.sniffing([sip_port, agent_rtp, customer_rtp]):
        callee_command = [live.sipp, "-sf", str(callee), "-i", CUSTOMER_IP]
        callee_command += ["-p", str(sip_port), "-mp", str(customer_rtp), *common]
        answering = live.spawn(callee_command, "callee", live.workdir)
        caller_command = [live.sipp, f"{CUSTOMER_IP}:{sip_port}", "-sf", str(caller), "-s", "9002"]
        caller_command += ["-i", AGENT_IP, "-p", str(free_udp_port(AGENT_IP))]
        calling = live.spawn(
            [*caller_command, "-mp", str(agent_rtp), *common], "caller", live.workdir
        )
        assert calling.process.wait(timeout=40) == 0, calling.tail()
        assert answering.process.wait(timeout=10) == 0, answering.tail()
        deadline = time.monotonic() + LANDING_SECONDS
        while time.monotonic() < deadline and not Recording.objects.exists():
            time.sleep(0.1)


def channels(recording: Recording) -> tuple[numpy.ndarray, numpy.ndarray, int]:
    with wave.open(recording.file.path) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (2, 2)
        rate, frames = audio.getframerate(), audio.readframes(audio.getnframes())
    stereo = numpy.frombuffer(frames, dtype="<i2").astype(numpy.float64)
    return stereo[0::2], stereo[1::2], rate


@pytest.mark.parametrize("law", [MU_LAW, A_LAW], ids=["mu-law", "a-law"])
def test_each_side_of_a_live_call_is_recorded_on_its_own_channel_as_spoken(
    live_call: LiveCall, john: Agent, law: Law
) -> None:
    agent = speak(live_call.workdir, "agent", AGENT_SENTENCE, law, "en")
    customer = speak(live_call.workdir, "customer", CUSTOMER_SENTENCE, law, "en-us+f3")
    # The two sentences must not pass for each other, or the channel check proves nothing.
    assert best_correlation(agent.pcm, customer.pcm)[0] < 0.5

    place_call(live_call, law, agent, customer)

    (recording,) = Recording.objects.all()
    assert (recording.status, recording.codec) == (Recording.Status.COMPLETE, law.encoding_name)
    assert (recording.extension, recording.agent) == ("9001", john)
    assert recording.local_ip == AGENT_IP
    left, right, rate = channels(recording)
    assert rate == RATE
    agent_score, agent_offset = best_correlation(left, agent.pcm)
    customer_score, customer_offset = best_correlation(right, customer.pcm)
    assert agent_score >= MIN_CORRELATION, (agent_score, agent_offset)
    assert customer_score >= MIN_CORRELATION, (customer_score, customer_offset)
    # Each sentence sits on its own side only.
    assert best_correlation(left, customer.pcm)[0] < 0.5
    assert best_correlation(right, agent.pcm)[0] < 0.5
    # Both phones start speaking at the ACK: the sentences start together on the timeline.
    assert abs(agent_offset - customer_offset) <= DURATION_TOLERANCE * RATE
    streamed = max(agent_offset + agent.seconds * RATE, customer_offset + customer.seconds * RATE)
    assert abs(recording.duration_seconds - streamed / RATE) <= DURATION_TOLERANCE
    assert abs(recording.duration_seconds - max(agent.seconds, customer.seconds)) <= (
        DURATION_TOLERANCE
    )
