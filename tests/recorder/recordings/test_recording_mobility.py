"""Extension mobility in the archive: a hot-desk phone used by John one day and by Mary
the next gives John's recording and Mary's, each as the directory stood that day."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command

from extensions.models import Agent, Extension, Phone
from extensions.services import apply_binding, assign_line
from integrations.observations import BindingSeen, BindingSource
from recorder.capture.synthesis import rtp, sdp, sip, udp, write_pcap
from recorder.models import Recording

HOT_DESK = "10.50.0.31"
GATEWAY = "10.50.9.1"
DAY_ONE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()
DAY_TWO = datetime(2026, 11, 3, 9, 0, tzinfo=UTC).timestamp()


def outbound_call(call_id: str, number: str, start: float) -> list[tuple[float, bytes]]:
    """A one-second call from whoever is at the hot desk to the gateway."""
    via = [f"Via: SIP/2.0/UDP {HOT_DESK}:5060;branch=z9hG4bK{call_id}"]
    ends = [f"From: <sip:{number}@pbx>;tag=a", "To: <sip:+15550100@pbx>", f"Call-ID: {call_id}"]
    answered = [*ends[:1], "To: <sip:+15550100@pbx>;tag=b", ends[2]]
    invite = sip(f"INVITE sip:+15550100@{GATEWAY} SIP/2.0",
                 via + ends + ["CSeq: 1 INVITE", f"Contact: <sip:{number}@{HOT_DESK}>"],
                 sdp(HOT_DESK, 16384))  # fmt: skip
    ok = sip("SIP/2.0 200 OK", via + answered + ["CSeq: 1 INVITE"], sdp(GATEWAY, 30000))
    bye = sip(f"BYE sip:+15550100@{GATEWAY} SIP/2.0", via + answered + ["CSeq: 2 BYE"])
    frames = [(start, udp(HOT_DESK, 5060, GATEWAY, 5060, invite)),
              (start + 0.01, udp(GATEWAY, 5060, HOT_DESK, 5060, ok))]  # fmt: skip
    for tick in range(50):
        voice = rtp(tick, tick * 160, 0x7, b"\x00\x7f" * 80)
        frames.append((start + 0.1 + tick * 0.02, udp(HOT_DESK, 16384, GATEWAY, 30000, voice)))
        frames.append((start + 0.1 + tick * 0.02, udp(GATEWAY, 30000, HOT_DESK, 16384, voice)))
    frames.append((start + 1.2, udp(HOT_DESK, 5060, GATEWAY, 5060, bye)))
    return frames


def logs_in(number: str, at: float) -> None:
    """The hot desk registers the extension of whoever logged into it (R5)."""
    apply_binding(
        BindingSeen(number, HOT_DESK, BindingSource.SIP_REGISTER,
                    datetime.fromtimestamp(at, UTC), expires_in=3600)
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_one_phone_two_days_two_agents(tmp_path: Path) -> None:
    for person, number, device in (("John", "9001", "SEP-JOHN"), ("Mary", "9002", "SEP-MARY")):
        assign_line(Phone.objects.create(device_name=device, protocol="sip"), 1, number)
        Extension.objects.filter(number=number).update(agent=Agent.objects.create(name=person))
    Phone.objects.create(device_name="hot-desk", protocol="sip", current_ip=HOT_DESK)
    logs_in("9001", DAY_ONE - 60)
    logs_in("9002", DAY_TWO - 60)
    capture = tmp_path / "two-days.pcap"
    write_pcap(
        capture,
        outbound_call("monday", "9001", DAY_ONE) + outbound_call("tuesday", "9002", DAY_TWO),
    )
    call_command("import_pcap", str(capture), stdout=io.StringIO())
    archive = {
        recording.call_id: (recording.agent.name, recording.extension, recording.phone.device_name)
        for recording in Recording.objects.select_related("agent", "phone")
    }
    assert archive == {
        "monday": ("John", "9001", "hot-desk"),
        "tuesday": ("Mary", "9002", "hot-desk"),
    }
