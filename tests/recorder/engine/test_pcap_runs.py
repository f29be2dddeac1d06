"""The pcap loop's runs (recorder/engine/pcapfile.py) against the engine's packet path.

A capture is fed twice: through Engine.feed_pcap, where a run of equal-length records is
classified at once and each stream's packets are logged together, and record by record
through Engine.feed. The two must leave the same counts, the same ticks, the same calls
and call events, and the same RTP logs: every direction of every call holding the same
packets with the same arrival times in the same order (block boundaries may differ).

Every capture here is mostly RTP of one frame length, with what a run cannot take itself
(signalling, RTP to an unknown address, a fragment, TCP, a learned NAT address) placed
among it at that same length, so it falls inside a run and not between two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from integrations.observations import CallEvent, Side
from recorder.capture import traffic
from recorder.capture.sources import PCAP_MAGIC, pcap_chunks
from recorder.capture.synthesis import (
    ETHERNET_HEADER,
    checksum,
    ip_bytes,
    rtp,
    sdp,
    sip,
    tcp,
    udp,
    write_pcap,
)
from recorder.engine.calls import CallSnapshot, LiveCall, MediaStream
from recorder.engine.engine import Engine
from recorder.engine.pcapfile import RUN_MAX, RUN_STREAK, Run, RunFeeder
from recorder.media.rtplog import read_log
from tests.recorder.collected import Collected
from tests.recorder.engine import test_shared_media_address as shared_media

START = traffic.START
PACKET = 0.02
Frames = list[tuple[float, bytes]]
# 20 ms of G.711 in Ethernet/IPv4/UDP/RTP: 14 + 20 + 8 + 12 + 160 bytes.
G711_FRAME = 214


# -- what the engine leaves behind ------------------------------------------------------


@dataclass
class Outcome:
    """One feeding of a capture: the engine, its sink, the spool root, and what was seen
    on the way (each ended call's streams, every tick's time)."""

    engine: Engine
    sink: Collected
    root: Path
    ended_streams: list[tuple] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)


@dataclass
class RunUsage:
    """What the run path did: records it handled, RTP it took itself, packets it handed
    to the engine one by one, and classifications after a run's first packet."""

    records: int = 0
    recorded: int = 0
    handed_over: int = 0
    reclassified: int = 0
    longest: int = 0


@pytest.fixture
def usage(monkeypatch: pytest.MonkeyPatch) -> RunUsage:
    """Counts the run path's work, so no comparison passes with the runs never used."""
    counted = RunUsage()
    feed, one_by_one, classify = RunFeeder.feed, Run._one_by_one, Run._classify

    def counted_feed(self: RunFeeder, *run: object):
        records, recorded = feed(self, *run)
        counted.records += records
        counted.recorded += recorded
        counted.longest = max(counted.longest, records)
        return records, recorded

    def counted_one_by_one(self: Run, index: int) -> None:
        counted.handed_over += 1
        one_by_one(self, index)

    def counted_classify(self: Run, start: int) -> None:
        counted.reclassified += start > 0
        classify(self, start)

    monkeypatch.setattr(RunFeeder, "feed", counted_feed)
    monkeypatch.setattr(Run, "_one_by_one", counted_one_by_one)
    monkeypatch.setattr(Run, "_classify", counted_classify)
    return counted


def stream_figures(stream: MediaStream) -> tuple:
    return (stream.packets, stream.octets, stream.first_at, stream.last_at)


def watched(root: Path, **options) -> Outcome:
    """An engine spooling under `root` whose every call end and tick is noted."""
    sink = Collected()
    engine = Engine(sink, spool_root=root, **options)
    outcome = Outcome(engine, sink, root)
    end, tick = engine.calls.end, engine.tick

    def noted_end(call: LiveCall, at: float, reason: str) -> None:
        for side, stream in sorted(call.streams.items()):
            learned = stream.latch.learned if stream.latch is not None else None
            figures = stream_figures(learned) if learned is not None else None
            outcome.ended_streams.append(
                (call.call_id, call.started_at, side, stream_figures(stream), figures)
            )
        end(call, at, reason)

    def noted_tick(now: float) -> None:
        outcome.ticks.append(now)
        tick(now)

    engine.calls.end = noted_end
    engine.tick = noted_tick
    return outcome


def through_runs(path: Path, root: Path, chunk_bytes: int = 0, **options) -> Outcome:
    """The capture through Engine.feed_pcap (whole, or cut into chunks of `chunk_bytes`)."""
    outcome = watched(root, **options)
    found, chunks = pcap_chunks(path)
    if chunk_bytes:
        records = b"".join(chunks)
        chunks = (records[at : at + chunk_bytes] for at in range(0, len(records), chunk_bytes))
    outcome.engine.feed_pcap(found, chunks)
    outcome.engine.finish()
    return outcome


def pcap_records(path: Path) -> Iterator[tuple[float, bytes]]:
    """Every record of a classic pcap file, read with struct alone."""
    data = path.read_bytes()
    order, unit = PCAP_MAGIC[data[:4]]
    header = struct.Struct(order + "IIII")
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = header.unpack_from(data, offset)
        yield seconds + fraction * unit, data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured


def packet_by_packet(path: Path, root: Path, **options) -> Outcome:
    """The capture through Engine.feed, one record at a time."""
    outcome = watched(root, **options)
    for at, frame in pcap_records(path):
        outcome.engine.feed(at, 1, frame)
    outcome.engine.finish()
    return outcome


def logs(root: Path) -> dict[str, dict[Side, list[tuple[float, bytes]]]]:
    """Each call's RTP log as (arrival, packet) per direction, by its file name."""
    found = {}
    for directory in sorted(root.iterdir()) if root.exists() else []:
        directions: dict[Side, list[tuple[float, bytes]]] = {Side.CALLER: [], Side.CALLEE: []}
        for logged in read_log(directory):
            directions[logged.receiver].append((logged.arrival, logged.packet))
        found[directory.name] = directions
    return found


def logged_packets(root: Path) -> int:
    return sum(len(packets) for call in logs(root).values() for packets in call.values())


def portable(snapshot: CallSnapshot) -> CallSnapshot:
    """A snapshot with its spool named without the root, which differs between feedings."""
    return dataclasses.replace(snapshot, spool=Path(snapshot.spool).name if snapshot.spool else "")


def assert_same(runs: Outcome, packets: Outcome) -> None:
    assert runs.engine.stats == packets.engine.stats
    assert runs.ticks == packets.ticks
    assert runs.ended_streams == packets.ended_streams
    assert [portable(s) for s in runs.sink.calls] == [portable(s) for s in packets.sink.calls]
    assert runs.sink.bindings == packets.sink.bindings
    assert runs.engine.calls.latched_packets == packets.engine.calls.latched_packets
    run_logs, packet_logs = logs(runs.root), logs(packets.root)
    assert run_logs.keys() == packet_logs.keys()
    for name, directions in packet_logs.items():
        for side, logged in directions.items():
            assert run_logs[name][side] == logged, f"{name}, {side.name}: logs differ"


def compared(path: Path, tmp_path: Path, **options) -> tuple[Outcome, Outcome]:
    runs = through_runs(path, tmp_path / "runs", **options)
    packets = packet_by_packet(path, tmp_path / "packets", **options)
    assert_same(runs, packets)
    return runs, packets


def assert_runs_did_most(usage: RunUsage, outcome: Outcome, share: float = 0.9) -> None:
    stats = outcome.engine.stats
    assert usage.records > share * stats.packets
    assert usage.recorded > share * (usage.records - usage.handed_over)


# -- building captures ----------------------------------------------------------------------


def bench_capture(path: Path, calls: int, seconds: float) -> Path:
    traffic.write(path, traffic.packets(traffic.make_calls(calls), seconds, use_sccp=False))
    return path


def padded(frame: bytes, size: int) -> bytes:
    """A SIP frame grown to `size` bytes with a padding header (RFC 3261 section 7.3
    allows any extension header), so that it falls inside a run of that length."""
    payload = frame[42:]
    missing = size - len(frame)
    assert missing >= 13, "a padding header needs 13 bytes at least"
    payload = payload.replace(b"CSeq:", b"X-Padding: " + b"p" * (missing - 13) + b"\r\nCSeq:", 1)
    source, destination = frame[26:30], frame[30:34]
    source_port, destination_port = struct.unpack_from("!HH", frame, 34)
    grown = udp(_dotted(source), source_port, _dotted(destination), destination_port, payload)
    assert len(grown) == size
    return grown


def _dotted(packed: bytes) -> str:
    return ".".join(str(byte) for byte in packed)


def voice_frame(
    source: tuple[str, int], destination: tuple[str, int], sequence: int, ssrc: int, size: int
) -> bytes:
    """An RTP frame of `size` bytes in all, its payload a function of sequence and SSRC."""
    payload = bytes((sequence * 7 + ssrc + index) & 0xFF for index in range(size - 54))
    return udp(*source, *destination, rtp(sequence, sequence * 160, ssrc, payload))


def call_media(call: traffic.Call, begin: float, end: float, size: int) -> Frames:
    """Both directions of a bench call's RTP from `begin` to `end`, every 20 ms."""
    phone = (call.phone_ip, call.phone_rtp)
    # The gateway receives on its announced port and sends from another (as in traffic.py).
    gateway, gateway_sender = (call.gateway_ip, call.gateway_rtp), (call.gateway_ip, 31000)
    ssrc = 2 * call.index
    frames = []
    for tick in range(round((end - begin) / PACKET)):
        at = begin + tick * PACKET + call.index * 0.0003
        frames.append((at, voice_frame(phone, gateway, tick, ssrc, size)))
        frames.append((at + 0.0001, voice_frame(gateway_sender, phone, tick, ssrc + 1, size)))
    return frames


def call_signalling(call: traffic.Call, phase: str, at: float, size: int) -> Frames:
    return [
        (at + index * 0.001, padded(frame, size))
        for index, frame in enumerate(traffic.sip_signalling(call, phase))
    ]


def capture(path: Path, frames: Iterable[tuple[float, bytes]]) -> Path:
    write_pcap(path, sorted(frames, key=lambda frame: frame[0]))
    return path


# -- long runs --------------------------------------------------------------------------------


def test_fifty_calls_over_three_seconds_log_what_the_packet_path_logs(
    tmp_path: Path, usage: RunUsage
) -> None:
    path = bench_capture(tmp_path / "calls.pcap", 50, 3.0)
    runs, packets = compared(path, tmp_path)
    assert packets.engine.stats.rtp_packets == 50 * 300
    assert logged_packets(packets.root) == 50 * 300
    assert len(logs(packets.root)) == 50
    assert len(packets.sink.snapshots(CallEvent.END)) == 50
    # The ticks at 1 s and 2 s fall in the middle of the RTP, and so inside runs.
    assert len([at for at in packets.ticks if START + 0.5 < at < START + 2.5]) == 2
    assert_runs_did_most(usage, runs)


def test_a_run_longer_than_the_longest_is_taken_in_parts(tmp_path: Path, usage: RunUsage) -> None:
    path = bench_capture(tmp_path / "calls.pcap", 100, 7.0)
    # One chunk for the whole file, so that only RUN_MAX cuts the runs.
    runs = through_runs(path, tmp_path / "runs", chunk_bytes=path.stat().st_size)
    packets = packet_by_packet(path, tmp_path / "packets")
    assert_same(runs, packets)
    assert packets.engine.stats.rtp_packets == 100 * 700 > RUN_MAX
    assert logged_packets(runs.root) == 100 * 700
    assert usage.longest == RUN_MAX
    assert_runs_did_most(usage, runs)


def test_arrivals_out_of_order_and_a_clock_stepping_back_inside_runs(
    tmp_path: Path, usage: RunUsage
) -> None:
    # Two mirror ports merged: neighbouring records swap places now and then, and half-way
    # the capture's clock steps back by 0.7 s, so the records are not in time order.
    frames = list(traffic.packets(traffic.make_calls(10), 3.0, use_sccp=False))
    jitter = random.Random(7)
    for index in range(len(frames) - 1):
        if len(frames[index][1]) == G711_FRAME and jitter.random() < 0.2:
            frames[index], frames[index + 1] = frames[index + 1], frames[index]
    step = START + 1.5
    frames = [(at - 0.7 if at > step else at, frame) for at, frame in frames]
    path = tmp_path / "calls.pcap"
    write_pcap(path, frames)
    runs, packets = compared(path, tmp_path)
    arrivals = [at for at, _ in pcap_records(path)]
    assert any(later < earlier for earlier, later in itertools.pairwise(arrivals))
    assert logged_packets(packets.root) == packets.engine.stats.rtp_packets == 10 * 300
    assert_runs_did_most(usage, runs)


def test_signalling_inside_runs_changes_the_media_index_as_it_does_packet_by_packet(
    tmp_path: Path, usage: RunUsage
) -> None:
    # Six calls talk from the start; six more start in the middle of the others' RTP and
    # three of the first end there, their signalling padded to the RTP's frame length.
    # The ended calls' last packets straggle in after their BYE.
    size, calls, frames = 700, traffic.make_calls(12), []
    for call in calls:
        frames += call_signalling(call, "register", START, size)
    for call in calls[:6]:
        frames += call_signalling(call, "invite", START + 0.01, size)
        frames += call_media(call, START + 0.05, START + 3.0, size)
    for index, call in enumerate(calls[6:]):
        begin = START + 0.5 + 0.21 * index
        frames += call_signalling(call, "invite", begin, size)
        frames += call_media(call, begin + 0.01, START + 3.0, size)
    for index, call in enumerate(calls[:3]):
        bye = START + 1.3 + 0.3 * index
        frames = [
            (at, frame)
            for at, frame in frames
            if at < bye
            or frame[26:30] not in _addresses(call)
            or struct.unpack_from("!H", frame, 36)[0] == 5060
        ]
        frames += call_signalling(call, "bye", bye, size)
        frames += [(bye + 0.05, frame) for _, frame in call_media(call, 0.0, 0.02, size)]
    path = capture(tmp_path / "calls.pcap", frames)
    runs, packets = compared(path, tmp_path)
    assert packets.engine.stats.rtp_after_end == 3 * 2
    assert len(packets.sink.snapshots(CallEvent.END)) == 12
    assert len(logs(packets.root)) == 12 and packets.engine.stats.errors == {}
    # Every record of the file was one run's, but for the streak that starts the first.
    assert usage.records == packets.engine.stats.packets - (RUN_STREAK + 1)
    assert usage.reclassified >= 6 + 3  # each call begun or ended changed the index
    assert_runs_did_most(usage, runs)


def _addresses(call: traffic.Call) -> set[bytes]:
    return {ip_bytes(call.phone_ip), ip_bytes(call.gateway_ip)}


# -- packets a run cannot take ----------------------------------------------------------------


def test_rtp_to_unknown_addresses_inside_runs_goes_the_slow_way_and_counts_the_same(
    tmp_path: Path, usage: RunUsage
) -> None:
    # Four calls talk for 13 s. Among their packets, at their frame length: a stranger's
    # RTP (unmatched), and a known phone's RTP no signalling announced, which starts an
    # unsignalled call mid-run; that call goes silent and a tick ends it 10 s later, and
    # late packets to its address, past the ended call's grace, start another once they
    # make a stream (recorder/engine/floods.py, StreamProbation).
    calls = traffic.make_calls(4)
    frames = list(traffic.packets(calls, 13.0, use_sccp=False))
    media_start = min(at for at, frame in frames if len(frame) == G711_FRAME)
    phone, far = (calls[0].phone_ip, 17000), ("10.9.9.9", 40000)
    stranger, nobody = ("10.7.7.7", 20000), ("10.8.8.8", 20002)
    for index in range(30):
        at = media_start + 0.5 + index * PACKET + 0.00005
        frames.append((at, voice_frame(phone, far, index, 0x51, G711_FRAME)))
        frames.append((at + 0.00001, voice_frame(far, phone, index, 0x52, G711_FRAME)))
    for index in range(12):
        at = media_start + 0.3 + index * 0.9 + 0.00007
        frames.append((at, voice_frame(stranger, nobody, index, 0x53, G711_FRAME)))
    for index in range(30):
        at = media_start + 12.5 + index * PACKET
        frames.append((at, voice_frame(far, phone, 99 + index, 0x52, G711_FRAME)))
    path = capture(tmp_path / "calls.pcap", frames)
    runs, packets = compared(path, tmp_path, record_unsignalled=True)
    stats = packets.engine.stats
    assert (stats.unsignalled_calls, stats.rtp_unmatched, stats.rtp_after_end) == (2, 12, 0)
    assert stats.rtp_packets == 4 * 2 * 650 + 60 + 30
    ended = [s for s in packets.sink.snapshots(CallEvent.END) if s.protocol == "rtp"]
    assert [s.end_reason for s in ended] == ["media-timeout", "capture-ended"]
    assert usage.handed_over >= 12 + 1 + 1  # strangers, each unsignalled call's first
    assert usage.reclassified >= 3  # unsignalled calls begun, and the first ended by a tick
    assert_runs_did_most(usage, runs)


def known_stream_frames(call: traffic.Call, size: int) -> list[bytes]:
    """Frames of `size` bytes to a call's phone's media address that are not plain IPv4
    UDP: a fragment with more to come and the last one of the same datagram, TCP, IPv4
    with options, a VLAN tag, and an ARP frame padded to the length."""
    phone, gateway = call.phone_ip, call.gateway_ip
    piece = size - 14 - 20
    datagram = voice_frame((gateway, 31000), (phone, call.phone_rtp), 9, 0x77, 2 * piece + 34)
    udp_bytes = datagram[34:]
    first = _fragment(gateway, phone, 4242, 0x2000, udp_bytes[:piece])
    last = _fragment(gateway, phone, 4242, piece // 8, udp_bytes[piece:])
    segment = tcp(gateway, 31000, phone, call.phone_rtp, 1, b"t" * (size - 54))
    plain = voice_frame((gateway, 31000), (phone, call.phone_rtp), 10, 0x78, size - 4)
    with_options = _with_options(plain)
    tagged_rtp = voice_frame((gateway, 31000), (phone, call.phone_rtp), 11, 0x79, size - 4)
    tagged = tagged_rtp[:12] + b"\x81\x00\x00\x64" + tagged_rtp[12:]
    arp = ETHERNET_HEADER[:12] + b"\x08\x06" + bytes(size - 14)
    frames = [first, last, segment, with_options, tagged, arp]
    assert [len(frame) for frame in frames] == [size] * 6
    return frames


def _fragment(source: str, destination: str, ident: int, flags_offset: int, data: bytes) -> bytes:
    """An IPv4 fragment (RFC 791: flags and offset in 8-byte units share one word)."""
    addresses = ip_bytes(source) + ip_bytes(destination)
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(data), ident, flags_offset, 64, 17, 0)
    header += addresses
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return ETHERNET_HEADER + header + data


def _with_options(frame: bytes) -> bytes:
    """The frame's IPv4 header grown by one 4-byte option word (four No-Operations)."""
    header = bytearray(frame[14:34])
    header[0] = 0x46
    struct.pack_into("!H", header, 2, struct.unpack_from("!H", header, 2)[0] + 4)
    header[10:12] = b"\x00\x00"
    header += b"\x01\x01\x01\x01"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return frame[:14] + bytes(header) + frame[34:]


def test_frames_of_the_runs_length_that_are_not_plain_ipv4_udp_take_the_slow_path(
    tmp_path: Path, usage: RunUsage
) -> None:
    # RTP of 218-byte frames (164 bytes of payload, so that a fragment's 184 bytes are a
    # whole number of 8-byte units), with frames of that length to a known media address
    # that the fast path must not take: the reassembled fragment and the options and VLAN
    # frames are the call's RTP all the same, by the slow path.
    size, calls = 218, traffic.make_calls(5)
    frames, media = [], []
    for call in calls:
        frames += call_signalling(call, "register", START, 1200)
        frames += call_signalling(call, "invite", START + 0.01, 1200)
        media += call_media(call, START + 0.05, START + 2.0, size)
    frames += media
    odd = known_stream_frames(calls[2], size)
    for index, frame in enumerate(odd):
        frames.append((START + 0.5 + index * 0.2 + 0.00013, frame))
    path = capture(tmp_path / "calls.pcap", frames)
    runs, packets = compared(path, tmp_path)
    stats = packets.engine.stats
    assert stats.rtp_packets == len(media) + 3  # the fragments' datagram, options, VLAN
    assert stats.ignored["not-ip"] == 1
    assert usage.handed_over >= len(odd)
    assert_runs_did_most(usage, runs)


def test_a_do_not_record_call_inside_runs_is_counted_and_not_logged(
    tmp_path: Path, usage: RunUsage
) -> None:
    path = bench_capture(tmp_path / "calls.pcap", 10, 2.0)
    # Do-not-record phones are known by their trusted addresses, not by a caller's number.
    calls = traffic.make_calls(10)
    phones = {calls[3].phone_ip, calls[7].phone_ip}
    runs, packets = compared(path, tmp_path, do_not_record_ips=phones)
    # Counted once per call, though each of its offers asks again.
    assert packets.engine.stats.not_recorded == 2
    assert packets.engine.stats.rtp_packets == 10 * 200
    assert len(logs(packets.root)) == 8
    assert logged_packets(packets.root) == 8 * 200
    unlogged = [
        figures[0]
        for call_id, _, _, figures, _ in packets.ended_streams
        if call_id.startswith(("bench-3@", "bench-7@"))
    ]
    assert unlogged == [100] * 4  # each direction's packets, counted
    assert_runs_did_most(usage, runs)


# -- a NAT'd far side whose learned address receives inside runs -------------------------------

PHONE = ("10.50.0.11", 16384)
FAR_SDP = ("192.168.1.20", 4000)
FAR_NAT = ("203.0.113.7", 31000)
SSRC_PHONE, SSRC_FAR, SSRC_OTHER = 0x1111, 0x2222, 0x3333
# A call's log is named "<start>-<sha1 of the Call-ID, 20 hex>.rtp" (Engine._open_log).
NAT_SPOOL = "-" + hashlib.sha1(b"nat-1", usedforsecurity=False).hexdigest()[:20] + ".rtp"


def ssrc_of(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 8)[0]


def nat_call(variant: str, begin: float, seconds: float) -> Frames:
    """A SIP call whose far end's SDP names an address behind its NAT: the phone sends to
    the far end's real address, which is learned after a second (docs/capture.md). From
    half-way, in the "announced" variant a relay reaches the announced address, and in
    the "another-sender" variant another SSRC reaches the learned one."""
    ends = ["From: <sip:9001@pbx>;tag=a", "To: <sip:0612345678@pbx>;tag=b", "Call-ID: nat-1"]
    via = f"Via: SIP/2.0/UDP {PHONE[0]}:5060;branch=z9hG4bKnat"
    invite_headers = [via, ends[0], "To: <sip:0612345678@pbx>", ends[2], "CSeq: 1 INVITE"]
    invite_headers.append(f"Contact: <sip:9001@{PHONE[0]}>")
    invite = sip("INVITE sip:0612345678@10.50.0.1 SIP/2.0", invite_headers, sdp(*PHONE))
    ok_headers = [via, *ends, "CSeq: 1 INVITE", "Contact: <sip:far@10.50.0.1>"]
    ok = sip("SIP/2.0 200 OK", ok_headers, sdp(*FAR_SDP))
    bye = sip("BYE sip:far@10.50.0.1 SIP/2.0", [via, *ends, "CSeq: 2 BYE"])
    frames = [
        (begin, udp(PHONE[0], 5060, "10.50.0.1", 5060, invite)),
        (begin + 0.01, udp("10.50.0.1", 5060, PHONE[0], 5060, ok)),
        (begin + seconds + 0.2, udp(PHONE[0], 5060, "10.50.0.1", 5060, bye)),
    ]
    for index in range(round(seconds / PACKET)):
        at = begin + 0.05 + index * PACKET + 0.00011
        frames.append((at, voice_frame(FAR_NAT, PHONE, index, SSRC_FAR, G711_FRAME)))
        frames.append((at + 0.001, voice_frame(PHONE, FAR_NAT, index, SSRC_PHONE, G711_FRAME)))
        if index * PACKET < seconds / 2:
            continue
        if variant == "announced":
            relay = ("10.50.0.9", 4376)
            frames.append((at + 0.002, voice_frame(relay, FAR_SDP, index, SSRC_OTHER, G711_FRAME)))
        elif variant == "another-sender":
            other = ("10.50.0.12", 16384)
            frames.append((at + 0.002, voice_frame(other, FAR_NAT, index, SSRC_OTHER, G711_FRAME)))
    return frames


@pytest.mark.parametrize("variant", ["learned", "announced", "another-sender"])
def test_a_learned_nat_address_inside_runs_is_judged_packet_by_packet(
    tmp_path: Path, usage: RunUsage, variant: str
) -> None:
    frames = list(traffic.packets(traffic.make_calls(6), 4.0, use_sccp=False))
    frames += nat_call(variant, START + 0.05, 4.0)
    path = capture(tmp_path / "calls.pcap", frames)
    runs, packets = compared(path, tmp_path)
    stats = packets.engine.stats
    assert packets.engine.calls.latched_packets > 40  # learned a second in, for a while
    # Packets on probation are counted as relayed, then as recorded once learned. After
    # half-way, "announced": the learned address is let go and the phone's packets are
    # relayed again; "another-sender": let go at each packet of the other SSRC, it is
    # judged anew each time, the last probation at the call's end (all the phone's own).
    assert (stats.rtp_relayed > 0) == (variant == "announced")
    [nat_log] = [log for name, log in logs(packets.root).items() if name.endswith(NAT_SPOOL)]
    assert len(nat_log[Side.CALLER]) == 200  # the far end's voice, to the announced phone
    assert {ssrc_of(packet) for _, packet in nat_log[Side.CALLEE]} >= {SSRC_PHONE}
    # The phone's packets to the far end's real address are handed over one by one: 200,
    # and in "another-sender" the other SSRC's too, at their own place in each run.
    assert usage.handed_over >= 200
    assert_runs_did_most(usage, runs, share=0.8)


# -- where chunks and files cut runs --------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1000, 4096, 4099, 65536, 65537])
def test_chunks_cutting_runs_anywhere_change_nothing(
    tmp_path: Path, usage: RunUsage, chunk_bytes: int
) -> None:
    path = bench_capture(tmp_path / "calls.pcap", 20, 2.0)
    runs = through_runs(path, tmp_path / "runs", chunk_bytes=chunk_bytes)
    packets = packet_by_packet(path, tmp_path / "packets")
    assert_same(runs, packets)
    assert logged_packets(packets.root) == packets.engine.stats.rtp_packets == 20 * 200
    # A chunk of 1000 bytes holds four records: too few for a run to start.
    if chunk_bytes > 4000:
        assert usage.records > 0
    if chunk_bytes > 65000:
        assert_runs_did_most(usage, runs)


def test_calls_split_at_the_maximum_length_inside_runs_log_the_same_segments(
    tmp_path: Path, usage: RunUsage
) -> None:
    path = bench_capture(tmp_path / "calls.pcap", 10, 4.0)
    runs, packets = compared(path, tmp_path, max_call_seconds=1.5)
    begun = packets.sink.snapshots(CallEvent.START)
    spooled = [s for s in packets.sink.snapshots(CallEvent.END) if s.spool]
    # Every segment that had RTP has its log; one begun as its media stopped has none.
    assert len(begun) > len(spooled) > 10 and len(logs(packets.root)) == len(spooled)
    assert logged_packets(packets.root) == 10 * 400
    assert_runs_did_most(usage, runs)


def write_pcap_as(path: Path, frames: Iterable[tuple[float, bytes]], order: str, unit: float):
    """A classic pcap file in the given byte order and time unit (1e-6 or 1e-9)."""
    magic = 0xA1B2C3D4 if unit == 1e-6 else 0xA1B23C4D
    per_second = round(1 / unit)
    with open(path, "wb") as capture_file:
        capture_file.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1))
        for at, frame in frames:
            seconds = int(at)
            fraction = min(round((at - seconds) * per_second), per_second - 1)
            header = struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame))
            capture_file.write(header + frame)
    return path


@pytest.mark.parametrize(("order", "unit"), [("<", 1e-6), (">", 1e-6), ("<", 1e-9), (">", 1e-9)])
def test_big_endian_and_nanosecond_captures_give_the_same_runs(
    tmp_path: Path, usage: RunUsage, order: str, unit: float
) -> None:
    frames = traffic.packets(traffic.make_calls(10), 1.5, use_sccp=False)
    path = write_pcap_as(tmp_path / "calls.pcap", frames, order, unit)
    assert PCAP_MAGIC[path.read_bytes()[:4]] == (order, unit)
    runs, packets = compared(path, tmp_path)
    assert packets.engine.stats.rtp_packets == 10 * 150
    arrivals = sorted(
        at for call in logs(runs.root).values() for side in call.values() for at, _ in side
    )
    assert START < arrivals[0] < arrivals[-1] < START + 2.0
    assert_runs_did_most(usage, runs)


# -- an address two calls share ---------------------------------------------------------------


def internal_call(begin: float, seconds: float) -> Frames:
    """9001 calls 9002 through a B2BUA with direct media (tests/recorder/engine/
    test_shared_media_address.py): two dialogs, each naming both phones' addresses, and
    the RTP straight between the phones, inside the runs of the bench calls around it."""
    a, b = ("10.81.0.11", 16000), ("10.81.0.12", 17000)
    pbx = ("10.81.0.1", "pbx")
    end = begin + seconds + 0.2
    frames = shared_media.leg("leg-a", (a[0], "9001"), pbx, a, b, begin, begin + 0.02, end)
    frames += shared_media.leg("leg-b", pbx, (b[0], "9002"), a, b, begin + 0.01, begin + 0.015,
                               end + 0.01)  # fmt: skip
    for index in range(round(seconds / PACKET)):
        at = begin + 0.05 + index * PACKET + 0.00013
        frames.append((at, voice_frame(a, b, index, 0xA1, G711_FRAME)))
        frames.append((at + 0.001, voice_frame(b, a, index, 0xB2, G711_FRAME)))
    return frames


def test_an_address_two_calls_share_inside_runs_is_logged_for_both_as_packet_by_packet(
    tmp_path: Path, usage: RunUsage
) -> None:
    frames = list(traffic.packets(traffic.make_calls(6), 4.0, use_sccp=False))
    frames += internal_call(START + 0.05, 4.0)
    path = capture(tmp_path / "calls.pcap", frames)
    runs, packets = compared(path, tmp_path)
    assert packets.engine.stats.rtp_packets == 6 * 400 + 400  # each packet counted once
    spools = {s.call_id: Path(s.spool).name for s in packets.sink.snapshots(CallEvent.END)}
    found = logs(packets.root)
    for leg in ("leg-a", "leg-b"):
        directions = found[spools[leg]]
        assert [len(directions[side]) for side in (Side.CALLER, Side.CALLEE)] == [200, 200]
        assert {ssrc_of(packet) for _, packet in directions[Side.CALLER]} == {0xB2}
    assert_runs_did_most(usage, runs)
