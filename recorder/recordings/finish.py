"""From a finished call's RTP log to a Recording: stereo audio in storage, and its row.

Runs off the packet path (the sink's thread; later a Celery worker). The agent is on the
left, the far party on the right: the left channel is what the far side received (the
agent's voice), the right what the agent's phone received. Both directions are placed on
one timeline by their first packet's arrival, so a reply never plays before its question.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage
from django.db import DatabaseError, transaction

from integrations.bounds import clean_text
from integrations.observations import MediaOffer, Side
from recorder.media.bulk import rtp_payload_types
from recorder.media.codecs import PayloadKind
from recorder.media.quality import mos_estimate
from recorder.media.rtplog import LOG_NAME, LogBlock, read_batches
from recorder.media.spool import Channel, MemorySpool
from recorder.media.stream import StreamDecoder
from recorder.models import Call, Recording, recordings_storage
from recorder.recordings.waveform import PeaksBuilder

WIDEBAND_RATE = 16000
NARROWBAND_RATE = 8000
# A finished call's log up to this size is read once for both passes over it (about an
# hour of G.711 both ways); a longer one is read twice rather than held.
LOG_KEPT_BYTES = 64 * 1024 * 1024
CODEC_COLUMN = Recording._meta.get_field("codec").max_length
# What a Recording takes from its call, and what finishing it writes.
CALL_COLUMNS = [
    "call_id",
    "conversation_id",
    "started_at",
    "ended_at",
    "direction",
    "extension",
    "agent",
    "phone",
    "remote_party",
    "remote_name",
    "local_ip",
    "remote_ip",
]
ANALYSIS_COLUMNS = ["quality", "dtmf", "codec", "mos_estimate"]
AUDIO_COLUMNS = ["file", "size", "audio_format", "status"]


@dataclass
class Direction:
    """One direction of the call: the packets one side received."""

    receiver: Side
    channel: Channel
    decoder: StreamDecoder
    first_arrival: float | None = None
    last_arrival: float | None = None
    payload_types: Counter = field(default_factory=Counter)


def local_side_of(call: Call, given: Side | None) -> Side:
    """Whose phone the recording is for: the protocol's word, else the call's direction."""
    if given is not None:
        return given
    return Side.CALLEE if call.direction == Call.Direction.INBOUND else Side.CALLER


def finish_recording(
    call: Call, spool: Path, media: tuple[MediaOffer, ...], local_side: Side | None
) -> Recording | None:
    """Decode a finished call's log into a Recording; the spool is removed once stored.

    Runs again from the start after a rollback: the log is only read, and what an
    interrupted earlier attempt decoded is decoded again."""
    shutil.rmtree(spool / "pcm", ignore_errors=True)
    local = local_side_of(call, local_side)
    directions = _directions(media, local)
    batches = _batches(spool)
    _scan(batches, directions)
    if not any(direction.payload_types for direction in directions.values()):
        _remove_after_commit(spool)
        return None
    recording = write_recording_row(call, local)
    rate = _rate_for(directions)
    start = min(d.first_arrival for d in directions.values() if d.first_arrival is not None)
    # Put together in memory (a long call goes on in a PCM spool beside the log); either
    # can always be decoded again from the RTP log, so neither is fsynced.
    audio_spool = MemorySpool(
        spool / "pcm", call.call_id, rate, {"timeline_start": start},
        expected_frames=_expected_frames(directions, start, rate),
    )  # fmt: skip
    for batch in batches:
        direction = directions[batch.receiver]
        chunks = direction.decoder.feed_block(batch.arrivals, batch.lengths, batch.data)
        _write(audio_spool, direction, chunks)
    for direction in directions.values():
        _write(audio_spool, direction, direction.decoder.flush())
    _store(recording, audio_spool, directions, spool)
    return recording


def _directions(media: tuple[MediaOffer, ...], local: Side) -> dict[Side, Direction]:
    offers = {offer.side: offer for offer in media}
    far = local.other
    return {
        # What the far side receives is the agent's voice: the left channel.
        far: Direction(far, Channel.AGENT, StreamDecoder(_payload_types(offers, far))),
        local: Direction(local, Channel.FAR_PARTY, StreamDecoder(_payload_types(offers, local))),
    }


def _payload_types(offers: dict[Side, MediaOffer], side: Side) -> tuple[tuple[int, str], ...]:
    # A sender uses the payload types its receiver's SDP declared (RFC 3264 §5.1).
    offer = offers.get(side)
    return offer.payload_types if offer is not None else ()


def _batches(spool: Path) -> Iterable[LogBlock]:
    """The log's batches, for two passes: read once and kept when the log is small
    enough, read twice from the file otherwise."""
    log_file = spool / LOG_NAME
    if log_file.exists() and log_file.stat().st_size <= LOG_KEPT_BYTES:
        return list(read_batches(spool))
    return _BatchReader(spool)


class _BatchReader:
    def __init__(self, spool: Path) -> None:
        self.spool = spool

    def __iter__(self) -> Iterator[LogBlock]:
        return read_batches(self.spool)


def _scan(batches: Iterable[LogBlock], directions: dict[Side, Direction]) -> None:
    """First pass: when each direction started, and which payload types it carried.

    Only RTP counts: a keepalive or probe datagram sent to the media port (SIPp sends a
    4-byte one, rtppcap-sip-rtp-g722.pcap) is neither a payload type nor the start of
    the direction's audio."""
    for batch in batches:
        direction = directions[batch.receiver]
        first_rtp, payload_types = rtp_payload_types(batch.lengths, batch.data)
        if direction.first_arrival is None and first_rtp is not None:
            direction.first_arrival = batch.arrivals[first_rtp]
        if first_rtp is not None:
            direction.last_arrival = batch.arrivals[-1]
        direction.payload_types.update(payload_types)


def _expected_frames(directions: dict[Side, Direction], start: float, rate: int) -> int:
    """The call's length in frames as its packets' arrivals tell it, and a second more
    (the last packet's audio, jitter): room for the audio from the start."""
    last = max((d.last_arrival for d in directions.values() if d.last_arrival), default=start)
    return int((last - start + 1.0) * rate)


def _rate_for(directions: dict[Side, Direction]) -> int:
    for direction in directions.values():
        formats = direction.decoder.formats
        for payload_type in direction.payload_types:
            codec = formats[payload_type].codec
            if codec is not None and codec.sample_rate >= WIDEBAND_RATE:
                return WIDEBAND_RATE
    return NARROWBAND_RATE


def _write(audio_spool: MemorySpool, direction: Direction, chunks: list) -> None:
    rate = direction.decoder.sample_rate
    if not chunks or rate is None:
        return
    start = _call_start(audio_spool)
    base = round((direction.first_arrival - start) * rate)
    for chunk in chunks:
        audio_spool.write(direction.channel, base + chunk.offset, chunk.pcm, sample_rate=rate)


def _call_start(audio_spool: MemorySpool) -> float:
    return audio_spool.metadata.get("timeline_start", 0.0)


def write_recording_row(call: Call, local: Side) -> Recording:
    """The call's Recording row, written now because the file is named by its id.

    One statement, INSERT ... ON CONFLICT DO UPDATE: a call finished again (recovered, a
    file imported twice) keeps its one row, with these columns written afresh and the
    others (a legal hold) as they were."""
    far_number = call.callee if local == Side.CALLER else call.caller
    far_name = call.callee_name if local == Side.CALLER else call.caller_name
    local_ip = call.caller_ip if local == Side.CALLER else call.callee_ip
    remote_ip = call.callee_ip if local == Side.CALLER else call.caller_ip
    recording = Recording(
        signalling=call,
        call_id=call.call_id,
        conversation_id=call.conversation_id or call.call_id,
        started_at=call.started_at,
        ended_at=call.ended_at,
        direction=call.direction,
        extension=call.extension,
        agent_id=call.agent_id,
        phone_id=call.phone_id,
        remote_party=far_number,
        remote_name=far_name,
        local_ip=local_ip,
        remote_ip=remote_ip,
    )
    Recording.objects.bulk_create(
        [recording],
        update_conflicts=True,
        unique_fields=["signalling"],
        update_fields=CALL_COLUMNS,
    )
    return recording


def _store(
    recording: Recording, audio_spool: MemorySpool, directions: dict[Side, Direction], spool: Path
) -> None:
    decoded = [d for d in directions.values() if d.decoder.sample_rate is not None]
    recording.quality = {_quality_key(d): _quality(d.decoder) for d in directions.values()}
    recording.dtmf = _dtmf(directions)
    recording.codec = _codecs(directions)
    recording.mos_estimate = _mos(directions)
    if not decoded:
        _keep_raw(recording, audio_spool, spool)
        return
    name = _audio_name(recording)
    storage = recordings_storage()
    destination = Path(storage.path(name))
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The waveform is drawn from the audio as it is written, not read back from the file.
    waveform = PeaksBuilder()
    audio = audio_spool.finalize(destination, settings.QMS_RECORDING_FORMAT, waveform)
    recording.file.name = name
    recording.size, recording.sha256 = audio.size, audio.sha256
    recording.duration_seconds = audio.duration_seconds
    recording.audio_format = settings.QMS_RECORDING_FORMAT
    recording.peaks = waveform.peaks
    recording.status = Recording.Status.COMPLETE
    recording.status_detail = capture_loss(recording.signalling)
    with _file_removed_on_failure(storage, name):
        recording.save(
            update_fields=[
                *ANALYSIS_COLUMNS, *AUDIO_COLUMNS, "sha256", "duration_seconds", "peaks",
                "status_detail",
            ]
        )  # fmt: skip
    _remove_after_commit(spool)


def capture_loss(call: Call) -> str:
    """What a supervisor is told of a call the capture lost packets of: that its gaps may
    be the recorder's, where its quality figures alone would blame the network."""
    if not call.capture_dropped:
        return ""
    return (
        f"the capture dropped {call.capture_dropped:,} packets while this call was live: "
        "gaps may be the recorder's, not the network's"
    )


@contextmanager
def _file_removed_on_failure(storage: Storage, name: str) -> Iterator[None]:
    """A file whose row could not be written is deleted: no row would ever point at it,
    and retention would never find it. The spool stays for a new attempt."""
    try:
        yield
    except DatabaseError:
        storage.delete(name)
        raise


def _keep_raw(recording: Recording, audio_spool: MemorySpool, spool: Path) -> None:
    """No direction could be decoded: keep the RTP as it came, and say which codec.

    The log is copied, not moved: it stays for a new attempt should this transaction be
    rolled back, and goes with the spool once the row is committed."""
    audio_spool.close()
    name = _audio_name(recording, suffix="rtplog")
    storage = recordings_storage()
    destination = Path(storage.path(name))
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spool / "rtp.log", destination)
    recording.file.name = name
    recording.size = destination.stat().st_size
    recording.audio_format = "rtp"
    recording.status = Recording.Status.NOT_DECODABLE
    recording.status_detail = f"not decodable: {recording.codec or 'unknown codec'}"[:200]
    with _file_removed_on_failure(storage, name):
        recording.save(update_fields=[*ANALYSIS_COLUMNS, *AUDIO_COLUMNS, "status_detail"])
    _remove_after_commit(spool)


def _remove_after_commit(spool: Path) -> None:
    """The call's log goes only once the row that points at its audio is committed: a
    crash before the commit leaves the log to be finished again (recordings/recovery.py)."""
    transaction.on_commit(lambda: shutil.rmtree(spool, ignore_errors=True))


def _audio_name(recording: Recording, suffix: str | None = None) -> str:
    day = recording.started_at.astimezone(UTC)
    extension = suffix or settings.QMS_RECORDING_FORMAT
    return f"{day:%Y/%m/%d}/{recording.pk:08d}.{extension}"


def _quality_key(direction: Direction) -> str:
    return "agent_to_far" if direction.channel == Channel.AGENT else "far_to_agent"


def _quality(decoder: StreamDecoder) -> dict:
    quality = decoder.quality
    return {
        "expected": quality.expected,
        "received": quality.received,
        "lost": quality.lost,
        "duplicated": quality.duplicated,
        "out_of_order": quality.out_of_order,
        "jitter_ms": round(quality.jitter_ms, 3),
    }


def _dtmf(directions: dict[Side, Direction]) -> list[dict]:
    events = []
    for direction in directions.values():
        who = "agent" if direction.channel == Channel.AGENT else "far"
        for event in direction.decoder.take_dtmf():
            events.append(
                {"digit": event.digit, "at": event.start, "duration": event.duration, "by": who}
            )
    return sorted(events, key=lambda event: event["at"])


def _codecs(directions: dict[Side, Direction]) -> str:
    names = []
    for direction in directions.values():
        for payload_type, _ in direction.payload_types.most_common():
            found = direction.decoder.formats[payload_type]
            if found.kind in (PayloadKind.AUDIO, PayloadKind.UNDECODABLE):
                names.append(found.name)
                break
    # Codec names come from the wire's SDP: cut to the column, never refused by it.
    return clean_text("/".join(dict.fromkeys(names)), CODEC_COLUMN)


def _mos(directions: dict[Side, Direction]) -> float | None:
    qualities = [d.decoder.quality for d in directions.values() if d.decoder.quality.expected]
    if not qualities:
        return None
    worst = max(qualities, key=lambda quality: quality.lost / max(quality.expected, 1))
    loss = worst.lost / max(worst.expected, 1)
    jitter = max(quality.jitter_ms for quality in qualities)
    return mos_estimate(_codecs(directions).split("/")[0], loss, jitter)
