"""A ShoreTel-style phone: no signalling QMS can read, RTP only. Its calls are still
recorded, and attributed by the phone's address."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from extensions.models import Agent, Extension, Phone
from extensions.services import assign_line
from integrations.observations import UNSIGNALLED_CALL_PREFIX, CallProtocol
from qms.demo.capture import tune
from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.synthesis import rtp, udp, write_pcap
from recorder.engine.engine import Engine
from recorder.engine.sink import NullSink
from recorder.models import Recording


@pytest.mark.django_db(transaction=True)
def test_rtp_of_a_static_ip_phone_is_recorded_and_attributed(tmp_path: Path) -> None:
    phone = Phone.objects.create(
        device_name="tapi-lobby", protocol="tapi", static_ip=True, configured_ip="10.20.0.50"
    )
    assign_line(phone, 1, "9007")
    Extension.objects.filter(number="9007").update(agent=Agent.objects.create(name="Gus"))
    phone_audio, far_audio = tune([440.0], 2.0), tune([330.0], 2.0)
    frames = []
    for index in range(100):
        at, part = 1_700_000_000.0 + index * 0.02, slice(index * 160, (index + 1) * 160)
        to_far = rtp(index, index * 160, 0x51, phone_audio[part])
        to_phone = rtp(index, index * 160, 0x52, far_audio[part])
        frames.append((at, udp("10.20.0.50", 5004, "10.30.0.9", 5004, to_far)))
        frames.append((at + 0.002, udp("10.30.0.9", 5004, "10.20.0.50", 5004, to_phone)))
    capture = tmp_path / "shoretel.pcap"
    write_pcap(capture, frames)
    output = io.StringIO()
    call_command("import_pcap", str(capture), stdout=output)
    assert "calls seen: 1 (1 unsignalled)" in output.getvalue()
    recording = Recording.objects.select_related("agent").get()
    # The file ends with the call's RTP, before its silence could end it: cut by the end
    # of the capture, so partial, as a node says.
    assert (recording.agent.name, recording.extension, recording.status) == (
        "Gus",
        "9007",
        "partial",
    )
    assert recording.status_detail == "the capture stopped during the call"
    assert recording.codec == "PCMU"
    assert recording.duration_seconds == pytest.approx(2.0, abs=0.05)
    call = recording.signalling
    assert call.protocol == CallProtocol.RTP
    assert call.call_id.startswith(UNSIGNALLED_CALL_PREFIX)
    call.clean_fields()  # the protocol, state and direction written are Call's choices
    assert recording.quality["agent_to_far"]["received"] == 100
    assert recording.quality["far_to_agent"]["received"] == 100


def test_a_running_engine_records_a_phone_the_directory_learned_after_it_started() -> None:
    """A ShoreTel phone bound by the TAPI poller while a sniffer runs: once the sniffer's
    directory refresh hands its address over, its RTP is an unsignalled call."""
    engine = Engine(NullSink(), set(), record_unsignalled=True)

    def talk(start: float) -> None:
        for index in range(30):  # more than the packets that make a stream plausible
            packet = rtp(index, index * 160, 0x61, b"\xff" * 160)
            frame = udp("10.20.0.60", 5004, "10.30.0.9", 5004, packet)  # an Ethernet frame
            engine.feed(start + index * 0.02, LINKTYPE_ETHERNET, frame)

    talk(1_700_000_000.0)
    assert engine.stats.unsignalled_calls == 0
    assert engine.stats.rtp_unmatched == 30
    engine.adopt_directory({"10.20.0.60"}, {"9009"})
    talk(1_700_000_001.0)
    assert engine.stats.unsignalled_calls == 1
    assert engine.do_not_record == {"9009"}
