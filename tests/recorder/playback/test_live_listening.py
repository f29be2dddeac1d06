"""Listening to a call in progress (issue 17, section 1), with a capture node's relay thread
for real: a Redis of the test's own between it and the pages, the call's log written as the
capture writes it in a spool folder that only the node reads, and the pages through
Django's client on PostgreSQL. Who may listen, what they hear, and the audit trail of each
listen's start and end, however it ends."""

from __future__ import annotations

import io
import itertools
import time
import wave
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.utils import timezone

from integrations.observations import Side
from recorder.media.rtplog import RtpLog, log_name
from recorder.models import AuditEntry, Call, LiveListen
from recorder.nodes.live_audio import LiveAudioRelay
from recorder.nodes.models import CaptureInterface
from recorder.playback.live import end_lapsed_listens
from tests.recorder.media.rtp_build import FRAME, PCMA, rtp
from tests.recorder.media.test_live_decoder import pcm_of, voice
from tests.recorder.playback.support import PlaybackWorld, build_world
from tests.recorder.playback.test_access import pages_as

pytestmark = pytest.mark.django_db(transaction=True)  # the relay's thread reads the calls

NODE = "site-a"
PACKETS_A_SECOND = 50


@pytest.fixture
def world() -> PlaybackWorld:
    world = build_world()
    world.supervisor_a.user_permissions.add(Permission.objects.get(codename="listen_live"))
    return world


class LiveCall:
    """John on 9001 talking to an outside caller, his phone's packets logged by node site-a."""

    def __init__(self, spool_root: Path, world: PlaybackWorld, node: str = NODE) -> None:
        started = timezone.now() - timedelta(seconds=30)
        self.row = Call.objects.create(
            protocol="sip", call_id="live-call-1@pbx", started_at=started, answered_at=started,
            state=Call.State.CONNECTED, direction="inbound", caller="+15551230001",
            callee="9001", callee_ip="10.0.0.41", caller_ip="10.9.9.9", extension="9001",
            agent=world.john, node=node,
            media=[
                {"side": "caller", "ip": "10.9.9.9", "port": 4000,
                 "payload_types": [[PCMA, "PCMA/8000"]]},
                {"side": "callee", "ip": "10.0.0.41", "port": 5000,
                 "payload_types": [[PCMA, "PCMA/8000"]]},
            ],
        )  # fmt: skip
        if node:
            # The node's worker captures: its interface heartbeats (recorder/nodes/node.py).
            CaptureInterface.objects.get_or_create(
                node=node, interface="eth1",
                defaults={"running": True, "heartbeat_at": timezone.now()},
            )  # fmt: skip
        folder = spool_root / "eth1"
        folder.mkdir(parents=True)
        start = started.timestamp()
        self.path = folder / log_name(self.row.call_id, start)
        manifest = {"call_id": self.row.call_id, "protocol": "sip", "started_at": start}
        self.log = RtpLog(self.path, manifest)
        self.start, self.sent = start, 0
        # John (the callee) is the agent: what the caller receives is his voice.
        self.john, self.caller = voice(1, 3000), voice(2, 3000)

    def talk(self, seconds: float) -> None:
        for index in range(self.sent, self.sent + int(seconds * PACKETS_A_SECOND)):
            at = self.start + index * 0.02
            self.log.append(at, Side.CALLER, rtp(index, index * FRAME, self.john[index]))
            packet = rtp(index, index * FRAME, self.caller[index], ssrc=9)
            self.log.append(at, Side.CALLEE, packet)
        self.sent += int(seconds * PACKETS_A_SECOND)
        self.log.flush()

    def end(self) -> None:
        """The call hangs up and is finished: its row ended, its log gone."""
        Call.objects.filter(pk=self.row.pk).update(
            ended_at=timezone.now(), state=Call.State.ENDED, end_reason="bye"
        )
        self.path.unlink()


@pytest.fixture
def relay(redis_server, tmp_path: Path) -> Iterator[tuple[LiveAudioRelay, Path]]:
    spool_root = tmp_path / "node-spool"
    client = redis.Redis.from_url(redis_server.url)
    node = LiveAudioRelay(NODE, client, spool_root, capturing=lambda: True)
    with override_settings(QMS_LIVE_AUDIO_URL=redis_server.url):
        node.start()
        try:
            yield node, spool_root
        finally:
            node.stop()


def start_listening(client, call: Call) -> dict:
    response = client.post(f"/calls/{call.pk}/listen/start")
    assert response.status_code == 201, response.content
    return response.json()


def segments(client, listen: dict, seconds: float) -> Iterator:
    """The page's loop: ask, then ask from where the answer says, for `seconds`."""
    after, deadline = "", time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get(listen["segments"], {"after": after})
        assert response.status_code in (200, 204), response.content
        after = response["X-QMS-After"]
        yield response
        if response["X-QMS-Live"] != "live":
            return


def stereo(response) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(response.content)) as audio:
        assert (audio.getnchannels(), audio.getframerate(), audio.getsampwidth()) == (2, 8000, 2)
        frames = audio.readframes(audio.getnframes())
    return int(response["X-QMS-Frame"]), np.frombuffer(frames, dtype="<i2").reshape(-1, 2)


def test_a_supervisor_hears_the_call_as_it_goes_john_left_the_caller_right(
    world: PlaybackWorld, relay
) -> None:
    _node, spool_root = relay
    call = LiveCall(spool_root, world)
    call.talk(5.0)
    client = pages_as(world.supervisor_a)
    page = client.get(f"/calls/{call.row.pk}/listen")
    assert page.status_code == 200 and b'id="listen-start"' in page.content
    listen = start_listening(client, call.row)
    pieces = []
    for response in segments(client, listen, seconds=6):
        if response.status_code == 200:
            pieces.append(stereo(response))
        if sum(len(frames) for _first, frames in pieces) >= 3 * 8000:
            break
        call.talk(0.5)
    first, frames = pieces[0][0], np.concatenate([frames for _first, frames in pieces])
    for (one, earlier), (two, _later) in itertools.pairwise(pieces):
        assert one + len(earlier) == two, "segments follow on, with nothing missing"
    # The timeline starts where the node joined the call; John's voice at his place on it.
    decoder = _node.decoders[call.row.pk]
    offset = round((decoder.start - call.start) * 8000) + first
    assert np.array_equal(frames[:, 0], pcm_of(call.john)[offset : offset + len(frames)])
    assert np.array_equal(frames[:, 1], pcm_of(call.caller)[offset : offset + len(frames)])
    [started] = AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_START)
    assert started.user == world.supervisor_a
    assert started.detail["call"] == call.row.pk


def test_stopping_writes_the_end_with_how_long_and_the_listen_is_closed(
    world: PlaybackWorld, relay
) -> None:
    call = LiveCall(relay[1], world)
    call.talk(3.0)
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    assert client.post(listen["stop"]).status_code == 204
    [ended] = AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_END)
    assert ended.detail["ended_by"] == "the listener stopped"
    assert ended.detail["listen"] == listen["listen"] and "seconds" in ended.detail
    assert client.get(listen["segments"]).status_code == 404
    assert client.post(listen["stop"]).status_code == 404  # ended once, audited once
    assert AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_END).count() == 1


def test_the_call_ending_ends_the_listen(world: PlaybackWorld, relay) -> None:
    call = LiveCall(relay[1], world)
    call.talk(3.0)
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    call.end()
    states = [response["X-QMS-Live"] for response in segments(client, listen, seconds=8)]
    assert states[-1] == "ended"
    row = LiveListen.objects.get(pk=listen["listen"])
    assert row.ended_by == LiveListen.EndedBy.CALL_ENDED
    [ended] = AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_END)
    assert ended.detail["ended_by"] == "the call ended"


def test_a_page_that_went_away_is_ended_by_beat_at_its_last_request(
    world: PlaybackWorld, relay
) -> None:
    call = LiveCall(relay[1], world)
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    assert end_lapsed_listens(timezone.now()) == 0  # still fresh
    row = LiveListen.objects.get(pk=listen["listen"])
    assert end_lapsed_listens(timezone.now() + timedelta(minutes=2)) == 1
    row.refresh_from_db()
    assert row.ended_by == LiveListen.EndedBy.LAPSED
    assert row.ended_at == row.last_request_at
    [ended] = AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_END)
    assert (
        ended.user == world.supervisor_a
        and ended.detail["ended_by"] == "the listener's page went away"
    )


def test_only_holders_of_listen_live_for_calls_they_may_see(world: PlaybackWorld, relay) -> None:
    call = LiveCall(relay[1], world)
    # Supervisor B may listen live, but John is not in B's team: his call does not exist.
    world.supervisor_b.user_permissions.add(Permission.objects.get(codename="listen_live"))
    other_team = pages_as(world.supervisor_b)
    assert other_team.get(f"/calls/{call.row.pk}/listen").status_code == 404
    assert other_team.post(f"/calls/{call.row.pk}/listen/start").status_code == 404
    # John himself (an agent) and a supervisor without the permission are refused.
    for user in (world.agent, world.outsider):
        assert pages_as(user).post(f"/calls/{call.row.pk}/listen/start").status_code in (403, 404)
    bare = build_supervisor_without_permission(world)
    assert pages_as(bare).get(f"/calls/{call.row.pk}/listen").status_code == 403
    # Someone else's listen is nobody's: its segments and stop answer 404.
    listen = start_listening(pages_as(world.supervisor_a), call.row)
    assert other_team.get(listen["segments"]).status_code == 404
    assert other_team.post(listen["stop"]).status_code == 404
    # The live calls page offers Listen only to those who may.
    assert b"Listen</a>" in pages_as(world.supervisor_a).get("/calls/live/").content
    assert b"Listen</a>" not in pages_as(bare).get("/calls/live/").content
    assert AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_START).count() == 1


def build_supervisor_without_permission(world: PlaybackWorld):
    """Supervisor A's twin in team A without listen_live."""
    from tests.recorder.playback.support import login

    twin = login("twin-of-a")
    world.sales.supervisors.add(twin)
    return twin


def test_losing_the_permission_mid_listen_ends_it(world: PlaybackWorld, relay) -> None:
    call = LiveCall(relay[1], world)
    call.talk(2.0)
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    world.supervisor_a.user_permissions.remove(Permission.objects.get(codename="listen_live"))
    assert pages_as(world.supervisor_a).get(listen["segments"]).status_code == 404
    assert LiveListen.objects.get(pk=listen["listen"]).ended_by == LiveListen.EndedBy.NOT_ALLOWED


def test_without_a_relay_or_a_node_it_says_why(world: PlaybackWorld, tmp_path: Path) -> None:
    foreground = LiveCall(tmp_path / "spool", world, node="")
    client = pages_as(world.supervisor_a)
    with override_settings(QMS_LIVE_AUDIO_URL=""):
        refused = client.post(f"/calls/{foreground.row.pk}/listen/start")
        assert refused.status_code == 503
        assert "QMS_LIVE_AUDIO_URL" in refused.json()["detail"]
        assert b"live listening is off" in client.get(f"/calls/{foreground.row.pk}/listen").content
    with override_settings(QMS_LIVE_AUDIO_URL="redis://127.0.0.1:1/0"):
        refused = client.post(f"/calls/{foreground.row.pk}/listen/start")
        assert refused.status_code == 409
        assert "foreground sniff" in refused.json()["detail"]
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_START).exists()


def test_a_relay_out_of_reach_is_a_sentence_not_a_500(world: PlaybackWorld, tmp_path: Path) -> None:
    call = LiveCall(tmp_path / "spool", world)
    with override_settings(QMS_LIVE_AUDIO_URL="redis://127.0.0.1:1/0"):
        refused = pages_as(world.supervisor_a).post(f"/calls/{call.row.pk}/listen/start")
    assert refused.status_code == 503
    assert "cannot be reached" in refused.json()["detail"]


def test_a_call_no_node_logs_is_said_unavailable(world: PlaybackWorld, relay, monkeypatch) -> None:
    monkeypatch.setattr("recorder.nodes.live_audio.NO_LOG_SECONDS", 1.0)
    call = LiveCall(relay[1], world)
    call.path.unlink()  # not recorded (do-not-record): no log on the node
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    answers = list(segments(client, listen, seconds=8))
    assert answers[-1]["X-QMS-Live"] == "unavailable"
    assert "no audio of the call has been captured" in answers[-1]["X-QMS-Why"]
    assert LiveListen.objects.get(pk=listen["listen"]).ended_by == LiveListen.EndedBy.UNAVAILABLE


def test_a_node_whose_sniffer_is_starting_serves_a_listen(world: PlaybackWorld, relay) -> None:
    """A worker that has just taken its interface's lease captures before its first
    figures say so: a listen then is not refused, and hears the call."""
    call = LiveCall(relay[1], world)
    lease = timezone.now() + timedelta(seconds=30)
    CaptureInterface.objects.filter(node=NODE).update(
        running=False, heartbeat_at=None, lease_owner="capture-site-a@host", lease_expires_at=lease
    )
    call.talk(3.0)
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    answers = list(segments(client, listen, seconds=3))
    assert any(answer["X-QMS-Live"] == "live" and answer.content for answer in answers)
    # Its lease lapsed (the worker died before its first heartbeat): refused, with why.
    CaptureInterface.objects.filter(node=NODE).update(lease_expires_at=timezone.now())
    refused = client.post(f"/calls/{call.row.pk}/listen/start")
    assert refused.status_code == 503
    assert "site-a that captures this call is not running" in refused.json()["detail"]


def test_a_node_that_stopped_capturing_is_said_so(world: PlaybackWorld, relay) -> None:
    call = LiveCall(relay[1], world)
    call.talk(3.0)
    client = pages_as(world.supervisor_a)
    listen = start_listening(client, call.row)
    # The node's worker stops (its last heartbeat ages past the lease): no audio will come.
    stale = timezone.now() - timedelta(minutes=5)
    CaptureInterface.objects.filter(node=NODE).update(heartbeat_at=stale)
    relay[0].stop()
    answers = list(segments(client, listen, seconds=8))
    assert answers[-1]["X-QMS-Live"] == "unavailable"
    assert (
        answers[-1]["X-QMS-Why"]
        == "the capture node site-a that captures this call is not running now"
    )
    assert LiveListen.objects.get(pk=listen["listen"]).ended_by == LiveListen.EndedBy.UNAVAILABLE
    # A new listen is refused at once, with the same sentence.
    refused = client.post(f"/calls/{call.row.pk}/listen/start")
    assert refused.status_code == 503
    assert "site-a that captures this call is not running" in refused.json()["detail"]
