"""Live listening's relay: a capture node decodes a call in progress, the web tier serves it,
and Redis (QMS_LIVE_AUDIO_URL, the broker's by default) carries it between the two, so the
web tier and the capture node may be different machines sharing only Redis and the
database (docs/playback.md, "Live listening").

    qms:live:wanted:<node>   a sorted set: the calls of that node someone listens to, each
                             scored with the time (epoch seconds) until which it is wanted;
                             a listener's page renews it with every segment it asks for
    qms:live:audio:<call>    a stream of that call's live audio, one entry a read of its log:
                             frame (its first frame on the call's timeline), rate and pcm
                             (interleaved stereo PCM16, the agent left); or state = ended or
                             unavailable with why, the last entry

The node reads its wanted calls, decodes each one's log (recorder/media/live.py) and adds
what is new to its stream; listeners read the stream from where they are. A stream keeps
about a minute and lapses a minute after its last entry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from recorder.engine.codec import media_from_json
from recorder.media.codecs import payload_formats
from recorder.media.live import LiveAudio, LiveDecoder
from recorder.media.rtplog import log_names_of, read_manifest
from recorder.models import Call
from recorder.nodes.models import CaptureInterface
from recorder.recordings.finish import local_side_of

# A listener's interest lapses this long after its page last asked for audio.
WANTED_SECONDS = 10.0
# The entries a call's stream keeps (about a second each), and how long it outlives the last.
STREAM_ENTRIES = 90
STREAM_SECONDS = 60
WIDEBAND_RATE = 16000
ENDED, UNAVAILABLE = "ended", "unavailable"
# What a node or a web server may meet on its way to Redis.
RELAY_ERRORS = (redis.RedisError, OSError)


def relay_client() -> redis.Redis | None:
    """The relay's Redis, or None when live listening is off (no QMS_LIVE_AUDIO_URL)."""
    if not settings.QMS_LIVE_AUDIO_URL:
        return None
    return redis.Redis.from_url(
        settings.QMS_LIVE_AUDIO_URL, socket_timeout=5, socket_connect_timeout=5
    )


def wanted_key(node: str) -> str:
    return f"qms:live:wanted:{node}"


def audio_key(call_pk: int) -> str:
    return f"qms:live:audio:{call_pk}"


# --- the web tier's side ------------------------------------------------------------------


def want(client: redis.Redis, node: str, call_pk: int) -> None:
    """Ask `node` for the call's live audio for the next WANTED_SECONDS."""
    client.zadd(wanted_key(node), {str(call_pk): time.time() + WANTED_SECONDS})


@dataclass(frozen=True)
class Segment:
    """What a listener gets of a call's stream after where they were: audio (None when
    nothing new came in time), the stream position to ask from next, and the call's end
    or unavailability (its state and why) when the stream says so."""

    audio: LiveAudio | None
    position: str
    state: str = ""
    why: str = ""


def next_segment(client: redis.Redis, call_pk: int, position: str, wait_ms: int) -> Segment:
    """The audio of the call's stream after `position` ("" for a listener who joins
    now: from the last few entries), waiting up to `wait_ms` for some to come."""
    key = audio_key(call_pk)
    if not position:
        entries = list(reversed(client.xrevrange(key, count=3)))
    else:
        found = client.xread({key: position}, count=STREAM_ENTRIES, block=wait_ms)
        entries = found[0][1] if found else []
    return _segment(entries, position)


def _segment(entries: list, position: str) -> Segment:
    pieces, state, why = [], "", ""
    for entry_id, fields in entries:
        position = entry_id.decode()
        if b"state" in fields:
            state, why = fields[b"state"].decode(), fields.get(b"why", b"").decode()
            break
        pieces.append(LiveAudio(int(fields[b"frame"]), int(fields[b"rate"]), bytes(fields[b"pcm"])))
    return Segment(_joined(pieces), position, state, why)


def _joined(pieces: list[LiveAudio]) -> LiveAudio | None:
    """Consecutive entries as one piece of audio; a gap (entries the stream no longer
    holds, a change of rate) starts again from the newest entries."""
    if not pieces:
        return None
    kept = [pieces[-1]]
    for piece in reversed(pieces[:-1]):
        follows = piece.first + piece.frames == kept[0].first and piece.rate == kept[0].rate
        if not follows:
            break
        kept.insert(0, piece)
    return LiveAudio(kept[0].first, kept[0].rate, b"".join(piece.pcm for piece in kept))


# --- the capture node's side --------------------------------------------------------------


def wanted_calls(client: redis.Redis, node: str) -> set[int]:
    """The node's calls someone listens to now; lapsed wishes are dropped."""
    key = wanted_key(node)
    now = time.time()
    client.zremrangebyscore(key, "-inf", now)
    return {int(member) for member in client.zrangebyscore(key, now, "+inf")}


def publish(client: redis.Redis, call_pk: int, audio: LiveAudio) -> None:
    key = audio_key(call_pk)
    fields = {"frame": audio.first, "rate": audio.rate, "pcm": audio.pcm}
    client.xadd(key, fields, maxlen=STREAM_ENTRIES, approximate=True)
    client.expire(key, STREAM_SECONDS)


def publish_state(client: redis.Redis, call_pk: int, state: str, why: str) -> None:
    """The stream's last entry: the call ended, or its audio cannot be served (and why)."""
    key = audio_key(call_pk)
    client.xadd(key, {"state": state, "why": why}, maxlen=STREAM_ENTRIES, approximate=True)
    client.expire(key, STREAM_SECONDS)


def live_decoder(call: Call, spool_root: Path) -> LiveDecoder | None:
    """A decoder of the call's log in this node's spool, or None when it has none (yet:
    a call's log opens at its first RTP packet)."""
    spool = find_log(call, spool_root)
    if spool is None:
        return None
    offers = {offer.side: offer for offer in media_from_json(call.media)}
    payload_types = {side: offer.payload_types for side, offer in offers.items()}
    return LiveDecoder(spool, local_side_of(call, None), payload_types, _rate(offers.values()))


def find_log(call: Call, spool_root: Path) -> Path | None:
    """The call's log among the node's capture folders (<QMS_SPOOL_DIR>/<interface>/):
    named by its Call-ID's digest, and its manifest naming the call. Of several (the same
    Call-ID seen again), the one that started with the call."""
    started = call.started_at.timestamp()
    found = []
    for path in spool_root.glob(f"*/{log_names_of(call.call_id)}"):
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError):
            continue
        if manifest.get("call_id") == call.call_id and manifest.get("protocol") == call.protocol:
            found.append((abs(float(manifest.get("started_at", 0)) - started), path))
    return min(found)[1] if found else None


def _rate(offers: Iterable) -> int:
    """The timeline's rate: wideband when a side offered a 16 kHz codec (G.722), so
    that either codec fits it (a narrowband one is upsampled)."""
    for offer in offers:
        declared = {payload_type for payload_type, _name in offer.payload_types}
        formats = payload_formats(offer.payload_types)
        for payload_type in declared:
            codec = formats[payload_type].codec if payload_type in formats else None
            if codec is not None and codec.sample_rate >= WIDEBAND_RATE:
                return WIDEBAND_RATE
    return 8000


def node_capturing(node: str) -> bool:
    """Whether a worker of `node` captures now: one of its interfaces running, by a
    heartbeat recent enough to believe (as the admin's "capturing" column says), or its
    lease held unexpired by a worker whose sniffer is still starting (its first figures
    come a second or two after the capture opens, and the lease lapses with the worker)."""
    recent = timezone.now() - timedelta(seconds=settings.QMS_CAPTURE_LEASE_SECONDS)
    running = Q(running=True, heartbeat_at__gte=recent)
    leased = ~Q(lease_owner="") & Q(lease_expires_at__gt=Now())
    return CaptureInterface.objects.filter(running | leased, node=node).exists()


def node_down(node: str) -> str:
    return f"the capture node {node} that captures this call is not running now"


def ended_reason(call: Call) -> str:
    return f"the call ended ({call.end_reason})" if call.end_reason else "the call ended"
