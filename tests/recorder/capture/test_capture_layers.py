"""Link layers, tunnels, IP fragments, TCP reassembly and capture files, from real bytes."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from integrations.observations import Endpoint
from recorder.capture.ip import Datagram, Defragmenter, IpDecoder
from recorder.capture.link import LinkError, ip_of_frame
from recorder.capture.sources import CaptureFileError, read_capture, read_captures
from recorder.capture.tcp import FIN, RST, SYN, TcpReassembler
from tests.packets import (
    ethernet,
    fragments4,
    ip4,
    tcp4,
    udp4,
    udp6,
    vlan,
    write_pcap,
)

INVITE = b"INVITE sip:9002@10.0.0.1 SIP/2.0\r\n" + b"X-Padding: " + b"p" * 3000 + b"\r\n\r\n"


def decode(linktype: int, frame: bytes) -> Datagram | None:
    return IpDecoder(_adder(Counter())).decode(ip_of_frame(linktype, frame), 0.0)


def _adder(counter: Counter):
    def add(kind: str) -> None:
        counter[kind] += 1

    return add


class TestLinkLayers:
    def test_ethernet_ipv4_udp(self) -> None:
        datagram = decode(1, ethernet(udp4("10.0.0.1", 5060, "10.0.0.2", 5060, b"hello")))
        assert (datagram.src_ip, datagram.dst_ip, datagram.proto) == ("10.0.0.1", "10.0.0.2", 17)
        assert datagram.payload[8:] == b"hello"

    def test_stacked_vlan_tags_are_peeled(self) -> None:
        frame = vlan(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"x"), 100, 200)
        assert decode(1, frame).dst_ip == "10.0.0.2"

    def test_ipv6_over_a_vlan(self) -> None:
        frame = vlan(udp6("2001:db8::1", 5060, "2001:db8::2", 5060, b"sip"), 10)
        datagram = decode(1, frame)
        assert (datagram.src_ip, datagram.payload[8:]) == ("2001:db8::1", b"sip")

    def test_linux_cooked_captures_sll_and_sll2(self) -> None:
        packet = bytes(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"x"))
        sll = struct.pack("!HHH8sH", 0, 1, 6, b"\x00" * 8, 0x0800) + packet
        sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x00" * 8) + packet
        assert decode(113, sll).dst_ip == "10.0.0.2"
        assert decode(276, sll2).dst_ip == "10.0.0.2"

    def test_raw_ip_linktypes(self) -> None:
        packet = bytes(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"x"))
        for linktype in (101, 228, 12):
            assert decode(linktype, packet).dst_ip == "10.0.0.2"

    def test_pppoe_session_inside_a_vlan(self) -> None:
        packet = bytes(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"x"))
        pppoe = struct.pack("!BBHHH", 0x11, 0, 7, len(packet) + 2, 0x0021) + packet
        frame = b"\x00" * 12 + struct.pack("!HHH", 0x8100, 7, 0x8864) + pppoe
        assert decode(1, frame).dst_ip == "10.0.0.2"

    def test_erspan_type_two_is_decapsulated(self) -> None:
        inner = ethernet(udp4("192.168.1.10", 5060, "192.168.1.20", 5060, b"REGISTER"))
        gre = struct.pack("!HHI", 0x1000, 0x88BE, 7) + struct.pack("!HHI", 0x1000, 1, 0) + inner
        outer = dpkt_ip(gre, proto=47)
        assert decode(1, ethernet(outer)).src_ip == "192.168.1.10"

    def test_erspan_type_three_with_its_platform_subheader(self) -> None:
        inner = ethernet(udp4("192.168.1.10", 5060, "192.168.1.20", 5060, b"x"))
        header = struct.pack("!IIHBB", 0x20000000, 0, 0, 0, 0x01) + b"\x00" * 8
        gre = struct.pack("!HH", 0x0000, 0x22EB) + header + inner
        assert decode(1, ethernet(dpkt_ip(gre, proto=47))).src_ip == "192.168.1.10"

    def test_vxlan_is_decapsulated(self) -> None:
        inner = ethernet(udp4("172.16.0.5", 5060, "172.16.0.6", 5060, b"x"))
        vxlan = struct.pack("!BxxxI", 0x08, 42 << 8) + inner
        outer = udp4("10.9.9.1", 40000, "10.9.9.2", 4789, vxlan)
        assert decode(1, ethernet(outer)).src_ip == "172.16.0.5"

    @pytest.mark.parametrize(
        ("linktype", "frame", "kind"),
        [
            (1, b"\x00" * 10, "truncated-link-header"),
            (1, b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28, "not-ip"),
            (147, b"\x00" * 40, "linktype-147"),
        ],
    )
    def test_what_is_not_ip_is_named(self, linktype: int, frame: bytes, kind: str) -> None:
        with pytest.raises(LinkError) as refusal:
            decode(linktype, frame)
        assert refusal.value.kind == kind

    def test_a_gre_tunnel_inside_a_tunnel_too_deep_is_refused(self) -> None:
        packet = bytes(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"x"))
        for _ in range(12):
            packet = dpkt_ip(struct.pack("!HH", 0, 0x0800) + packet, proto=47)
        with pytest.raises(LinkError) as refusal:
            decode(101, packet)
        assert refusal.value.kind == "encapsulation-too-deep"


def dpkt_ip(payload: bytes, proto: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        0,
        64,
        proto,
        0,
        ip4("10.255.0.1"),
        ip4("10.255.0.2"),
    )
    return header + payload


class TestFragments:
    def test_a_fragmented_invite_is_reassembled_in_any_order(self) -> None:
        packet = udp4("10.0.0.11", 5060, "10.0.0.1", 5060, INVITE, ident=77)
        pieces = fragments4(packet, 1480)
        assert len(pieces) == 3
        decoder = IpDecoder(_adder(Counter()))
        results = [decoder.decode(piece, 0.0) for piece in (pieces[2], pieces[0], pieces[1])]
        assert results[:2] == [None, None]
        assert results[2].payload[8:] == INVITE

    def test_duplicate_fragments_are_counted_and_harmless(self) -> None:
        errors = Counter()
        decoder = IpDecoder(_adder(errors))
        pieces = fragments4(udp4("10.0.0.11", 5060, "10.0.0.1", 5060, INVITE), 1480)
        decoder.decode(pieces[0], 0.0)
        decoder.decode(pieces[0], 0.0)
        decoder.decode(pieces[1], 0.0)
        assert decoder.decode(pieces[2], 0.0).payload[8:] == INVITE
        assert errors["fragment-duplicate"] == 1

    def test_incomplete_datagrams_time_out(self) -> None:
        errors = Counter()
        defragmenter = Defragmenter(_adder(errors), timeout=30.0)
        defragmenter.add(("a",), 0, True, b"x" * 8, now=0.0)
        defragmenter.expire(now=31.0)
        assert not defragmenter.pending
        assert errors["fragments-timed-out"] == 1

    def test_endless_fragments_stay_within_the_bound(self) -> None:
        errors = Counter()
        defragmenter = Defragmenter(_adder(errors), max_pending=100)
        for ident in range(10_000):
            defragmenter.add((ident,), 0, True, b"x" * 8, now=0.0)
        assert len(defragmenter.pending) == 100
        assert errors["fragments-dropped-overflow"] == 9_900

    def test_a_fragment_past_64_kib_is_refused(self) -> None:
        errors = Counter()
        defragmenter = Defragmenter(_adder(errors))
        assert defragmenter.add(("a",), 65528, False, b"x" * 100, now=0.0) is None
        assert errors["fragment-too-large"] == 1

    def test_ipv6_fragments_are_reassembled(self) -> None:
        whole = udp6("2001:db8::1", 5060, "2001:db8::2", 5060, INVITE)
        transport = whole[40:]
        pieces = []
        for offset in range(0, len(transport), 1448):
            piece = transport[offset : offset + 1448]
            more = offset + 1448 < len(transport)
            fragment_header = struct.pack("!BBHI", 17, 0, offset | more, 99)
            body = fragment_header + piece
            header = struct.pack("!IHBB", 6 << 28, len(body), 44, 64) + whole[8:40]
            pieces.append(header + body)
        decoder = IpDecoder(_adder(Counter()))
        results = [decoder.decode(piece, 0.0) for piece in reversed(pieces)]
        assert results[-1].payload[8:] == INVITE


class Collector:
    def __init__(self) -> None:
        self.streams: dict[bool, bytearray] = {True: bytearray(), False: bytearray()}
        self.gaps: list[bool] = []
        self.closed = False

    def data(self, from_client: bool, chunk: bytes, at: float) -> None:
        self.streams[from_client] += chunk

    def gap(self, from_client: bool) -> None:
        self.gaps.append(from_client)

    def close(self, at: float) -> None:
        self.closed = True


CLIENT, SERVER = Endpoint("10.0.0.11", 40000), Endpoint("10.0.0.1", 5060)


def reassembler(**limits: float) -> tuple[TcpReassembler, Collector, Counter]:
    collector, errors = Collector(), Counter()
    return TcpReassembler(lambda *_: collector, _adder(errors), **limits), collector, errors


class TestTcpReassembly:
    def test_out_of_order_segments_are_delivered_in_order(self) -> None:
        tcp, collected, errors = reassembler()
        tcp.segment(CLIENT, SERVER, 999, SYN, b"", 0.0)
        tcp.segment(CLIENT, SERVER, 1006, 0, b"world", 0.1)
        tcp.segment(CLIENT, SERVER, 1000, 0, b"hello ", 0.2)
        assert bytes(collected.streams[True]) == b"hello world"
        assert errors["tcp-out-of-order"] == 1

    def test_retransmissions_and_overlaps_are_trimmed(self) -> None:
        tcp, collected, errors = reassembler()
        tcp.segment(CLIENT, SERVER, 1000, 0, b"abcdef", 0.0)
        tcp.segment(CLIENT, SERVER, 1000, 0, b"abcdef", 0.1)
        tcp.segment(CLIENT, SERVER, 1003, 0, b"defghi", 0.2)
        assert bytes(collected.streams[True]) == b"abcdefghi"
        assert errors["tcp-retransmission"] == 1

    def test_sequence_numbers_wrap_around(self) -> None:
        tcp, collected, _ = reassembler()
        tcp.segment(CLIENT, SERVER, 2**32 - 3, 0, b"abc", 0.0)
        tcp.segment(CLIENT, SERVER, 0, 0, b"def", 0.1)
        assert bytes(collected.streams[True]) == b"abcdef"

    def test_a_hole_that_never_fills_becomes_a_gap(self) -> None:
        tcp, collected, errors = reassembler(hole_timeout=2.0)
        tcp.segment(CLIENT, SERVER, 1000, 0, b"one", 0.0)
        tcp.segment(CLIENT, SERVER, 1010, 0, b"three", 0.5)
        tcp.expire(now=3.0)
        assert bytes(collected.streams[True]) == b"onethree"
        assert collected.gaps == [True]
        assert errors["tcp-gap"] == 1

    def test_waiting_bytes_are_bounded(self) -> None:
        tcp, collected, _ = reassembler(max_waiting_bytes=1000)
        tcp.segment(CLIENT, SERVER, 0, 0, b"a", 0.0)
        for index in range(5):
            tcp.segment(CLIENT, SERVER, 100 + index * 400, 0, b"b" * 400, 0.1)
        assert collected.gaps == [True]
        assert len(collected.streams[True]) == 1 + 5 * 400

    def test_both_directions_and_close_on_fin(self) -> None:
        tcp, collected, _ = reassembler()
        tcp.segment(CLIENT, SERVER, 1, 0, b"request", 0.0)
        tcp.segment(SERVER, CLIENT, 500, 0, b"response", 0.1)
        tcp.segment(CLIENT, SERVER, 8, FIN, b"", 0.2)
        assert not collected.closed
        tcp.segment(SERVER, CLIENT, 508, FIN, b"", 0.3)
        assert collected.closed
        assert (bytes(collected.streams[True]), bytes(collected.streams[False])) == (
            b"request",
            b"response",
        )
        assert not tcp.connections

    def test_reset_closes_at_once(self) -> None:
        tcp, collected, _ = reassembler()
        tcp.segment(CLIENT, SERVER, 1, 0, b"x", 0.0)
        tcp.segment(SERVER, CLIENT, 9, RST, b"", 0.1)
        assert collected.closed

    def test_idle_connections_expire(self) -> None:
        tcp, collected, errors = reassembler(idle_timeout=600.0)
        tcp.segment(CLIENT, SERVER, 1, 0, b"x", 0.0)
        tcp.expire(now=601.0)
        assert collected.closed and not tcp.connections
        assert errors["tcp-idle-expired"] == 1

    def test_unclassified_connections_are_ignored(self) -> None:
        errors = Counter()
        tcp = TcpReassembler(lambda *_: None, _adder(errors))
        tcp.segment(CLIENT, SERVER, 1, 0, b"GET / HTTP/1.1", 0.0)
        assert not tcp.connections


class TestCaptureFiles:
    def test_a_pcap_reads_back_with_timestamps(self, tmp_path: Path) -> None:
        frames = [
            (1.5, ethernet(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"a"))),
            (2.25, ethernet(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"b"))),
        ]
        path = write_pcap(tmp_path / "a.pcap", frames)
        assert [(ts, link, frame) for ts, link, frame in read_capture(path)] == [
            (1.5, 1, frames[0][1]),
            (2.25, 1, frames[1][1]),
        ]

    def test_several_files_merge_in_time_order(self, tmp_path: Path) -> None:
        frame = ethernet(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"a"))
        first = write_pcap(tmp_path / "1.pcap", [(1.0, frame), (3.0, frame)])
        second = write_pcap(tmp_path / "2.pcap", [(2.0, frame), (4.0, frame)])
        assert [ts for ts, _, _ in read_captures([first, second])] == [1.0, 2.0, 3.0, 4.0]

    def test_a_file_that_is_no_capture_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("not a capture")
        with pytest.raises(CaptureFileError, match="neither a pcap nor a pcapng"):
            list(read_capture(path))

    def test_a_truncated_pcap_yields_its_whole_packets(self, tmp_path: Path) -> None:
        frame = ethernet(udp4("10.0.0.1", 1, "10.0.0.2", 2, b"a" * 100))
        path = write_pcap(tmp_path / "cut.pcap", [(1.0, frame), (2.0, frame)])
        path.write_bytes(path.read_bytes()[:-50])
        assert len(list(read_capture(path))) == 1


def test_tcp4_helper_builds_a_segment_the_decoder_reads() -> None:
    datagram = decode(1, ethernet(tcp4("10.0.0.11", 40000, "10.0.0.1", 2000, 5, b"abc")))
    assert datagram.proto == 6 and datagram.payload[-3:] == b"abc"


def test_an_ipv6_length_past_the_captured_bytes_is_an_error_not_a_crash() -> None:
    # Found by bench/fuzz_engine.py: a hop-by-hop header at the very end of a short packet.
    header = struct.pack("!IHBB", 6 << 28, 400, 0, 64) + ip4("10.0.0.1") * 4 + ip4("10.0.0.2") * 4
    with pytest.raises(LinkError) as refusal:
        IpDecoder(_adder(Counter())).decode(header + b"\x11", 0.0)
    assert refusal.value.kind == "truncated-ipv6-extension"
