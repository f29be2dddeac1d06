"""Whatever arrives on the wire, the capture loop goes on: the engine never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.engine.engine import Engine
from tests.packets import ethernet, tcp4, udp4, vlan

from .test_engine import Collected

LINKTYPES = st.sampled_from([0, 1, 12, 101, 113, 228, 229, 276, 147])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linktype=LINKTYPES, frames=st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_frames_never_stop_the_engine(linktype: int, frames: list[bytes]) -> None:
    engine = Engine(Collected())
    for index, frame in enumerate(frames):
        engine.feed(float(index), linktype, frame)
    engine.finish()
    assert engine.stats.packets == len(frames)


def well_formed_frames() -> st.SearchStrategy[bytes]:
    payloads = st.binary(max_size=400)
    ports = st.sampled_from([2000, 5060, 5061, 4789, 16384, 40000])
    udp = st.builds(
        lambda p, s, d: ethernet(udp4("10.0.0.1", s, "10.0.0.2", d, p)), payloads, ports, ports
    )
    tcp = st.builds(
        lambda p, s, d, q, f: ethernet(tcp4("10.0.0.1", s, "10.0.0.2", d, q, p, flags=f)),
        payloads,
        ports,
        ports,
        st.integers(0, 2**32 - 1),
        st.integers(0, 63),
    )
    tagged = st.builds(lambda p: vlan(udp4("10.0.0.1", 1, "10.0.0.2", 5060, p), 7), payloads)
    return st.one_of(udp, tcp, tagged)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(well_formed_frames(), max_size=30), cut=st.integers(0, 80))
def test_well_formed_packets_with_garbage_inside_never_stop_it(
    frames: list[bytes], cut: int
) -> None:
    engine = Engine(Collected())
    for index, frame in enumerate(frames):
        engine.feed(float(index), 1, frame)
        engine.feed(float(index), 1, frame[: len(frame) - cut])
    engine.tick(10_000.0)
    engine.finish()
    assert engine.stats.packets == 2 * len(frames)
