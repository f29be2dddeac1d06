"""What the TAPI tests share: bridges configured against the reference simulator (started
by the `bridge_sim` fixture of conftest.py), a ShoreTel directory, and RTP of a ShoreTel
phone written to a capture file."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from django.core.management import call_command

from extensions.models import Agent, Extension, Phone
from extensions.services import assign_line
from integrations.shoretel.bridge.simulator import PHONE_A, BridgeSimulator
from integrations.shoretel.models import TapiBridge, TapiBridgeState
from qms.demo.capture import tune
from recorder.capture.synthesis import rtp, udp, write_pcap

TOKEN = "test-token-4f1c9e"
# The scenarios' start: a fixed moment, so RTP can be written to meet the calls.
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
FAR_END = "10.30.0.9"


def bridge_for(simulator: BridgeSimulator, name: str = "hq", **fields: object) -> TapiBridge:
    return TapiBridge.objects.create(name=name, url=simulator.url, token=TOKEN, **fields)


def state(bridge: TapiBridge) -> TapiBridgeState:
    return TapiBridgeState.objects.get(bridge=bridge)


def gus_at_phone_a() -> Phone:
    """The directory: Gus's extension 9007 is line 1 of ShoreTel phone A (no static IP:
    where the phone is comes from TAPI)."""
    phone = Phone.objects.create(device_name=PHONE_A.device, protocol="tapi")
    assign_line(phone, 1, "9007")
    Extension.objects.filter(number="9007").update(agent=Agent.objects.create(name="Gus"))
    return phone


def rtp_talk(phone_ip: str, start: float, seconds: float) -> list[tuple[float, bytes]]:
    """Both directions of a ShoreTel call's RTP (UDP 5004, 20 ms µ-law) from `start`."""
    packets = round(seconds / 0.02)
    phone_audio, far_audio = tune([440.0], seconds), tune([330.0], seconds)
    frames = []
    for index in range(packets):
        at, part = start + index * 0.02, slice(index * 160, (index + 1) * 160)
        to_far = rtp(index, index * 160, 0x51, phone_audio[part])
        to_phone = rtp(index, index * 160, 0x52, far_audio[part])
        frames.append((at, udp(phone_ip, 5004, FAR_END, 5004, to_far)))
        frames.append((at + 0.002, udp(FAR_END, 5004, phone_ip, 5004, to_phone)))
    return frames


def import_capture(tmp_path: Path, frames: list[tuple[float, bytes]]) -> str:
    capture = tmp_path / f"shoretel-{len(list(tmp_path.iterdir()))}.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    output = io.StringIO()
    call_command("import_pcap", str(capture), stdout=output)
    return output.getvalue()
