"""Every public capture with RTP through `import_pcap`, down to the recorded audio.

Each case names the call's two RTP receive addresses as the capture's signalling announced
them: `agent_rtp`, where the recorded phone receives (the far party's voice, the right
channel), and `far_rtp`, where the far party receives (the agent's voice, the left
channel). What the recording must hold is worked out here from the capture itself with
dpkt and audioop, never from QMS code: how long the RTP timestamps run, how many packets
each direction carried, which digits the telephone-events spell, and, for G.711, every
sample of every received packet.

The window of a call is its signalling: RTP that arrives after the BYE or on-hook is not
the call's (a phone still sends a packet or two in flight). So the expectations count the
packets up to the recording's end, and each case checks that what is left out after it is
less than 0.1 s of audio, so that an end placed too early cannot hide lost audio.
"""

from __future__ import annotations

import audioop
import hashlib
import io
import math
import socket
import struct
import wave
from array import array
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dpkt
import pytest
from django.core.management import call_command

from recorder.models import Recording

Address = tuple[str, int]
# speech; quiet: line noise, not digital silence; silent: every sample zero.
Level = Literal["speech", "quiet", "silent"]

RTCP_PACKET_TYPES = range(200, 205)
# RTP samples per payload byte, by static payload type (RFC 3551 §4.5): G.711 and G.722
# carry one 8 kHz clock tick per byte; a 10-byte G.729 frame is 80 ticks.
TICKS_PER_BYTE = {0: 1.0, 8: 1.0, 9: 1.0, 18: 8.0}
SPEECH_RMS = 50.0
DURATION_TOLERANCE = 0.1
DTMF_DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True)
class ExpectedRecording:
    """One call of a capture, as the capture's own bytes and README describe it."""

    agent_rtp: Address
    far_rtp: Address
    codec: str
    sample_rate: int
    # What the left (agent's voice) and right (far party's voice) channels carry.
    levels: tuple[Level, Level]
    # The telephone-event payload type and who sent it ("agent" or "far"), if any.
    dtmf: tuple[int, str] | None = None
    # The capture ends before the call does (no BYE): the recording says it is partial.
    cut: bool = False
    # The RTP packets each direction carried during the call, as tshark counts them
    # (`-z rtp,streams` and the call's window): (to the far party, to the agent).
    packets: tuple[int, int] | None = None

    @property
    def status(self) -> str:
        return Recording.Status.PARTIAL if self.cut else Recording.Status.COMPLETE


@dataclass(frozen=True)
class RtpPacket:
    arrival: float
    source: Address
    destination: Address
    ssrc: int
    sequence: int
    timestamp: int
    payload_type: int
    payload: bytes


@dataclass
class Leg:
    """One direction of one call: the packets the capture holds, sent to one address."""

    packets: list[RtpPacket] = field(default_factory=list)

    def audio(self, payload_types: set[int]) -> list[RtpPacket]:
        return [packet for packet in self.packets if packet.payload_type in payload_types]


# The agent of each call is the phone QMS knows it records: the registered or SCCP phone
# where there is one; otherwise the caller, as QMS records a call between two unknown (or
# two known) parties for its caller (recorder.recordings.finish.local_side_of).
CASES: dict[str, list[ExpectedRecording]] = {
    # X-Lite registered as 555 at 172.25.105.3 calls 1000; the agent presses the digits.
    "rtpparsing-forensic.pcap": [
        ExpectedRecording(
            agent_rtp=("172.25.105.3", 63184),
            far_rtp=("172.25.105.40", 18150),
            codec="PCMU",
            sample_rate=8000,
            levels=("speech", "speech"),
            dtmf=(101, "agent"),
            # The agent's 1,811: 30 telephone-event packets each sent three times under one
            # sequence number (60 copies), 1,751 distinct of the 1,781 the numbers span.
            packets=(1811, 1302),
        )
    ],
    # Three calls from the carrier's SBC to the FRITZ!Box; both ends look like phones to
    # the engine (each sent a call's ext/IP), so the caller is recorded.
    "rtpparsing-interception.pcapng": [
        # Two SSRCs to the FRITZ!Box: 7 packets of one, then 1,021 of the other.
        ExpectedRecording(
            ("217.0.5.215", 5690),
            ("84.146.135.221", 7078),
            "PCMA",
            8000,
            ("speech", "speech"),
            packets=(1028, 1038),
        ),
        ExpectedRecording(
            ("217.0.5.215", 35192),
            ("84.146.135.221", 7078),
            "G722",
            16000,
            ("speech", "speech"),
            packets=(911, 922),
        ),
        ExpectedRecording(
            ("217.0.5.215", 15020),
            ("84.146.135.221", 7078),
            "PCMA",
            8000,
            ("speech", "speech"),
            packets=(1274, 1285),
        ),
    ],
    "rtpparsing-voip.pcap": [
        ExpectedRecording(
            ("192.168.5.10", 8014),
            ("192.168.5.5", 55068),
            "PCMU",
            8000,
            ("speech", "speech"),
            packets=(190, 187),
        )
    ],
    # A proxy's call to francisco through the media relay 200.57.7.196; francisco registers
    # only during the call, so the caller's side is recorded. The relay's other leg
    # (40378 with 200.57.7.199) is not this call's. No BYE before the capture ends.
    "heplify-rtp_rtcp_sip_ipv4_udp.pcap": [
        ExpectedRecording(
            ("200.57.7.196", 40376),
            ("200.57.7.204", 8000),
            "PCMA",
            8000,
            ("speech", "speech"),
            cut=True,
            packets=(891, 548),
        )
    ],
    # The neufbox (registered +33360653674) calls 147.
    "rtppcap-nb6-telephone.pcap": [
        ExpectedRecording(
            ("10.251.23.139", 35560),
            ("109.3.79.137", 44344),
            "PCMA",
            8000,
            ("speech", "speech"),
            packets=(248, 259),
        )
    ],
    # SIPp calls FreeSWITCH, which plays a prompt: speech in one direction only.
    "rtppcap-sip-rtp-g722.pcap": [
        ExpectedRecording(
            ("10.0.2.20", 6000),
            ("10.0.2.15", 17472),
            "G722",
            16000,
            ("silent", "speech"),
            packets=(0, 425),
        )
    ],
    "rtppcap-sip-rtp-g729a.pcap": [
        ExpectedRecording(
            ("10.0.2.20", 6000),
            ("10.0.2.15", 28120),
            "G729",
            8000,
            ("silent", "speech"),
            packets=(0, 425),
        )
    ],
    # SIP over TCP, A-law with comfort noise (PT 13) in both directions; 101 (10.33.6.100)
    # sends only 20 packets of background noise between its CN packets.
    "heplify-sip_ipv4_tcp.pcap": [
        ExpectedRecording(
            ("10.33.6.100", 6000),
            ("10.33.6.101", 6050),
            "PCMA",
            8000,
            ("quiet", "speech"),
            packets=(24, 42),
        )
    ],
    # The 7912 (DN 1012) takes a call; the far end (pyskinny) sends digital silence. Of the
    # 1,489 and 1,492 packets tshark counts, 5 and 1 come after the on-hook.
    "pyskinny-cm_call_from_pyskinny_to_7912.pcapng": [
        ExpectedRecording(
            ("10.102.10.209", 16384),
            ("10.102.219.27", 60186),
            "PCMU",
            8000,
            ("speech", "silent"),
            packets=(1484, 1491),
        )
    ],
    # The answered hairpin call 2502 -> 2504 on one gateway (192.168.105.110). Only the
    # stream to 2504's announced 110:4376 goes to an address the SDP announced; 2502's
    # packets from its announced 110:4374 go to the relay 192.168.105.172:4376, no SDP of
    # the capture names, which sends another stream (another SSRC; dpkt shows speech and
    # DTMF there, line noise in 2502's) to 110:4376 from 50 ms later. The relay's port takes
    # both legs, so its address is not learned and 2502's packets stay counted, not
    # recorded (docs/capture.md, "Media relays and NAT").
    "rtppcap-SIP_DTMF2.pcap": [
        ExpectedRecording(
            agent_rtp=("192.168.105.110", 4374),
            far_rtp=("192.168.105.110", 4376),
            codec="PCMA",
            sample_rate=8000,
            levels=("speech", "silent"),
            dtmf=(96, "agent"),
            cut=True,
            # tshark: 666 packets to 110:4376, none to 2502's announced 110:4374 (its
            # far party's voice never reaches the mirror); 2502's own 665 go to the relay.
            # One call, no address shared: it is not issue 14's pattern 2.
            packets=(666, 0),
        )
    ],
}


# -- the capture, read with dpkt ------------------------------------------------------------


def ip_datagrams(path: Path) -> Iterator[tuple[float, dpkt.ip.IP]]:
    """Every IPv4 packet of a pcap or pcapng file, through VLAN tags, PPPoE and Linux SLL."""
    with path.open("rb") as capture:
        reader = (
            dpkt.pcapng.Reader(capture) if path.suffix == ".pcapng" else dpkt.pcap.Reader(capture)
        )
        linktype = reader.datalink()
        for arrival, frame in reader:
            layer = (
                dpkt.sll.SLL(frame)
                if linktype == dpkt.pcap.DLT_LINUX_SLL
                else dpkt.ethernet.Ethernet(frame)
            )
            while not isinstance(layer, (dpkt.ip.IP, bytes)) and hasattr(layer, "data"):
                layer = layer.data
            if isinstance(layer, dpkt.ip.IP):
                yield arrival, layer


def rtp_packets(path: Path) -> list[RtpPacket]:
    """Every UDP datagram that is RTP version 2 with a whole header and not RTCP."""
    found = []
    for arrival, ip in ip_datagrams(path):
        if not isinstance(ip.data, dpkt.udp.UDP):
            continue
        udp, payload = ip.data, bytes(ip.data.data)
        if len(payload) < 12 or payload[0] >> 6 != 2 or payload[1] in RTCP_PACKET_TYPES:
            continue
        # RFC 3550 §5.1: V P X CC | M PT | sequence | timestamp | SSRC, then CSRCs.
        sequence, timestamp, ssrc = struct.unpack_from("!HII", payload, 2)
        header = 12 + 4 * (payload[0] & 0x0F)
        found.append(
            RtpPacket(
                arrival=arrival,
                source=(socket.inet_ntoa(ip.src), udp.sport),
                destination=(socket.inet_ntoa(ip.dst), udp.dport),
                ssrc=ssrc,
                sequence=sequence,
                timestamp=timestamp,
                payload_type=payload[1] & 0x7F,
                payload=payload[header:],
            )
        )
    return found


def legs_of(
    packets: list[RtpPacket], expected: ExpectedRecording, recording: Recording
) -> tuple[Leg, Leg, Leg]:
    """(left, right, after the end): the packets sent to the far party and to the agent
    during the call, and those sent to either after the call ended."""
    start = recording.started_at.timestamp()
    end = recording.ended_at.timestamp()
    left, right, after = Leg(), Leg(), Leg()
    for packet in packets:
        if packet.destination not in (expected.far_rtp, expected.agent_rtp):
            continue
        if not start <= packet.arrival <= end:
            if end < packet.arrival < end + 1.0:
                after.packets.append(packet)
            continue
        (left if packet.destination == expected.far_rtp else right).packets.append(packet)
    return left, right, after


def audio_types(expected: ExpectedRecording) -> set[int]:
    return {{"PCMU": 0, "PCMA": 8, "G722": 9, "G729": 18}[expected.codec]}


def packet_seconds(packet: RtpPacket) -> float:
    return len(packet.payload) * TICKS_PER_BYTE[packet.payload_type] / 8000


def leg_end(leg: Leg, audio: set[int]) -> float | None:
    """When a direction's audio ends, by its RTP timestamps: each SSRC's first packet at
    its arrival, the rest where its timestamps put them (8 kHz RTP clock for all of these
    codecs, RFC 3551 §4.5)."""
    runs: dict[int, list[RtpPacket]] = defaultdict(list)
    for packet in leg.audio(audio):
        runs[packet.ssrc].append(packet)
    ends = []
    for run in runs.values():
        first = run[0]
        last = max(run, key=lambda packet: (packet.timestamp - first.timestamp) % 2**32)
        span = ((last.timestamp - first.timestamp) % 2**32) / 8000
        ends.append(first.arrival + span + packet_seconds(last))
    return max(ends, default=None)


def expected_duration(left: Leg, right: Leg, audio: set[int]) -> float:
    """From the first RTP packet of the call (either direction) to the end of its audio."""
    start = min(packet.arrival for packet in left.packets + right.packets)
    ends = [end for end in (leg_end(left, audio), leg_end(right, audio)) if end is not None]
    return max(ends) - start


def sequence_figures(leg: Leg) -> dict[str, int]:
    """RFC 3550 A.3 per SSRC, summed: expected is the span of sequence numbers seen."""
    runs: dict[int, list[int]] = defaultdict(list)
    for packet in leg.packets:
        runs[packet.ssrc].append(packet.sequence)
    expected = received = 0
    for sequences in runs.values():
        first = sequences[0]
        extended = {first + ((s - first + 2**15) % 2**16) - 2**15 for s in sequences}
        expected += max(extended) - min(extended) + 1
        received += len(extended)
    return {
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "duplicated": len(leg.packets) - received,
    }


def telephone_events(leg: Leg, payload_type: int) -> str:
    """RFC 4733 §2.3: each event is one (SSRC, timestamp); its first octet is the event."""
    events: dict[tuple[int, int], int] = {}
    for packet in leg.packets:
        if packet.payload_type == payload_type and len(packet.payload) >= 4:
            events.setdefault((packet.ssrc, packet.timestamp), packet.payload[0])
    return "".join(DTMF_DIGITS[event] for event in events.values() if event < 16)


# -- the recording ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StereoAudio:
    rate: int
    left: list[int]
    right: list[int]


def read_stereo(path: Path) -> StereoAudio:
    with wave.open(str(path)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (2, 2)
        rate, frames = audio.getframerate(), audio.readframes(audio.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    return StereoAudio(rate, list(samples[0::2]), list(samples[1::2]))


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(sample * sample for sample in samples) / max(len(samples), 1))


def level(channel: list[int]) -> Level:
    if not any(channel):
        return "silent"
    return "speech" if rms(channel) > SPEECH_RMS else "quiet"


def imported(path: Path) -> list[Recording]:
    call_command("import_pcap", str(path), stdout=io.StringIO())
    return list(Recording.objects.order_by("started_at", "pk"))


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_call_of_a_capture_becomes_a_complete_stereo_recording_of_its_rtp(
    public_captures: Path, name: str
) -> None:
    path = public_captures / name
    recordings = imported(path)
    packets = rtp_packets(path)
    assert len(recordings) == len(CASES[name])
    for recording, expected in zip(recordings, CASES[name], strict=True):
        assert (recording.status, recording.codec) == (expected.status, expected.codec)
        if expected.cut:
            assert recording.status_detail == "the capture stopped during the call"
        assert recording.audio_format == "wav"
        stored = Path(recording.file.path)
        assert recording.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
        assert recording.size == stored.stat().st_size
        audio = read_stereo(stored)
        assert audio.rate == expected.sample_rate

        left, right, after = legs_of(packets, expected, recording)
        if expected.packets is not None:
            assert (len(left.packets), len(right.packets)) == expected.packets
            carried = tuple(
                recording.quality[key]["received"] + recording.quality[key]["duplicated"]
                for key in ("agent_to_far", "far_to_agent")
            )
            assert carried == expected.packets
        audio_pt = audio_types(expected)
        # Less than 0.1 s of audio (five 20 ms packets per direction) after the call's end.
        assert sum(packet_seconds(p) for p in after.audio(audio_pt)) < 2 * DURATION_TOLERANCE
        duration = expected_duration(left, right, audio_pt)
        assert abs(recording.duration_seconds - duration) <= DURATION_TOLERANCE
        assert len(audio.left) == len(audio.right) == round(recording.duration_seconds * audio.rate)

        for leg, key in ((left, "agent_to_far"), (right, "far_to_agent")):
            figures = (
                sequence_figures(leg)
                if leg.packets
                else dict.fromkeys(("expected", "received", "lost", "duplicated"), 0)
            )
            assert {k: recording.quality[key][k] for k in figures} == figures, key

        assert (level(audio.left), level(audio.right)) == expected.levels


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "digits"),
    [("rtpparsing-forensic.pcap", "2255#4125#4321#"), ("rtppcap-SIP_DTMF2.pcap", "6789123")],
)
def test_telephone_events_become_the_digits_of_the_side_that_sent_them(
    public_captures: Path, name: str, digits: str
) -> None:
    path = public_captures / name
    (recording,) = imported(path)
    (expected,) = CASES[name]
    assert expected.dtmf is not None
    payload_type, sender = expected.dtmf
    left, right, _ = legs_of(rtp_packets(path), expected, recording)
    # The capture says who sent them: the agent's events travel to the far party (left).
    sent, other = (left, right) if sender == "agent" else (right, left)
    assert telephone_events(sent, payload_type) == digits
    assert telephone_events(other, payload_type) == ""
    assert "".join(event["digit"] for event in recording.dtmf) == digits
    assert {event["by"] for event in recording.dtmf} == {sender}
    times = [event["at"] for event in recording.dtmf]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < recording.duration_seconds


def g711_reference(leg: Leg, payload_type: int) -> list[tuple[int, list[int]]]:
    """(RTP timestamp from the leg's first packet, samples) for each distinct packet,
    decoded by audioop, independently of QMS's tables."""
    expand = audioop.ulaw2lin if payload_type == 0 else audioop.alaw2lin
    packets = leg.audio({payload_type})
    assert len({packet.ssrc for packet in packets}) == 1
    first, placed = packets[0].timestamp, {}
    for packet in packets:
        pcm = expand(packet.payload, 2)
        placed.setdefault(
            packet.sequence,
            ((packet.timestamp - first) % 2**32, list(struct.unpack(f"<{len(pcm) // 2}h", pcm))),
        )
    return sorted(placed.values())


def offset_of(channel: list[int], reference: list[tuple[int, list[int]]]) -> int:
    """Where the leg's timeline starts in the channel: found from the earliest packet whose
    samples occur exactly once in it (quiet packets can repeat, and silence is everywhere)."""
    haystack = array("h", channel).tobytes()
    for tick, samples in reference:
        needle = array("h", samples).tobytes()
        places, found = [], haystack.find(needle)
        while found >= 0 and len(places) < 2:
            if found % 2 == 0:
                places.append(found // 2 - tick)
            found = haystack.find(needle, found + 1)
        if len(places) == 1:
            return places[0]
    pytest.fail("no packet of the leg is found exactly once in its channel")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "payload_type"),
    [("rtpparsing-forensic.pcap", 0), ("rtppcap-nb6-telephone.pcap", 8)],
)
def test_g711_audio_is_sample_exact_against_an_independent_decode_of_each_packet(
    public_captures: Path, name: str, payload_type: int
) -> None:
    path = public_captures / name
    (recording,) = imported(path)
    (expected,) = CASES[name]
    left, right, _ = legs_of(rtp_packets(path), expected, recording)
    audio = read_stereo(Path(recording.file.path))
    for leg, channel in ((left, audio.left), (right, audio.right)):
        reference = g711_reference(leg, payload_type)
        offset = offset_of(channel, reference)
        assert offset >= 0
        mismatched = [
            tick
            for tick, samples in reference
            if channel[offset + tick : offset + tick + len(samples)] != samples
        ]
        assert mismatched == [], f"{len(mismatched)} of {len(reference)} packets differ"
