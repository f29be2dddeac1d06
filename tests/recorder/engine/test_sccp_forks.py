"""SCCP recording forks are not calls (issue 14, item 3).

CallManager's built-in-bridge recording (and silent monitoring) has the phone send a copy of
its streams to the recorder: StartMediaTransmission under a call reference of its own, for
which no CallState comes. QMS made a call of each fork, a second, one-way recording of the
same voices; now a fork of an answered call is counted and let be, and the call itself is
one complete recording. Written as Skinny over TCP and RTP over UDP, through `import_pcap`
into PostgreSQL.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from recorder.capture.synthesis import rtp, udp, write_pcap
from recorder.models import Call, Recording
from tests.integrations.sccp_build import start_media_transmission
from tests.recorder.engine.test_sccp_conversations import START, Station

PHONE_IP, PHONE_RTP = "10.75.0.11", 24000
FAR = ("10.75.9.1", 31400)
RECORDER = ("10.75.9.50", 40000)  # where CallManager has the phone send the forks
CALL_REF, NEAR_FORK_REF, FAR_FORK_REF = 501, 90501, 90502


def forked_call(frames: list, with_forks: bool = True) -> Station:
    """9001 answers a call; two seconds of RTP both ways; with `with_forks`, half a second
    in, CallManager starts the two recording forks and the phone sends a copy of each
    voice to the recorder; the call ends on-hook."""
    station = Station(frames, "SEP000000007511", PHONE_IP, 51075, "9001")
    station.inbound(1.0, CALL_REF, "+16175550101")
    station.media(1.6, CALL_REF, PHONE_RTP, FAR)
    station.talk(1.7, 2.0, PHONE_RTP, FAR)
    if with_forks:
        near = start_media_transmission(NEAR_FORK_REF, 7001, *RECORDER)
        far = start_media_transmission(FAR_FORK_REF, 7002, RECORDER[0], RECORDER[1] + 2)
        station.cm(2.2, near, far)
        for tick in range(50):
            at = START + 2.3 + 0.02 * tick
            copy = rtp(tick, tick * 160, 0x5555, b"\x7f" * 160)
            frames.append((at, udp(PHONE_IP, 24100, *RECORDER, copy)))
            frames.append((at, udp(PHONE_IP, 24102, RECORDER[0], RECORDER[1] + 2, copy)))
    station.states(4.0, CALL_REF, 2)  # on-hook
    return station


@pytest.fixture
def spooled(postgresql: None, settings, tmp_path: Path) -> None:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"


def import_frames(tmp_path: Path, frames: list) -> list[str]:
    capture = tmp_path / "sccp-forks.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    out = io.StringIO()
    call_command("import_pcap", str(capture), stdout=out)
    return out.getvalue().splitlines()


def test_recording_forks_of_an_answered_call_are_not_calls_of_their_own(
    spooled: None, tmp_path: Path
) -> None:
    frames: list = []
    forked_call(frames)
    lines = import_frames(tmp_path, frames)

    calls = list(Call.objects.values_list("call_id", "end_reason"))
    assert calls == [(f"sccp:SEP000000007511:{CALL_REF}", "onhook")], calls
    (recording,) = Recording.objects.all()
    assert recording.status == Recording.Status.COMPLETE
    assert recording.duration_seconds == pytest.approx(2.0, abs=0.1)
    assert "signalling understood and not followed (counted): sccp media-fork 2" in lines
    assert "RTP copies to a recorder, SCCP recording forks (counted): 100" in lines
    assert "RTP packets: 200 matched to calls, 0 unmatched" in lines


def test_media_under_a_new_reference_with_no_answered_call_is_still_a_call(
    spooled: None, tmp_path: Path
) -> None:
    """The capture started mid-call: the first thing seen of a call is its media. With no
    answered call on the phone to be a fork of, that media is the call."""
    frames: list = []
    station = Station(frames, "SEP000000007512", PHONE_IP, 51076, "9001")
    station.media(1.0, 777, PHONE_RTP, FAR)
    station.talk(1.1, 1.0, PHONE_RTP, FAR)
    import_frames(tmp_path, frames)
    assert list(Call.objects.values_list("call_id", flat=True)) == ["sccp:SEP000000007512:777"]
