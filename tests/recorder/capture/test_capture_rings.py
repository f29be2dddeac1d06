"""An interface's two rings on the real loopback interface, through the real tcpdumps: their
filters split the traffic so that every packet the user's filter takes is captured exactly
once, media in the media ring and everything else, fragments above all, in the signalling
ring. A third tcpdump with the user's filter alone says what "every packet" is."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dpkt
import pytest

from recorder.capture.sources import CaptureFileError
from recorder.capture.synthesis import sip, skinny
from recorder.capture.tcpdump import HANDOVER_SECONDS, MEDIA, SIGNALLING, TcpdumpCapture
from recorder.engine.engine import Engine
from tests.conftest import need, need_loopback_capture
from tests.packets import ethernet, fragments4, fragments6, udp4, udp6, vlan
from tests.recorder.capture.test_tcpdump import everything, rtp_like
from tests.recorder.collected import Collected

# The test's own traffic on a shared machine: kernel traffic between two loopback addresses
# no other test uses, and frames written onto lo to a MAC address of its own.
NEAR, FAR = "127.0.41.1", "127.0.41.2"
MARK = bytes.fromhex("020000004101")
USER_FILTER = f"host {NEAR} or host {FAR} or ether dst 02:00:00:00:41:01"
# RFC 3550 section 6.4.1: a receiver report, version 2, packet type 201.
RTCP = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
INVITE = sip(
    "INVITE sip:7002@pbx SIP/2.0",
    ["Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKring", "Call-ID: rings@qms", "CSeq: 1 INVITE"]
    + [f"X-Padding-{index}: {'p' * 60}" for index in range(40)],  # larger than a fragment
)


@pytest.fixture(autouse=True)
def loopback_capture() -> None:
    need_loopback_capture()


def marked(frame: bytes) -> bytes:
    """The frame to the test's own MAC address: not for lo, which drops it after the
    capture has seen it."""
    return MARK + frame[6:]


def v4(source_port: int, destination_port: int, payload: bytes, ident: int = 1) -> dpkt.ip.IP:
    return udp4("192.0.2.10", source_port, "192.0.2.20", destination_port, payload, ident)


def v6(source_port: int, destination_port: int, payload: bytes) -> bytes:
    return udp6("2001:db8::10", source_port, "2001:db8::20", destination_port, payload)


def tunnelled(rtp: bytes) -> dict[str, list[bytes]]:
    """RTP inside the mirror tunnels the engine takes apart: VXLAN (UDP 4789, its first
    byte 0x08) and ERSPAN type II (GRE 0x88BE)."""
    inner = ethernet(udp4("10.9.0.1", 4000, "10.9.0.2", 4002, rtp))
    vxlan = struct.pack("!BxxxI", 0x08, 42 << 8) + inner
    erspan = struct.pack("!HHI", 0x1000, 0x88BE, 7) + struct.pack("!HHI", 0x1000, 1, 0) + inner
    gre = dpkt.ip.IP(src=bytes([192, 0, 2, 10]), dst=bytes([192, 0, 2, 20]), p=47, data=erspan)
    gre.len = len(gre)
    return {"RTP in VXLAN": [ethernet(v4(40000, 4789, vxlan))], "RTP in ERSPAN": [ethernet(gre)]}


def written_frames() -> dict[str, tuple[str, list[bytes]]]:
    """Frames written straight onto lo, by name: the ring each must land in, and its frames."""
    rtp = rtp_like(7, 172)
    bye = sip("BYE sip:7002@pbx SIP/2.0", ["Call-ID: rings@qms", "CSeq: 2 BYE"])
    # A datagram that looks like RTP in its first fragment, to show fragments never go to
    # the media ring; and a SIP INVITE too large for one, over IPv4 and IPv6.
    rtp_fragments = fragments4(v4(4000, 4002, rtp * 8, 71), 512)
    invite4 = fragments4(v4(5060, 5060, INVITE, 72), 1024)
    invite6 = fragments6(v6(5060, 5060, INVITE), 1024, 73)
    assert len(invite4) > 1 and len(invite6) > 1
    media = {
        "RTP": [ethernet(v4(4000, 4002, rtp))],
        "RTCP": [ethernet(v4(4001, 4003, RTCP))],
        "RTP over IPv6": [ethernet(v6(4000, 4002, rtp))],
        "RTP in VLAN 100": [vlan(v4(4000, 4002, rtp), 100)],
    }
    signalling = {
        "SIP": [ethernet(v4(5060, 5060, bye))],
        "SIP over IPv6": [ethernet(v6(5060, 5060, bye))],
        "SIP in VLAN 100": [vlan(v4(5060, 5060, bye), 100)],
        "an empty datagram": [ethernet(v4(5060, 9, b""))],
        "an empty datagram over IPv6": [ethernet(v6(5060, 9, b""))],
        "RTP-like fragments": [ethernet(piece) for piece in rtp_fragments],
        "a fragmented INVITE": [ethernet(piece) for piece in invite4],
        "a fragmented INVITE over IPv6": [ethernet(piece) for piece in invite6],
        "RTP under two VLAN tags": [vlan(v4(4000, 4002, rtp), 10, 100)],
        **tunnelled(rtp),
    }
    rings = {name: (MEDIA, found) for name, found in media.items()}
    rings |= {name: (SIGNALLING, found) for name, found in signalling.items()}
    return {
        name: (ring, [marked(frame) for frame in found]) for name, (ring, found) in rings.items()
    }


def write_onto_lo(frames: list[bytes]) -> None:
    """Frames written onto lo as a mirror port would deliver them (AF_PACKET)."""
    try:
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    except PermissionError:
        need(False, "writing frames onto lo needs root or CAP_NET_RAW")
    with raw:
        raw.bind(("lo", 0))
        for frame in frames:
            raw.send(frame)


def kernel_traffic() -> list[tuple[str, bytes]]:
    """What the kernel itself sends between NEAR and FAR: datagrams (each with the ring it
    must land in) and a TCP connection each for SIP and SCCP (all signalling)."""
    datagrams = [
        (MEDIA, rtp_like(1, 172)),
        (MEDIA, RTCP),
        (SIGNALLING, INVITE[:1200]),
        (SIGNALLING, b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"t" * 12),  # a STUN request
        (SIGNALLING, b"\r\n\r\n"),  # a SIP keep-alive (RFC 5626 section 4.4.1)
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind((FAR, 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind((NEAR, 0))
            for _, payload in datagrams:
                sender.sendto(payload, receiver.getsockname())
    for port, message in ((5060, INVITE), (2000, skinny(0x0000))):
        # The phone's end closes first; the server then takes the connection and reads it.
        with (
            tcp_server(FAR, port) as server,
            socket.create_connection(server, 5, (NEAR, 0)) as phone,
        ):
            phone.sendall(message)
    return datagrams


@contextmanager
def tcp_server(address: str, port: int) -> Iterator[tuple[str, int]]:
    """A listener that takes one connection and reads it to its end."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, port))
        server.listen()
        yield server.getsockname()
        connection, _ = server.accept()
        with connection:
            connection.settimeout(5)
            while connection.recv(65536):
                pass


def reference(path: Path) -> subprocess.Popen:
    """One tcpdump with the user's filter alone, writing a file: every packet it takes."""
    command = ["tcpdump", "-i", "lo", "-U", "-n", "-s", "262144", "-w", str(path), USER_FILTER]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while b"listening on" not in process.stderr.readline():
        assert process.poll() is None, "the reference tcpdump did not start"
    return process


def read_frames(path: Path) -> list[bytes]:
    with path.open("rb") as capture:
        return [bytes(frame) for _, frame in dpkt.pcap.Reader(capture)]


def is_tcp(frame: bytes) -> bool:
    return frame[12:14] == b"\x08\x00" and frame[23] == 6


def test_every_packet_is_captured_once_in_its_ring(tmp_path: Path) -> None:
    reference_file = tmp_path / "all.pcap"
    everyone = reference(reference_file)
    capture = TcpdumpCapture(["lo"], USER_FILTER, buffer_mib=2, signalling_buffer_mib=2)
    capture.start()
    try:
        written = written_frames()
        write_onto_lo([frame for _, frames in written.values() for frame in frames])
        datagrams = kernel_traffic()
        time.sleep(HANDOVER_SECONDS + 1)  # every ring's last block handed over
    finally:
        rings = everything(capture)
        everyone.send_signal(2)
        everyone.wait(10)
    media, signalling = rings[MEDIA].frames, rings[SIGNALLING].frames
    every = read_frames(reference_file)
    # Exactly once: the two rings together are what the user's filter alone takes.
    assert Counter(media) + Counter(signalling) == Counter(every)
    assert not set(media) & set(signalling)
    for name, (ring, frames) in written.items():
        found_in = media if ring == MEDIA else signalling
        assert all(found_in.count(frame) == 1 for frame in frames), name
    kernel = [frame for frame in every if frame[:6] != MARK]
    tcp = [frame for frame in kernel if is_tcp(frame)]
    assert len(tcp) >= 6 and all(frame in signalling for frame in tcp)
    for ring, payload in datagrams:
        found_in = media if ring == MEDIA else signalling
        assert [frame[42:] for frame in found_in if frame[:6] != MARK].count(payload) == 1
    (stats,) = capture.stats()
    assert stats.dropped == 0 and stats.received >= len(every)
    # The signalling ring alone holds all of each fragmented INVITE: the engine reassembles
    # both, besides the SIP over UDP (three), over TCP, and the SCCP.
    engine = Engine(Collected())
    for index, frame in enumerate(signalling):
        engine.feed(1_700_000_000 + index * 1e-3, 1, frame)
    assert (engine.stats.sip_messages, engine.stats.sccp_messages) == (7, 1)
    assert not [kind for kind in engine.stats.errors if "fragment" in kind]


def test_an_empty_filter_splits_the_traffic_too() -> None:
    capture = TcpdumpCapture(["lo"], "", buffer_mib=2, signalling_buffer_mib=2)
    capture.start()
    try:
        written = written_frames()
        frames = {name: written[name] for name in ("RTP", "RTCP", "SIP", "a fragmented INVITE")}
        write_onto_lo([frame for _, found in frames.values() for frame in found])
        time.sleep(HANDOVER_SECONDS + 1)
    finally:
        rings = everything(capture)
    for name, (ring, found) in frames.items():
        other = rings[SIGNALLING if ring == MEDIA else MEDIA].frames
        assert all(rings[ring].frames.count(frame) == 1 for frame in found), name
        assert not set(found) & set(other), name


def test_a_filter_that_leaves_the_media_ring_nothing_captures_through_the_other() -> None:
    # An ERSPAN mirror is all GRE: libpcap refuses the media ring's filter (it can prove it
    # takes nothing), and the signalling ring takes it all.
    capture = TcpdumpCapture(["lo"], "ip proto 47", buffer_mib=2, signalling_buffer_mib=2)
    capture.start()
    assert [child.ring for child in capture.running] == [SIGNALLING]
    erspan = tunnelled(rtp_like(7, 172))["RTP in ERSPAN"][0]
    write_onto_lo([marked(erspan)])
    rings = everything(capture, seconds=HANDOVER_SECONDS + 1)
    assert rings[SIGNALLING].frames.count(marked(erspan)) == 1
    # The media ring's stream ended at the start, so that nothing waits for it.
    assert rings.ended == [MEDIA, SIGNALLING]


def test_a_filter_that_takes_nothing_is_refused_with_tcpdumps_reason() -> None:
    capture = TcpdumpCapture(["lo"], "ip proto 47 and ip proto 17")
    with pytest.raises(CaptureFileError, match=r"Cannot capture on lo: .*rejects all packets"):
        capture.start()
    assert capture.running == []
