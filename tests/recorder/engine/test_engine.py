"""The engine on traffic it must not lose: fragments, split and reordered TCP, mid-stream
SCCP, tagged RTP, silent calls. Traffic is written by the project's own generator."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from integrations.observations import CallEvent
from recorder.capture import traffic
from recorder.capture.sources import pcap_chunks
from recorder.capture.synthesis import PCAP_HEADER, RECORD, rtp
from recorder.engine.calls import OPEN_SIGNALLING_SILENCE
from recorder.engine.engine import Engine
from tests.packets import ethernet, fragments4, tcp4, udp4, vlan
from tests.recorder.collected import Collected


def run(frames: list[tuple[float, bytes]]) -> tuple[Engine, Collected]:
    sink = Collected()
    engine = Engine(sink)
    for at, frame in frames:
        engine.feed(at, 1, frame)
    return engine, sink


def sip_payloads(call: traffic.Call, phase: str) -> list[bytes]:
    return [frame[42:] for frame in traffic.sip_signalling(call, phase)]


CALL = traffic.make_calls(1)[0]


def test_a_fragmented_invite_still_starts_its_call() -> None:
    invite, ok, _ack = sip_payloads(CALL, "invite")
    padded = invite.replace(b"CSeq:", b"X-Padding: " + b"p" * 2500 + b"\r\nCSeq:", 1)
    packet = udp4(CALL.phone_ip, 5060, CALL.gateway_ip, 5060, padded, ident=4242)
    pieces = fragments4(packet, 1480)
    frames = [(1.0 + index * 0.001, ethernet(piece)) for index, piece in enumerate(pieces)]
    frames.append((1.1, ethernet(udp4(CALL.gateway_ip, 5060, CALL.phone_ip, 5060, ok))))
    _engine, sink = run(frames)
    assert len(pieces) == 3
    assert sink.events_of(f"bench-0@{CALL.phone_ip}") == [CallEvent.START, CallEvent.ANSWER]
    assert sink.calls[0].caller == CALL.extension


def test_sip_over_tcp_split_and_out_of_order_is_read_whole() -> None:
    register, ok = sip_payloads(CALL, "register")
    seq = 5000
    cuts = [0, 40, 150, len(register)]
    segments = [
        tcp4(CALL.phone_ip, 41000, traffic.REGISTRAR_IP, 5060, seq + start, register[start:end])
        for start, end in itertools.pairwise(cuts)
    ]
    handshake = tcp4(CALL.phone_ip, 41000, traffic.REGISTRAR_IP, 5060, seq - 1, flags=0x02)
    frames = [
        (0.9, ethernet(handshake)),
        (1.0, ethernet(segments[2])),
        (1.01, ethernet(segments[0])),
        (1.02, ethernet(segments[1])),
        (1.02, ethernet(segments[1])),
    ]
    frames.append((1.05, ethernet(tcp4(traffic.REGISTRAR_IP, 5060, CALL.phone_ip, 41000, 90, ok))))
    engine, sink = run(frames)
    assert [(seen.extension, seen.ip, seen.expires_in) for seen in sink.bindings] == [
        (CALL.extension, CALL.phone_ip, 3600)
    ]
    assert engine.sip.messages["REGISTER"] == 1
    assert engine.stats.ignored["tcp-out-of-order"] == 1
    assert engine.stats.ignored["tcp-retransmission"] == 1


def test_an_sccp_session_picked_up_mid_stream_still_follows_the_call() -> None:
    session = traffic.SccpSession(CALL)
    frames = session.register() + session.connect() + session.hang_up()
    # The capture starts after the phone registered: the first frames are never seen,
    # and the first one seen begins in the middle of a message.
    first = frames[4]
    seq = struct.unpack_from("!I", first, 14 + 20 + 4)[0]
    cut = ethernet(
        tcp4(
            traffic.CM_IP,
            traffic.SCCP_PORT,
            CALL.phone_ip,
            session.port,
            seq + 30,
            first[14 + 20 + 20 + 30 :],
        )
    )
    _engine, sink = run(
        [(1.0 + index * 0.01, frame) for index, frame in enumerate([cut, *frames[5:]])]
    )
    events = [snapshot.event for snapshot in sink.calls]
    assert CallEvent.END in events
    assert sink.calls[-1].end_reason == "onhook"
    assert any(snapshot.media for snapshot in sink.calls)


def test_rtp_in_a_vlan_is_matched_through_the_slow_path() -> None:
    invite, ok, _ack = sip_payloads(CALL, "invite")
    frames = [
        (1.0, ethernet(udp4(CALL.phone_ip, 5060, CALL.gateway_ip, 5060, invite))),
        (1.1, ethernet(udp4(CALL.gateway_ip, 5060, CALL.phone_ip, 5060, ok))),
    ]
    voice = rtp(1, 160, 0x1234, b"\xff" * 160)
    to_phone = udp4(CALL.gateway_ip, 40000, CALL.phone_ip, CALL.phone_rtp, voice)
    frames += [(1.2 + index * 0.02, vlan(to_phone, 100)) for index in range(10)]
    engine, _sink = run(frames)
    assert engine.stats.rtp_packets == 10
    stream = next(iter(engine.calls.calls.values())).streams
    assert sum(s.packets for s in stream.values()) == 10


def test_a_call_whose_media_goes_silent_is_ended_by_the_sweep() -> None:
    invite, ok, _ack = sip_payloads(CALL, "invite")
    frames = [
        (1.0, ethernet(udp4(CALL.phone_ip, 5060, CALL.gateway_ip, 5060, invite))),
        (1.1, ethernet(udp4(CALL.gateway_ip, 5060, CALL.phone_ip, 5060, ok))),
        # Its dialog is open (no BYE): the silence that ends it is the longer one.
        (1.1 + OPEN_SIGNALLING_SILENCE + 1.0, ethernet(udp4("10.9.9.9", 1, "10.9.9.8", 2, b"x"))),
    ]
    _engine, sink = run(frames)
    assert sink.calls[-1].event == CallEvent.END
    assert sink.calls[-1].end_reason in ("media-timeout", "timeout")


def test_the_pcap_fast_loop_and_the_packet_path_agree(tmp_path: Path) -> None:
    path = tmp_path / "calls.pcap"
    traffic.write(path, traffic.packets(traffic.make_calls(20), 1.0, use_sccp=False))
    looped = Engine(Collected())
    found, chunks = pcap_chunks(path)
    looped.feed_pcap(found, chunks)
    stepped = Engine(Collected())
    with open(path, "rb") as capture:
        capture.read(24)
        while header := capture.read(16):
            seconds, micros, length, _ = struct.unpack("<IIII", header)
            stepped.feed(seconds + micros * 1e-6, 1, capture.read(length))
    assert looped.stats.packets == stepped.stats.packets == 20 * 107
    assert looped.stats.rtp_packets == stepped.stats.rtp_packets == 20 * 100
    assert looped.stats.sip_messages == stepped.stats.sip_messages == 20 * 7


@pytest.mark.parametrize("chunk_bytes", [1, 7, 16, 17, 1000])
def test_the_fast_loop_carries_records_cut_by_a_chunks_end(
    tmp_path: Path, chunk_bytes: int
) -> None:
    """Chunks cut anywhere, even inside a record header, give what whole chunks give."""
    path = tmp_path / "calls.pcap"
    traffic.write(path, traffic.packets(traffic.make_calls(3), 0.5, use_sccp=False))
    whole = Engine(Collected())
    found, chunks = pcap_chunks(path)
    whole.feed_pcap(found, chunks)
    data = path.read_bytes()[24:]
    cut = Engine(Collected())
    cut.feed_pcap(found, (data[at : at + chunk_bytes] for at in range(0, len(data), chunk_bytes)))
    assert cut.stats == whole.stats
    assert cut.stats.packets == 3 * 57 and cut.stats.octets == whole.stats.octets > 0


def test_a_capture_cut_inside_its_last_packet_keeps_the_packets_before(tmp_path: Path) -> None:
    path = tmp_path / "calls.pcap"
    traffic.write(path, traffic.packets(traffic.make_calls(2), 0.2, use_sccp=False))
    complete = Engine(Collected())
    found, chunks = pcap_chunks(path)
    complete.feed_pcap(found, chunks)
    path.write_bytes(path.read_bytes()[:-5])
    cut = Engine(Collected())
    found, chunks = pcap_chunks(path)
    cut.feed_pcap(found, chunks)
    assert cut.stats.packets == complete.stats.packets - 1


def test_tls_signalling_is_counted_and_each_phone_reported_now_and_then() -> None:
    hello = b"\x16\x03\x01\x00\x05hello"
    frames = [
        (1.0 + index, ethernet(tcp4("10.0.0.21", 40000, "10.0.0.1", 5061, 100 + index, hello)))
        for index in range(5)
    ]
    frames.append((400.0, ethernet(tcp4("10.0.0.1", 2443, "10.0.0.22", 50000, 1, hello))))
    frames.append((401.0, ethernet(tcp4("10.0.0.21", 40000, "10.0.0.1", 5061, 200, hello))))
    engine, sink = run(frames)
    assert engine.stats.encrypted_signalling == {"sip-tls": 6, "sccp-tls": 1}
    assert [(seen.ip, seen.protocol) for seen in sink.encrypted_seen] == [
        ("10.0.0.21", "sip-tls"),
        ("10.0.0.22", "sccp-tls"),
        ("10.0.0.21", "sip-tls"),
    ]
    assert not engine.tcp.connections


def test_short_frames_in_a_pcap_never_borrow_the_next_records_bytes(tmp_path: Path) -> None:
    real = ethernet(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"x" * 30))
    stub = real[:20]  # looks like Ethernet/IPv4 up to the cut
    path = tmp_path / "short.pcap"
    with open(path, "wb") as capture:
        capture.write(PCAP_HEADER)
        for at, frame in ((1.0, stub), (1.1, real), (1.2, stub)):
            capture.write(RECORD.pack(int(at), 0, len(frame), len(frame)) + frame)
    engine = Engine(Collected())
    found, chunks = pcap_chunks(path)
    engine.feed_pcap(found, chunks)
    assert engine.stats.packets == 3
    assert engine.stats.errors["truncated-ipv4"] == 2


def rtp_between(phone: str, far: str, count: int, start: float) -> list[tuple[float, bytes]]:
    frames = []
    for index in range(count):
        voice = rtp(index, index * 160, 0x42, b"\xff" * 160)
        at = start + index * 0.02
        frames.append((at, ethernet(udp4(far, 30000, phone, 16384, voice))))
        frames.append((at + 0.001, ethernet(udp4(phone, 16384, far, 30000, voice))))
    return frames


def test_rtp_of_a_known_phone_without_signalling_becomes_an_unsignalled_call() -> None:
    sink = Collected()
    engine = Engine(sink, phone_ips={"10.0.0.11"}, record_unsignalled=True)
    frames = rtp_between("10.0.0.11", "10.9.9.9", 50, 1.0)
    frames.append((30.0, ethernet(udp4("10.1.1.1", 1, "10.1.1.2", 2, b"later"))))
    for at, frame in frames:
        engine.feed(at, 1, frame)
    assert engine.stats.unsignalled_calls == 1
    assert engine.stats.rtp_packets == 100 and engine.stats.rtp_unmatched == 0
    ended = sink.calls[-1]
    assert (ended.event, ended.protocol, ended.local_ip) == (CallEvent.END, "rtp", "10.0.0.11")
    assert ended.end_reason == "media-timeout"
    assert {str(offer.receive_at) for offer in ended.media} == {"10.0.0.11:16384", "10.9.9.9:30000"}


def test_unsignalled_recording_can_be_turned_off_and_strangers_are_never_recorded() -> None:
    off = Engine(Collected(), phone_ips={"10.0.0.11"}, record_unsignalled=False)
    stranger = Engine(Collected(), phone_ips={"10.0.0.11"}, record_unsignalled=True)
    for at, frame in rtp_between("10.0.0.11", "10.9.9.9", 5, 1.0):
        off.feed(at, 1, frame)
    for at, frame in rtp_between("10.0.0.77", "10.9.9.9", 5, 1.0):
        stranger.feed(at, 1, frame)
    assert (off.stats.unsignalled_calls, off.stats.rtp_unmatched) == (0, 10)
    assert (stranger.stats.unsignalled_calls, stranger.stats.rtp_unmatched) == (0, 10)
