"""Losses are loud: packets the capture's kernel ring dropped mark the calls live when the
drop was read, and their recordings say so, so a supervisor can tell a capture loss from a
network loss."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.observations import CallEvent
from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.synthesis import rtp, udp
from recorder.capture.tcpdump import Block, InterfaceStats, RingStats
from recorder.engine.engine import Engine
from recorder.nodes import live
from recorder.nodes.live import CaptureLoop
from recorder.nodes.summary import interface_line
from tests.recorder.collected import Collected
from tests.recorder.nodes.blocks import PacketBlocks
from tests.recorder.nodes.test_capture_loop import CALL_ID, GATEWAY, PHONE, a_moment_ago, dialog

VOICE = bytes(160)


class DroppingReplay:
    """A live source of one interface whose kernel ring drops `dropped` packets at block
    `drop_at` (as tcpdump would next report them), and `dropped_at_stop` more by its end."""

    def __init__(self, packets: list, drop_at: int, dropped: int, dropped_at_stop: int = 0) -> None:
        self.packets, self.drop_at, self.dropped = packets, drop_at, dropped
        self.dropped_at_stop = dropped_at_stop
        self.counters = InterfaceStats("eth1")
        self.stopped = False

    def blocks(self) -> Iterator[Block | None]:
        pipe = PacketBlocks("eth1")
        for index, packet in enumerate(self.packets):
            if index == self.drop_at:
                self.counters.dropped += self.dropped
            yield pipe.block(packet[0], packet[2])

    def stop(self) -> None:
        self.stopped = True

    def rest(self) -> list[Block]:
        self.counters.dropped += self.dropped_at_stop
        return []

    def close(self) -> None:
        pass

    def request_stats(self) -> None:
        pass

    def stats(self) -> list[InterfaceStats]:
        return [self.counters]


def call_with_media(start: float, packets: int, bye_after: float = 0.12) -> list:
    """The loop test's SIP call from PHONE, answered, with `packets` of RTP each way, and
    its BYE `bye_after` seconds after the last of them."""
    frames = [dialog("invite", start), dialog("ok", start + 0.1)]
    for index in range(packets):
        at = start + 0.2 + index * 0.02
        payload = rtp(index, index * 160, 7, VOICE)
        frames.append((at, LINKTYPE_ETHERNET, udp(PHONE, 20000, GATEWAY, 30000, payload)))
        frames.append((at, LINKTYPE_ETHERNET, udp(GATEWAY, 30000, PHONE, 20000, payload)))
    frames.append(dialog("bye", start + 0.2 + (packets - 1) * 0.02 + bye_after))
    return frames


@pytest.fixture
def drops_read_at_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "DROPS_EVERY", 0.0)


def ended(sink: Collected) -> dict:
    return {s.call_id: s for s in sink.snapshots(CallEvent.END)}


def test_a_drop_read_while_a_call_is_live_marks_that_call(drops_read_at_every_block) -> None:
    start = a_moment_ago()
    frames = call_with_media(start, 50)
    sink = Collected()
    engine = Engine(sink)
    CaptureLoop(3600, lambda *_: None).run(DroppingReplay(frames, 40, 123), engine)
    assert ended(sink)[CALL_ID].capture_dropped == 123
    assert engine.stats.capture_dropped == 123


def test_a_call_that_ended_before_the_drop_is_not_marked(drops_read_at_every_block) -> None:
    start = a_moment_ago()
    frames = call_with_media(start, 20)
    sink = Collected()
    engine = Engine(sink)
    # The drop comes after the BYE (the last frame), read at the stop's last counters.
    CaptureLoop(3600, lambda *_: None).run(DroppingReplay(frames, len(frames), 0, 9), engine)
    assert ended(sink)[CALL_ID].capture_dropped == 0
    assert engine.stats.capture_dropped == 9


def test_the_recording_of_a_call_the_capture_dropped_packets_of_says_so(
    postgresql: None, drops_read_at_every_block, tmp_path: Path
) -> None:
    from recorder.models import Recording
    from recorder.sinks.database import DatabaseSink, recording_options

    start = a_moment_ago()
    frames = call_with_media(start, 50)
    sink = DatabaseSink(node="losses")
    engine = Engine(sink, **recording_options({}))
    try:
        CaptureLoop(3600, lambda *_: None).run(DroppingReplay(frames, 40, 1234), engine)
    finally:
        sink.close()
    recording = Recording.objects.get()
    assert recording.status == Recording.Status.COMPLETE
    assert recording.signalling.capture_dropped == 1234
    assert recording.status_detail == (
        "the capture dropped 1,234 packets while this call was live: gaps may be the "
        "recorder's, not the network's"
    )


def test_a_call_recorded_with_no_capture_loss_says_nothing_of_one(
    postgresql: None, drops_read_at_every_block
) -> None:
    from recorder.models import Recording
    from recorder.sinks.database import DatabaseSink, recording_options

    sink = DatabaseSink(node="losses")
    engine = Engine(sink, **recording_options({}))
    try:
        frames = call_with_media(a_moment_ago(), 50)
        CaptureLoop(3600, lambda *_: None).run(DroppingReplay(frames, 0, 0), engine)
    finally:
        sink.close()
    recording = Recording.objects.get()
    assert (recording.status, recording.status_detail) == (Recording.Status.COMPLETE, "")
    assert recording.signalling.capture_dropped == 0


def test_an_interfaces_losses_are_its_two_rings_with_the_signalling_ones_said_apart() -> None:
    # Both tcpdumps report the interface's own drop counter (libpcap reads it from
    # /proc/net/dev): it is counted once.
    media, signalling = RingStats(9000, 40, 3), RingStats(600, 2, 3)
    found = InterfaceStats.of_rings("eth1", media, signalling)
    assert (found.received, found.dropped, found.signalling_dropped) == (9600, 42, 2)
    assert (found.interface_dropped, found.lost) == (3, 45)
    assert interface_line(found) == (
        "eth1: 9600 received by the kernel, 42 dropped by the kernel (2 of them signalling), "
        "3 dropped by the interface"
    )
