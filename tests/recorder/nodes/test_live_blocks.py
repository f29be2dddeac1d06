"""Live capture's blocks against the engine's packet path.

A live capture hands the engine what each read of a tcpdump pipe returned: classic pcap,
its file header first, cut wherever the read ended (inside a record's header, inside a
frame). Through the capture loop (recorder/nodes/live.py) and its PcapStream, a capture cut
into such blocks must leave what the same packets leave fed one by one through
Engine.feed: the same counts, ticks, calls, call events and RTP logs.

The captures hold interleaved calls, signalling inside the RTP, SIP and RTP over IPv6 and
in 802.1Q VLAN tags.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from integrations.observations import CallEvent, Side
from recorder.capture import traffic
from recorder.capture.synthesis import rtp, sip
from recorder.nodes.live import CaptureLoop
from tests.packets import ethernet, udp4, udp6, vlan
from tests.recorder.engine.test_pcap_runs import (
    START,
    Outcome,
    assert_same,
    capture,
    logs,
    packet_by_packet,
    watched,
)
from tests.recorder.nodes.blocks import BlockReplay, cut

PHONE6, GATEWAY6 = "2001:db8::10", "2001:db8::1"
PHONE_VLAN, GATEWAY_VLAN = "10.66.0.10", "10.66.0.1"
VOICE = bytes(range(160))


def sdp_for(ip: str, port: int) -> str:
    family = "IP6" if ":" in ip else "IP4"
    return (
        f"v=0\r\no=qms 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def dialog(call_id: str, phone: str, gateway: str, begin: float, seconds: float) -> list:
    """A SIP call from 7001 at `phone` to `gateway` (RFC 3261 §13, §15) with 20 ms RTP both
    ways for `seconds`, as (at, ip packet) pairs: IPv6 when the addresses are."""
    datagram = udp6 if ":" in phone else udp4
    via = [f"Via: SIP/2.0/UDP [{phone}]:5060;branch=z9hG4bK{call_id}"]
    offered = ["From: <sip:7001@pbx>;tag=a", "To: <sip:7002@pbx>", f"Call-ID: {call_id}"]
    answered = [offered[0], "To: <sip:7002@pbx>;tag=b", offered[2]]
    invite = sip(
        "INVITE sip:7002@pbx SIP/2.0",
        via + offered + ["CSeq: 1 INVITE", f"Contact: <sip:7001@[{phone}]>"],
        sdp_for(phone, 40000),
    )
    ok = sip("SIP/2.0 200 OK", via + answered + ["CSeq: 1 INVITE"], sdp_for(gateway, 50000))
    bye = sip("BYE sip:7002@pbx SIP/2.0", via + answered + ["CSeq: 2 BYE"])
    packets = [
        (begin, datagram(phone, 5060, gateway, 5060, invite)),
        (begin + 0.05, datagram(gateway, 5060, phone, 5060, ok)),
    ]
    for index in range(round(seconds / 0.02)):
        at = begin + 0.1 + index * 0.02
        packets.append(
            (at, datagram(phone, 40000, gateway, 50000, rtp(index, index * 160, 1, VOICE)))
        )
        packets.append(
            (at + 0.001, datagram(gateway, 50000, phone, 40000, rtp(index, index * 160, 2, VOICE)))
        )
    packets.append((begin + 0.2 + seconds, datagram(phone, 5060, gateway, 5060, bye)))
    return packets


def mixed_capture(path: Path) -> Path:
    """Twenty bench calls (REGISTER, INVITE, RTP, BYE) interleaved with one call over IPv6
    and one in VLAN 100, starting in the middle of the others' RTP."""
    frames = list(traffic.packets(traffic.make_calls(20), 3.0, use_sccp=False))
    frames += [
        (at, ethernet(packet))
        for at, packet in dialog("v6-call", PHONE6, GATEWAY6, START + 0.7, 1.5)
    ]
    frames += [
        (at, vlan(packet, 100))
        for at, packet in dialog("vlan-call", PHONE_VLAN, GATEWAY_VLAN, START + 1.1, 1.2)
    ]
    return capture(path, frames)


def through_live_blocks(path: Path, root: Path, sizes: list[int], **options) -> Outcome:
    """The file's bytes, header and all, as one interface's pipe reads of `sizes` bytes,
    through the capture loop."""
    outcome = watched(root, **options)
    source = BlockReplay(cut(path.read_bytes(), sizes))
    CaptureLoop(3600, lambda *_: None).run(source, outcome.engine)
    assert source.closed
    return outcome


def random_sizes(seed: int, largest: int) -> list[int]:
    """Read sizes a pipe might return: from 1 byte (inside a record's 16-byte header) to
    `largest`."""
    chooser = random.Random(seed)
    return [chooser.choice((1, 7, 15, 16, 17, 213, 230)) if chooser.random() < 0.3
            else chooser.randint(1, largest) for _ in range(200_000)]  # fmt: skip


@pytest.mark.parametrize(("seed", "largest"), [(1, 300), (2, 5000), (3, 70000), (4, 1 << 20)])
def test_live_blocks_cut_anywhere_leave_what_packet_by_packet_leaves(
    tmp_path: Path, seed: int, largest: int
) -> None:
    path = mixed_capture(tmp_path / "mixed.pcap")
    blocks = through_live_blocks(path, tmp_path / "blocks", random_sizes(seed, largest))
    packets = packet_by_packet(path, tmp_path / "packets")
    assert_same(blocks, packets)
    ended = {s.call_id: s for s in packets.sink.snapshots(CallEvent.END)}
    assert ended["v6-call"].end_reason == ended["vlan-call"].end_reason == "bye"
    assert len(ended) == 22
    # Every RTP packet of the IPv6 and VLAN calls reached its call's log.
    spools = {Path(s.spool).name: s.call_id for s in ended.values() if s.spool}
    logged = {spools[name]: directions for name, directions in logs(blocks.root).items()}
    assert [len(logged["v6-call"][side]) for side in Side] == [75, 75]
    assert [len(logged["vlan-call"][side]) for side in Side] == [60, 60]
    assert blocks.engine.stats.errors == {}


def test_one_block_per_record_and_the_whole_file_in_one_block_agree(tmp_path: Path) -> None:
    path = mixed_capture(tmp_path / "mixed.pcap")
    whole = through_live_blocks(path, tmp_path / "whole", [path.stat().st_size])
    data = path.read_bytes()
    records, offset = [24], 24
    while offset < len(data):
        length = 16 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        records.append(length)
        offset += length
    single = through_live_blocks(path, tmp_path / "single", records)
    assert_same(whole, single)
    assert_same(single, packet_by_packet(path, tmp_path / "packets"))


def test_two_interfaces_each_in_their_own_stream_record_their_own_calls(tmp_path: Path) -> None:
    # One mirror port carries the IPv6 call, the other the VLAN call; their pipes' blocks
    # arrive interleaved, each stream with its own pcap header.
    first = capture(tmp_path / "a.pcap", [(at, ethernet(p)) for at, p in
                    dialog("v6-call", PHONE6, GATEWAY6, START, 1.0)])  # fmt: skip
    second = capture(tmp_path / "b.pcap", [(at, vlan(p, 100)) for at, p in
                     dialog("vlan-call", PHONE_VLAN, GATEWAY_VLAN, START + 0.01, 1.0)])  # fmt: skip
    chooser = random.Random(5)
    a = cut(first.read_bytes(), [chooser.randint(1, 900) for _ in range(5000)], "eth1")
    b = cut(second.read_bytes(), [chooser.randint(1, 900) for _ in range(5000)], "eth2")
    interleaved = [block for pair in zip(a, b, strict=False) for block in pair]
    interleaved += a[len(b) :] + b[len(a) :]
    outcome = watched(tmp_path / "spool")
    CaptureLoop(3600, lambda *_: None).run(BlockReplay(interleaved), outcome.engine)
    ended = {s.call_id: s for s in outcome.sink.snapshots(CallEvent.END)}
    assert {call_id: s.end_reason for call_id, s in ended.items()} == {
        "v6-call": "bye",
        "vlan-call": "bye",
    }
    assert outcome.engine.stats.rtp_packets == 2 * 2 * 50
    assert outcome.engine.stats.errors == {}
