"""An interface's two rings through the capture loop (recorder/nodes/rings.py): whichever
ring's blocks arrive first, the engine takes the packets in capture-time order, so a BYE
never ends a call before the RTP it follows and RTP never comes before the answer that
announced it; what a ring holds waits no longer than the other ring's quiet, and is all
fed at the stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.observations import CallEvent
from recorder.capture.synthesis import PCAP_HEADER, pcap_record
from recorder.capture.tcpdump import MEDIA, SIGNALLING, Block
from recorder.engine.engine import Engine
from recorder.nodes import rings
from recorder.nodes.live import CaptureLoop
from tests.recorder.collected import Collected
from tests.recorder.engine.test_pcap_runs import (
    assert_same,
    packet_by_packet,
    watched,
)
from tests.recorder.nodes.blocks import BlockReplay, is_media, two_rings
from tests.recorder.nodes.test_capture_loop import a_moment_ago
from tests.recorder.nodes.test_capture_losses import call_with_media
from tests.recorder.nodes.test_live_blocks import mixed_capture, random_sizes

VOICE = bytes(160)


@pytest.fixture
def never_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ring is ever taken as quiet: only what the rings hand over orders them, and a
    test's outcome does not depend on how fast it runs."""
    monkeypatch.setattr(rings, "QUIET_SECONDS", 3600.0)


def call_frames(start: float, packets: int) -> list[tuple[float, bytes]]:
    """A SIP call from PHONE, answered, `packets` of RTP each way, then its BYE just after
    the last."""
    return [(at, frame) for at, _, frame in call_with_media(start, packets, bye_after=0.01)]


def ring_blocks(frames: list[tuple[float, bytes]], ring: str) -> list[Block]:
    """The ring's share of the frames as its pipe would carry them, one record a block."""
    mine = [(at, frame) for at, frame in frames if is_media(frame) == (ring == MEDIA)]
    blocks = [Block("eth1", PCAP_HEADER, ring)]
    return blocks + [Block("eth1", pcap_record(at, frame), ring) for at, frame in mine]


def run(blocks: list[Block | None], engine: Engine, still_held: list[Block] = ()) -> None:
    CaptureLoop(3600, lambda *_: None).run(BlockReplay(blocks, still_held), engine)


@pytest.mark.parametrize("signalling_lag", [1.0, 0.3, 0.0, -0.3, -1.0])
@pytest.mark.parametrize(("seed", "largest"), [(1, 300), (2, 70000)])
def test_two_rings_in_blocks_cut_anywhere_leave_what_packet_by_packet_leaves(
    tmp_path: Path, never_quiet: None, signalling_lag: float, seed: int, largest: int
) -> None:
    # The signalling ring's blocks a second late, as on a busy link, or a second early, as
    # when the engine is behind on the media ring.
    path = mixed_capture(tmp_path / "mixed.pcap")
    sizes = iter(random_sizes(seed, largest) * 10)
    blocks = two_rings(path.read_bytes(), sizes, signalling_lag)
    assert {block.ring for block in blocks} == {MEDIA, SIGNALLING}
    outcome = watched(tmp_path / "rings")
    run(blocks, outcome.engine)
    assert_same(outcome, packet_by_packet(path, tmp_path / "packets"))
    assert outcome.engine.stats.rtp_unmatched == outcome.engine.stats.rtp_after_end == 0


def test_a_bye_read_before_the_rtp_it_follows_is_fed_after_that_rtp(never_quiet: None) -> None:
    # The engine is behind on media: the whole signalling ring, BYE and all, arrives before
    # the RTP.
    frames = call_frames(a_moment_ago(), 50)
    sink = Collected()
    engine = Engine(sink)
    run(ring_blocks(frames, SIGNALLING) + ring_blocks(frames, MEDIA), engine)
    (ended,) = sink.snapshots(CallEvent.END)
    assert ended.end_reason == "bye"
    stats = engine.stats
    # Fed first, the BYE would have made the last RTP packets stragglers of an ended call.
    assert (stats.rtp_packets, stats.rtp_after_end, stats.rtp_unmatched) == (100, 0, 0)


def test_rtp_read_before_the_answer_that_announces_it_waits_for_it(never_quiet: None) -> None:
    # The usual order on a busy link: the media ring's blocks fill in milliseconds, the
    # signalling ring's wait out the hand-over second.
    frames = call_frames(a_moment_ago(), 50)
    engine = Engine(Collected())
    run(ring_blocks(frames, MEDIA) + ring_blocks(frames, SIGNALLING), engine)
    stats = engine.stats
    # Fed first, the RTP would have gone to an address no SDP had yet named.
    assert (stats.rtp_packets, stats.rtp_after_end, stats.rtp_unmatched) == (100, 0, 0)


class Watching(BlockReplay):
    """A replay whose silences go on until `done()` says so (or ten seconds), noting how
    long after its last block that was (`waited`, the first time: the loop's catch-up asks
    for blocks again)."""

    def __init__(self, blocks: list[Block], done, still_held: list[Block] = ()) -> None:
        super().__init__(blocks, still_held)
        self.done, self.waited = done, None

    def blocks(self) -> Iterator[Block | None]:
        yield from self.given
        given_at = time.monotonic()
        while not self.done() and time.monotonic() < given_at + 10:
            time.sleep(0.01)
            yield None
        if self.waited is None:
            self.waited = time.monotonic() - given_at


def test_signalling_held_while_media_is_silent_is_released_after_the_quiet_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rings, "QUIET_SECONDS", 0.5)
    frames = call_frames(a_moment_ago(), 0)[:2]  # an INVITE and its answer, no media yet
    engine = Engine(Collected())
    source = Watching(ring_blocks(frames, SIGNALLING), done=lambda: engine.stats.sip_messages)
    loop = CaptureLoop(3600, lambda *_: None)
    loop.run(source, engine)
    assert engine.stats.sip_messages == 2
    # Held while the media ring might still hand over RTP captured before it, no longer.
    assert 0.5 <= source.waited < 5


def test_a_ring_that_has_ended_holds_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rings, "QUIET_SECONDS", 3600.0)
    frames = call_frames(a_moment_ago(), 0)[:2]
    engine = Engine(Collected())
    ended = [Block("eth1", b"", MEDIA)]  # the user's filter left the media ring nothing
    source = Watching(ended + ring_blocks(frames, SIGNALLING), lambda: engine.stats.sip_messages)
    CaptureLoop(3600, lambda *_: None).run(source, engine)
    assert engine.stats.sip_messages == 2 and source.waited < 1


def test_everything_held_is_fed_at_the_stop(tmp_path: Path, never_quiet: None) -> None:
    # The media ring hands over the whole call; the signalling ring says nothing until the
    # stop, so the loop holds it all, and feeds it, in order, at the end.
    frames = call_frames(a_moment_ago(), 50)
    path = tmp_path / "call.pcap"
    path.write_bytes(PCAP_HEADER + b"".join(pcap_record(at, frame) for at, frame in frames))
    outcome = watched(tmp_path / "rings")
    fed_before_the_stop = []

    class Stopping(BlockReplay):
        def stop(self) -> None:
            fed_before_the_stop.append(outcome.engine.stats.packets)
            super().stop()

    source = Stopping(ring_blocks(frames, MEDIA), ring_blocks(frames, SIGNALLING))
    CaptureLoop(3600, lambda *_: None).run(source, outcome.engine)
    assert fed_before_the_stop == [0]
    assert_same(outcome, packet_by_packet(path, tmp_path / "packets"))
    assert outcome.engine.stats.rtp_packets == 100


def test_a_ring_held_past_its_bound_is_fed_out_of_order_and_said(
    monkeypatch: pytest.MonkeyPatch, never_quiet: None, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rings, "HELD_BYTES", 4000)
    frames = call_frames(a_moment_ago(), 50)
    engine = Engine(Collected())
    fed_before_the_stop = []

    class Stopping(BlockReplay):
        def stop(self) -> None:
            fed_before_the_stop.append(engine.stats.packets)
            super().stop()

    source = Stopping(ring_blocks(frames, MEDIA), ring_blocks(frames, SIGNALLING))
    with caplog.at_level(logging.WARNING, "qms.capture"):
        CaptureLoop(3600, lambda *_: None).run(source, engine)
    assert 0 < fed_before_the_stop[0] < 100
    assert [record.message for record in caplog.records].count(
        "eth1: the media ring holds more than 0 MiB waiting for the other; its oldest packets "
        "go to the engine out of order"
    ) == 1


def test_a_quiet_ring_still_holds_back_the_other_at_what_it_holds() -> None:
    """The engine far behind: the answer waits in the signalling ring for media to come as
    far; then the signalling ring falls quiet (nothing more to say until the BYE). Its
    quiet says nothing was captured since that it has not handed over, but the answer it
    holds is still before the RTP that follows it: media is fed up to the answer, not up
    to the wall clock less the quiet time."""
    start = a_moment_ago()
    frames = call_frames(start, 50)
    engine = Engine(Collected())
    merged = rings.InterfaceRings(engine, "eth1", now=0.0)
    setup = [block for block in ring_blocks(frames, SIGNALLING) if b"BYE" not in block.data]
    for block in setup:
        merged.add(SIGNALLING, block.data, now=0.0)
    merged.add(MEDIA, PCAP_HEADER, now=0.0)
    merged.release(now=0.0, wall=start + 60)  # media has come nowhere yet: all held
    assert engine.stats.sip_messages == 0
    later = rings.QUIET_SECONDS + 1.0  # the signalling ring has been quiet since
    for block in ring_blocks(frames, MEDIA)[1:]:
        merged.add(MEDIA, block.data, now=later)
        merged.release(now=later, wall=start + 60)
    merged.end()
    stats = engine.stats
    assert (stats.rtp_packets, stats.rtp_unmatched) == (100, 0)


def test_what_one_read_of_every_pipe_brings_is_merged_together() -> None:
    """One read of the source may bring a block of each ring: the loop merges them only
    once it has both. The engine kept the loop busy for longer than the quiet time since
    it last read either pipe: that is the process's silence, not the rings'."""
    start = a_moment_ago()
    frames = call_frames(start, 50)
    media, signalling = ring_blocks(frames, MEDIA), ring_blocks(frames, SIGNALLING)
    engine = Engine(Collected())
    loop = CaptureLoop(3600, lambda *_: None)
    loop.feed(engine, signalling[0])  # the pipes' pcap headers, read long ago
    loop.feed(engine, media[0])
    for ring in loop.rings["eth1"].rings.values():
        ring.heard_at -= rings.QUIET_SECONDS + 1.0

    def joined(blocks: list[Block], more: bool) -> Block:
        return Block("eth1", b"".join(block.data for block in blocks), blocks[0].ring, more)

    # The round of reads that ends the busy spell: the media pipe's block first.
    loop.feed(engine, joined(media[1:], more=True))
    loop.feed(engine, joined(signalling[1:], more=False))
    loop.end_streams()
    stats = engine.stats
    assert (stats.rtp_packets, stats.rtp_unmatched) == (100, 0)
