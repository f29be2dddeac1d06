"""Damaged capture files through `import_pcap` (issue 11, finding L2).

Each damaged file is built here from a good public capture read in place (two SIP calls
with their RTP): its records rewritten as pcapng with one impossible timestamp, cut in the
middle of a record, or with a Section Header Block that claims a huge length. The import
must finish with what it could read and say in its summary what it skipped and where the
file was cut.
"""

from __future__ import annotations

import io
import struct
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from recorder.capture.pcapng import PcapngReader
from recorder.models import Call

GOOD = "heplify-rtp_rtcp_sip_ipv4_udp.pcap"
# 1.8e13 seconds after 1970: the year 572,367 the audit's bit-flipped capture named.
YEAR_572367 = 18_000_000_000_000.0


def pcap_records(path: Path) -> list[tuple[int, float, bytes]]:
    """Each record of a little-endian microsecond pcap as (file offset, time, frame)."""
    data = path.read_bytes()
    records, offset = [], 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack_from("<IIII", data, offset)
        records.append(
            (offset, seconds + fraction / 1e6, data[offset + 16 : offset + 16 + captured])
        )
        offset += 16 + captured
    return records


def pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = struct.pack("<I", len(body) + 12)
    return struct.pack("<I", block_type) + length + body + length


def section_header(length: int | None = None) -> bytes:
    block = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    return block if length is None else block[:4] + struct.pack("<I", length) + block[8:]


def interface(linktype: int = 1, tsresol: int | None = None) -> bytes:
    options = b""
    if tsresol is not None:
        options = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    return pcapng_block(1, struct.pack("<HHI", linktype, 0, 65535) + options)


def enhanced_packet(ticks: int, frame: bytes, interface_id: int = 0) -> bytes:
    header = struct.pack(
        "<IIIII", interface_id, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
    )
    return pcapng_block(6, header + frame)


def write_pcapng(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    blocks = [section_header(), interface()]
    blocks += [enhanced_packet(round(at * 1e6), frame) for at, frame in packets]
    path.write_bytes(b"".join(blocks))
    return path


def import_pcap(*paths: Path) -> list[str]:
    output = io.StringIO()
    call_command("import_pcap", *map(str, paths), stdout=output)
    return output.getvalue().splitlines()


@pytest.fixture
def good_capture(public_captures: Path) -> Path:
    return public_captures / GOOD


@pytest.mark.django_db(transaction=True)
def test_a_pcapng_record_from_the_year_572367_is_skipped_and_counted(
    good_capture: Path, tmp_path: Path
) -> None:
    packets = [(at, frame) for _, at, frame in pcap_records(good_capture)]
    packets.insert(len(packets) // 2, (YEAR_572367, packets[0][1]))
    lines = import_pcap(write_pcapng(tmp_path / "ts-overflow.pcapng", packets))
    assert "records skipped: impossible timestamp (before 1970 or after 2200) 1" in lines
    assert "SIP messages: 14" in lines
    assert "calls seen: 2" in lines
    assert Call.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_pcap_cut_inside_its_last_record_says_where_in_the_summary(
    good_capture: Path, tmp_path: Path
) -> None:
    records = pcap_records(good_capture)
    cut = tmp_path / "truncated-record.pcap"
    cut.write_bytes(good_capture.read_bytes()[:-50])
    lines = import_pcap(cut)
    last_offset = records[-1][0]
    assert any(
        line.startswith(
            f"file cut: {cut} is cut at byte {last_offset:,}, in record {len(records):,}"
        )
        for line in lines
    ), lines
    assert "calls seen: 2" in lines


@pytest.mark.django_db(transaction=True)
def test_a_cut_file_among_several_is_named_with_its_place(
    good_capture: Path, tmp_path: Path
) -> None:
    records = pcap_records(good_capture)
    whole, cut = tmp_path / "whole.pcap", tmp_path / "truncated-mid-file.pcap"
    whole.write_bytes(good_capture.read_bytes())
    # Cut 10 bytes into the header of record 101: the first 100 records are whole.
    cut.write_bytes(good_capture.read_bytes()[: records[100][0] + 10])
    lines = import_pcap(whole, cut)
    expected = f"file cut: {cut} is cut at byte {records[100][0]:,}, in record 101 "
    assert any(line.startswith(expected) for line in lines), lines


@pytest.mark.django_db(transaction=True)
def test_a_pcapng_cut_inside_a_block_says_where_in_the_summary(
    good_capture: Path, tmp_path: Path
) -> None:
    packets = [(at, frame) for _, at, frame in pcap_records(good_capture)][:50]
    path = write_pcapng(tmp_path / "cut.pcapng", packets)
    path.write_bytes(path.read_bytes()[:-7])
    last_block = len(section_header()) + len(interface())
    last_block += sum(len(enhanced_packet(0, frame)) for _, frame in packets[:-1])
    lines = import_pcap(path)
    expected = f"file cut: {path} is cut at byte {last_block:,}, in record 50 (the file ends"
    assert any(line.startswith(expected) for line in lines), lines
    assert "packets: 49" in lines[0]


@pytest.mark.django_db(transaction=True)
def test_a_huge_section_header_length_is_refused_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "ng-shb-len-huge.pcapng"
    path.write_bytes(section_header(length=0xFFFFFFF0) + interface())
    with pytest.raises(CommandError) as refusal:
        import_pcap(path)
    assert str(refusal.value) == (
        f"{path} is not a readable pcapng file "
        "(a block claims 4,294,967,280 bytes, more than the 1,048,576 QMS reads)."
    )


def test_each_pcapng_interface_keeps_its_link_type_and_resolution(tmp_path: Path) -> None:
    path = tmp_path / "two-interfaces.pcapng"
    blocks = [section_header(), interface(1), interface(113, tsresol=9)]
    blocks += [enhanced_packet(1_500_000, b"a"), enhanced_packet(2_250_000_000, b"b", 1)]
    path.write_bytes(b"".join(blocks))
    with open(path, "rb") as capture:
        packets = list(PcapngReader(capture, Counter()).packets())
    assert packets == [(1.5, 1, b"a"), (2.25, 113, b"b")]
