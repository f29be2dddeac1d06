"""The live capture loop on a finite in-memory source: no interface, no database."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Iterator
from itertools import repeat

import pytest

from integrations.observations import CallEvent
from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.sources import Packet
from recorder.capture.synthesis import sdp, sip, udp
from recorder.engine.engine import Engine
from recorder.nodes.live import CaptureLoop, LiveSource
from tests.recorder.collected import Collected
from tests.recorder.nodes.blocks import BlockReplay, PacketBlocks

PHONE, GATEWAY = "10.20.0.5", "10.20.0.1"
CALL_ID = "loop-1"


def dialog(step: str, at: float) -> Packet:
    """One message of a SIP call from 9001 at PHONE to +15550100 (RFC 3261 §13, §15)."""
    via = [f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK{CALL_ID}"]
    offered = ["From: <sip:9001@pbx>;tag=a", "To: <sip:+15550100@pbx>", f"Call-ID: {CALL_ID}"]
    answered = [offered[0], "To: <sip:+15550100@pbx>;tag=b", offered[2]]
    if step == "invite":
        headers = via + offered + ["CSeq: 1 INVITE", f"Contact: <sip:9001@{PHONE}>"]
        message = sip(f"INVITE sip:+15550100@{GATEWAY} SIP/2.0", headers, sdp(PHONE, 20000))
        return at, LINKTYPE_ETHERNET, udp(PHONE, 5060, GATEWAY, 5060, message)
    if step == "ok":
        message = sip("SIP/2.0 200 OK", via + answered + ["CSeq: 1 INVITE"], sdp(GATEWAY, 30000))
        return at, LINKTYPE_ETHERNET, udp(GATEWAY, 5060, PHONE, 5060, message)
    message = sip(f"BYE sip:+15550100@{GATEWAY} SIP/2.0", via + answered + ["CSeq: 2 BYE"])
    return at, LINKTYPE_ETHERNET, udp(PHONE, 5060, GATEWAY, 5060, message)


def a_moment_ago() -> float:
    """Where the test's call starts: a live source stamps packets with the wall clock, which
    the loop's ticks follow, and a stop drains only what was captured before it."""
    return time.time() - 10


class Replay(BlockReplay):
    """A live source that hands over `packets` (None for a silence) one record per block,
    then, once stopped, `still_queued`: what tcpdump still holds at a stop."""

    def __init__(
        self, packets: Iterable[Packet | None], still_queued: Iterable[Packet] = ()
    ) -> None:
        # Generators both: the pipe's header goes with whichever block is taken first.
        pipe = PacketBlocks()
        blocks = (pipe.block(packet[0], packet[2]) if packet else None for packet in packets)
        held = (pipe.block(packet[0], packet[2]) for packet in still_queued)
        super().__init__(blocks, held)


class TickCounting(Engine):
    """The real engine, counting the ticks the loop gives it."""

    def __init__(self, sink: Collected) -> None:
        super().__init__(sink)
        self.ticks = 0

    def tick(self, now: float) -> None:
        self.ticks += 1
        super().tick(now)


class StatsSeen:
    """An on_stats hook that remembers the rates, and stops the loop after `stop_after`."""

    def __init__(self, stop_after: int = 0) -> None:
        self.rates: list[float] = []
        self.stop_after = stop_after
        self.loop: CaptureLoop | None = None

    def __call__(self, capture: LiveSource, engine: Engine, rate: float) -> None:
        self.rates.append(rate)
        if self.loop is not None and len(self.rates) == self.stop_after:
            self.loop.stop()


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


def test_packets_reach_the_engine_and_a_silence_ticks_it() -> None:
    start = a_moment_ago()
    sink = Collected()
    engine = TickCounting(sink)
    capture = Replay([dialog("invite", start), None, None, dialog("ok", start + 0.5)])
    CaptureLoop(60, StatsSeen()).run(capture, engine)
    assert engine.stats.packets == 2
    assert engine.ticks >= 2  # one per silence, besides any the capture clock asks for
    assert sink.events_of(CALL_ID)[:2] == [CallEvent.START, CallEvent.ANSWER]


def test_a_stopped_loop_still_feeds_what_was_captured_before_the_stop() -> None:
    start = a_moment_ago()
    sink = Collected()
    capture = Replay(
        [dialog("invite", start), dialog("ok", start + 0.5)],
        still_queued=[dialog("bye", start + 2)],
    )
    CaptureLoop(60, StatsSeen()).run(capture, Engine(sink))
    assert capture.stopped
    assert sink.events_of(CALL_ID) == [CallEvent.START, CallEvent.ANSWER, CallEvent.END]
    assert sink.calls[-1].end_reason == "bye"


def test_the_calls_still_live_when_the_loop_ends_are_ended_as_capture_ended() -> None:
    start = a_moment_ago()
    sink = Collected()
    capture = Replay([dialog("invite", start), dialog("ok", start + 0.5)])
    CaptureLoop(60, StatsSeen()).run(capture, Engine(sink))
    assert sink.events_of(CALL_ID)[-1] == CallEvent.END
    assert sink.calls[-1].end_reason == "capture-ended"


def test_the_stop_flag_ends_a_source_that_never_ends() -> None:
    stats = StatsSeen(stop_after=3)
    loop = CaptureLoop(0, stats)
    stats.loop = loop
    capture = Replay(repeat(None))
    loop.run(capture, Engine(Collected()))
    assert len(stats.rates) == 3
    assert capture.stopped


def test_every_stats_period_hands_the_hook_the_packet_rate() -> None:
    start = a_moment_ago()
    stats = StatsSeen()
    capture = Replay([dialog("invite", start), None, dialog("ok", start + 0.5)])
    CaptureLoop(0, stats).run(capture, Engine(Collected()))
    assert len(stats.rates) == 3
    assert all(rate >= 0 for rate in stats.rates)


def test_sigterm_stops_the_loop_cleanly(own_signal_handlers: None) -> None:
    loop = CaptureLoop(0, lambda capture, engine, rate: os.kill(os.getpid(), signal.SIGTERM))
    loop.handle_signals()
    capture = Replay(repeat(None))
    loop.run(capture, Engine(Collected()))
    assert loop.stopping.is_set()
    assert capture.stopped


def test_a_loop_whose_parent_is_gone_stops_at_its_next_statistics() -> None:
    not_our_parent = os.getpid()
    loop = CaptureLoop(0, StatsSeen(), parent_pid=not_our_parent)
    loop.run(Replay(repeat(None)), Engine(Collected()))
    assert loop.stopping.is_set()


def test_a_loop_whose_parent_lives_runs_until_its_source_ends() -> None:
    stats = StatsSeen()
    loop = CaptureLoop(0, stats, parent_pid=os.getppid())
    loop.run(Replay([None] * 5), Engine(Collected()))
    assert len(stats.rates) == 5
    assert not loop.stopping.is_set()


def test_a_duration_ends_the_loop_by_itself() -> None:
    loop = CaptureLoop(60, StatsSeen(), duration=0.05)
    capture = Replay(repeat(None))
    loop.run(capture, Engine(Collected()))
    assert capture.stopped
