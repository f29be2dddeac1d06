"""A pcap stream fed up to a time, then on: what a live interface's two rings need to be
merged by capture time (recorder/nodes/rings.py). Held back in steps, through runs and
across blocks cut anywhere, a capture must leave what it leaves fed at once, and each step
must feed exactly the records captured before its time."""

from __future__ import annotations

import bisect
import random
from pathlib import Path

import pytest

from recorder.capture import traffic
from recorder.engine.pcapfile import PcapStream, RunFeeder
from tests.recorder.engine.test_pcap_runs import (
    assert_same,
    bench_capture,
    packet_by_packet,
    pcap_records,
    watched,
)

STEP_BYTES = (1, 15, 17, 230, 5000, 70000, 400000, 1 << 20)
STEP_SECONDS = (0.0, 0.0003, 0.013, 0.05, 0.2)


def record_ends(data: bytes) -> list[int]:
    """Where each record of a classic pcap file ends, in bytes from the file's start."""
    ends, offset = [], 24
    while offset < len(data):
        offset += 16 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        ends.append(offset)
    return ends


def run_records(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """The records each run handled, and whether it stopped at a record not yet due."""
    handled, feed = [], RunFeeder.feed

    def counted(self: RunFeeder, *run: object) -> tuple[int, int]:
        records, recorded = feed(self, *run)
        handled.append((records, self.held_at is not None))
        return records, recorded

    monkeypatch.setattr(RunFeeder, "feed", counted)
    return handled


def test_a_stream_held_back_in_steps_feeds_what_is_due_and_ends_as_one_feeding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = run_records(monkeypatch)
    path = bench_capture(tmp_path / "calls.pcap", 30, 3.0)
    data = path.read_bytes()
    times = [at for at, _ in pcap_records(path)]
    ends = record_ends(data)
    chooser = random.Random(7)
    outcome = watched(tmp_path / "steps")
    stream = PcapStream(outcome.engine)
    read, until = 0, traffic.START
    while read < len(data):
        block = data[read : read + chooser.choice(STEP_BYTES)]
        read += len(block)
        until += chooser.choice(STEP_SECONDS)
        stream.add(block)
        held = stream.advance(until)
        # Fed: every whole record read so far that was captured before `until`.
        whole = bisect.bisect_right(ends, read)
        fed = min(whole, bisect.bisect_left(times, until))
        assert outcome.engine.stats.packets == fed
        assert held == (times[fed] if fed < whole else None)
        header = 24 if read >= 24 else 0  # the file header, once whole, is read
        assert stream.held_bytes == read - (ends[fed - 1] if fed else header)
        assert not outcome.ticks or outcome.ticks[-1] < until
    stream.end()
    outcome.engine.finish()
    assert_same(outcome, packet_by_packet(path, tmp_path / "packets"))
    assert sum(records for records, _ in runs) > 0.5 * len(times)  # the runs were used,
    assert sum(held for _, held in runs) > 10  # and stopped inside, at a record not yet due


def test_a_stream_with_nothing_due_looks_at_no_record_again(tmp_path: Path) -> None:
    path = bench_capture(tmp_path / "calls.pcap", 2, 0.5)
    outcome = watched(tmp_path / "spool")
    stream = PcapStream(outcome.engine)
    stream.add(path.read_bytes())
    first = stream.advance(traffic.START)  # the file's first record is at START or later
    assert first is not None and outcome.engine.stats.packets == 0
    stream.records = None  # were a record looked at again, this would fail
    assert stream.advance(first) == first
