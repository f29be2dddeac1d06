"""From a finished call's RTP log to a Recording: stereo audio in storage, and its row.

Runs off the packet path (the sink's thread; later a Celery worker). The agent is on the
left, the far party on the right: the left channel is what the far side received (the
agent's voice), the right what the agent's phone received. Both directions are placed on
one timeline by their first packet's arrival, so a reply never plays before its question.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save

from integrations.bounds import clean_text
from integrations.observations import MediaOffer, Side
from recorder.media.bulk import RANDOMNESS_SAMPLE, BlockHeaders, looks_random
from recorder.media.codecs import SAMPLE_BYTES, PayloadKind
from recorder.media.quality import mos_estimate
from recorder.media.rtplog import LogBlock, log_file, pcm_folder, read_batches, remove_spool
from recorder.media.spool import Channel, MemorySpool
from recorder.media.stream import StreamDecoder
from recorder.models import Call, Recording, recordings_storage
from recorder.recordings.archive import RecordingFiles, recording_files
from recorder.recordings.keys import new_recordings_sealing
from recorder.recordings.waveform import PeaksBuilder

WIDEBAND_RATE = 16000
NARROWBAND_RATE = 8000
# A finished call's log up to this size is read once for both passes over it (about an
# hour of G.711 both ways); a longer one is read twice rather than held.
LOG_KEPT_BYTES = 64 * 1024 * 1024
# What a recording of a call whose RTP was all telephone-events says of itself.
EVENTS_ONLY = (
    "no audio on the wire: only DTMF digits (RFC 4733 telephone-events), kept over silence"
)
SILENT_KINDS = frozenset({PayloadKind.TELEPHONE_EVENT, PayloadKind.COMFORT_NOISE})
# What a recording of media encrypted on the media path says of itself: not audio, kept raw.
ENCRYPTED_ZRTP = "encrypted media: ZRTP (RFC 6189) keyed the SRTP on the media path"
ENCRYPTED_SRTP = "encrypted media: SRTP keyed elsewhere (random G.711 payloads with a tag)"
# Up to this size (about a minute of G.711 both ways) the headers read from the log are
# kept for the second pass too: they take about as much memory as the log itself.
HEADERS_KEPT_BYTES = 2 * 1024 * 1024
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
AUDIO_COLUMNS = ["file", "size", "audio_format", "status", "encryption_key_id"]
STORED_COLUMNS = [
    *ANALYSIS_COLUMNS, *AUDIO_COLUMNS, "sha256", "duration_seconds", "peaks", "status_detail",
]  # fmt: skip
STATUS_DETAIL_COLUMN = Recording._meta.get_field("status_detail").max_length


@dataclass
class Direction:
    """One direction of the call: the packets one side received."""

    receiver: Side
    channel: Channel
    decoder: StreamDecoder
    first_arrival: float | None = None
    last_arrival: float | None = None
    payload_types: Counter = field(default_factory=Counter)
    # For the test of encrypted media: ZRTP packets, G.711 packets of an odd length, and
    # G.711 payload octets (their number up to bulk.RANDOMNESS_SAMPLE).
    zrtp_packets: int = 0
    odd_g711_packets: int = 0
    g711_octets: list = field(default_factory=list)
    g711_sampled: int = 0


def local_side_of(call: Call, given: Side | None) -> Side:
    """Whose phone the recording is for: the protocol's word, else the call's direction."""
    if given is not None:
        return given
    return Side.CALLEE if call.direction == Call.Direction.INBOUND else Side.CALLER


def finish_recording(
    call: Call,
    spool: Path,
    media: tuple[MediaOffer, ...],
    local_side: Side | None,
    partial: str = "",
) -> Recording | None:
    """Decode a finished call's log into a Recording; the spool is removed once stored.
    `partial`, when given, is why the recording is partial.

    Runs again from the start after a rollback: the log is only read, and what an
    interrupted earlier attempt decoded is decoded again."""
    decoded = decode_call(call, spool, media, local_side, partial)
    if decoded is None:
        remove_after_commit(spool)
        return None
    [recording] = store_recordings([decoded])
    return recording


@dataclass
class DecodedCall:
    """A call's audio decoded from its log, in memory, waiting for its row and its file."""

    call: Call
    spool: Path
    local: Side
    directions: dict[Side, Direction]
    audio: MemorySpool
    # Why the recording is partial, or "".
    partial: str = ""
    # The call's RTP was RFC 4733 telephone-events alone: its audio is silence, with DTMF.
    events_only: bool = False
    # Why its media is taken for encrypted (keyed on the media path: ZRTP, SRTP), or "".
    encrypted: str = ""


def decode_call(
    call: Call,
    spool: Path,
    media: tuple[MediaOffer, ...],
    local_side: Side | None,
    partial: str = "",
) -> DecodedCall | None:
    """A finished call's log decoded, without the database: None when it holds no RTP
    (nothing to record)."""
    pcm = pcm_folder(spool)
    shutil.rmtree(pcm, ignore_errors=True)
    local = local_side_of(call, local_side)
    directions = _directions(media, local)
    batches = _batches(spool)
    _scan(batches, directions)
    if not any(direction.payload_types for direction in directions.values()):
        return None
    rate = _rate_for(directions)
    for direction in directions.values():
        # Both channels at the call's rate: a codec change (PCMU, then G.722) keeps its audio.
        direction.decoder.output_rate = rate
    start = min(d.first_arrival for d in directions.values() if d.first_arrival is not None)
    encrypted = _encrypted_media(directions)
    # Put together in memory (a long call goes on in a PCM spool beside the log); either
    # can always be decoded again from the RTP log.
    audio_spool = MemorySpool(
        pcm, call.call_id, rate, {"timeline_start": start},
        expected_frames=_expected_frames(directions, start, rate),
    )  # fmt: skip
    if encrypted:
        # Decoded, it would be white noise called "complete": kept as it came instead.
        return DecodedCall(call, spool, local, directions, audio_spool, partial, False, encrypted)
    for batch, headers in batches:
        direction = directions[batch.receiver]
        _write(audio_spool, direction, direction.decoder.feed_headers(headers))
    for direction in directions.values():
        _write(audio_spool, direction, direction.decoder.flush())
    events_only = _events_only(directions)
    if events_only:
        _write_silence(audio_spool, directions, start, rate)
    return DecodedCall(call, spool, local, directions, audio_spool, partial, events_only)


def _encrypted_media(directions: dict[Side, Direction]) -> str:
    """Why the call's media is encrypted with keys the signalling never showed, or "":
    ZRTP's own packets on the media ports (RFC 6189 §5), or SRTP keyed elsewhere (DTLS,
    MIKEY, a PBX's own keys): G.711 payloads that are random octets, most of them an
    authentication tag longer than a whole number of milliseconds of audio."""
    if any(direction.zrtp_packets for direction in directions.values()):
        return ENCRYPTED_ZRTP
    for direction in directions.values():
        tagged = direction.odd_g711_packets * 2 > sum(direction.payload_types.values())
        if tagged and direction.g711_octets and looks_random(np.concatenate(direction.g711_octets)):
            return ENCRYPTED_SRTP
    return ""


def _events_only(directions: dict[Side, Direction]) -> bool:
    """Whether every RTP packet of the call was a telephone-event (RFC 4733) or comfort
    noise: DTMF sent over silence (an IVR's far side, or a gateway that sends its digits
    apart from the audio), a recording of silence with digits, not an unknown codec."""
    kinds = {
        direction.decoder.formats[payload_type].kind
        for direction in directions.values()
        for payload_type in direction.payload_types
    }
    return PayloadKind.TELEPHONE_EVENT in kinds and kinds <= SILENT_KINDS


def _write_silence(
    audio_spool: MemorySpool, directions: dict[Side, Direction], start: float, rate: int
) -> None:
    """The call's span as silence, from its first packet to its last: the digits' times
    are on it."""
    last = max(d.last_arrival for d in directions.values() if d.last_arrival is not None)
    frames = max(1, round((last - start) * rate))
    audio_spool.write(Channel.AGENT, 0, bytes(SAMPLE_BYTES * frames))


def store_recordings(decoded: list[DecodedCall]) -> list[Recording]:
    """The recordings of decoded calls, in bulk: their files written and made durable
    (write_recordings), then their rows in the caller's transaction (commit_recordings)."""
    return commit_recordings(write_recordings(decoded))


@dataclass
class WrittenRecordings:
    """Recordings whose files are stored and durable, their rows not yet written."""

    decoded: list[DecodedCall]
    recordings: list[Recording]
    files: RecordingFiles


def write_recordings(decoded: list[DecodedCall]) -> WrittenRecordings:
    """The files of decoded calls' recordings, named by their calls and made durable
    together, without a database write: a caller writes them before its transaction
    begins, so that the transaction (on SQLite, the database's one write lock) lasts for
    the rows alone, not for a batch's files and their fsyncs.

    The fsync strategy, on a storage that is a local folder: every file is written in
    place without an fsync, then each file and each folder is fsynced once (media/spool.py
    sync_finished), before the rows commit. On any other storage (a bucket) each file is
    written beside its log and uploaded, and the object store's answer to the upload is
    its durability, before the rows commit (recordings/archive.py). A spool goes only
    after the commit. A crash before the commit leaves the spools to be finished again
    (files without a row are overwritten then, being named by the row); after it, every
    committed row's file is stored. Should anything fail (an upload refused raises
    StorageUnavailable), the files stored are removed, for no row points at them, and the
    spools stay."""
    recordings = [_recording_of(found.call, found.local) for found in decoded]
    files = recording_files(recordings_storage())
    try:
        for found, recording in zip(decoded, recordings, strict=True):
            _store(recording, found, files)
        files.make_durable()
    except BaseException:
        files.discard()
        raise
    return WrittenRecordings(decoded, recordings, files)


def commit_recordings(written: WrittenRecordings) -> list[Recording]:
    """The rows of recordings whose files are written, in one statement, in the caller's
    transaction; each call's spool goes once it commits. Should the rows fail, the files
    are removed."""
    recordings = written.recordings
    try:
        columns = [*CALL_COLUMNS, *STORED_COLUMNS]
        _upsert(recordings, columns)
        # A bulk write sends no post_save of its own: sent here, so that what listens for
        # finished recordings (the ShoreTel link, integrations/shoretel) hears each one.
        for recording in recordings:
            post_save.send(
                Recording, instance=recording, created=False, raw=False,
                using=recording._state.db, update_fields=frozenset(columns),
            )  # fmt: skip
    except BaseException:
        written.files.discard()
        raise
    for found in written.decoded:
        remove_after_commit(found.spool)
    return recordings


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


def _batches(spool: Path) -> Iterable[tuple[LogBlock, BlockHeaders]]:
    """The log's batches with their headers read, for two passes. A short call's are read
    once and kept with their headers (reading the headers is most of a short call's
    decoding); a longer log's batches are kept and their headers read in each pass; a
    log past LOG_KEPT_BYTES is read twice from the file rather than held."""
    try:
        size = os.stat(log_file(spool)).st_size
    except FileNotFoundError:
        size = 0
    if size <= HEADERS_KEPT_BYTES:
        return list(_WithHeaders(read_batches(spool)))
    if size <= LOG_KEPT_BYTES:
        return _WithHeaders(list(read_batches(spool)))
    return _WithHeaders(_Rereading(spool))


class _WithHeaders:
    """Batches, each with its headers read afresh in every pass."""

    def __init__(self, batches: Iterable[LogBlock]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[LogBlock, BlockHeaders]]:
        for batch in self.batches:
            yield batch, BlockHeaders(batch.arrivals, batch.lengths, batch.data)


class _Rereading:
    def __init__(self, spool: Path) -> None:
        self.spool = spool

    def __iter__(self) -> Iterator[LogBlock]:
        return read_batches(self.spool)


def _scan(
    batches: Iterable[tuple[LogBlock, BlockHeaders]], directions: dict[Side, Direction]
) -> None:
    """First pass: when each direction started, and which payload types it carried.

    Only RTP counts: a keepalive or probe datagram sent to the media port (SIPp sends a
    4-byte one, rtppcap-sip-rtp-g722.pcap) is neither a payload type nor the start of
    the direction's audio."""
    for batch, headers in batches:
        direction = directions[batch.receiver]
        first_rtp, payload_types = headers.payload_types()
        if direction.first_arrival is None and first_rtp is not None:
            direction.first_arrival = batch.arrivals[first_rtp]
        if first_rtp is not None:
            direction.last_arrival = batch.arrivals[-1]
        direction.payload_types.update(payload_types)
        direction.zrtp_packets += headers.zrtp_packets()
        wanted = RANDOMNESS_SAMPLE - direction.g711_sampled
        odd, octets = headers.g711_sample(direction.decoder.g711_types, max(0, wanted))
        direction.odd_g711_packets += odd
        if len(octets):
            direction.g711_octets.append(octets)
            direction.g711_sampled += len(octets)


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
    """The call's Recording row with what it takes from the call, and nothing of its audio."""
    recording = _recording_of(call, local)
    _upsert([recording], CALL_COLUMNS)
    return recording


def _upsert(recordings: list[Recording], columns: list[str]) -> None:
    """The rows in one statement, INSERT ... ON CONFLICT DO UPDATE: a call finished again
    (recovered, a file imported twice) keeps its one row, with `columns` written afresh
    and the others (a legal hold) as they were. Each row's id is set either way."""
    Recording.objects.bulk_create(
        recordings,
        update_conflicts=True,
        unique_fields=["signalling"],
        update_fields=columns,
    )


def _recording_of(call: Call, local: Side) -> Recording:
    far_number = call.callee if local == Side.CALLER else call.caller
    far_name = call.callee_name if local == Side.CALLER else call.caller_name
    local_ip = call.caller_ip if local == Side.CALLER else call.callee_ip
    remote_ip = call.callee_ip if local == Side.CALLER else call.caller_ip
    return Recording(
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


def _store(recording: Recording, found: DecodedCall, files: RecordingFiles) -> None:
    """The recording's file stored (not yet durable) and its columns set."""
    directions = found.directions
    recording.quality = {_quality_key(d): _quality(d.decoder) for d in directions.values()}
    recording.dtmf = _dtmf(directions)
    recording.codec = _codecs(directions)
    recording.mos_estimate = _mos(directions)
    decoded = any(d.decoder.sample_rate is not None for d in directions.values())
    if found.events_only or (decoded and not found.encrypted):
        _store_audio(recording, found, files)
    else:
        _keep_raw(recording, found, files)
    if found.encrypted:
        recording.status_detail = found.encrypted
        recording.mos_estimate = None
    if found.events_only:
        recording.codec = "telephone-event"
        recording.mos_estimate = None  # no voice to rate
        recording.status_detail = clean_text(
            "; ".join(filter(None, [EVENTS_ONLY, recording.status_detail])), STATUS_DETAIL_COLUMN
        )
    if found.partial:
        recording.status = Recording.Status.PARTIAL
        recording.status_detail = clean_text(found.partial, STATUS_DETAIL_COLUMN)


def _store_audio(recording: Recording, found: DecodedCall, files: RecordingFiles) -> None:
    """The decoded audio stored as the recording's file, its columns set."""
    name = _audio_name(recording)
    destination = files.staging(name, found.spool)
    # The waveform is drawn from the audio as it is written, not read back from the file.
    waveform = PeaksBuilder()
    audio_format = settings.QMS_RECORDING_FORMAT
    # Sealed as it is written, when encryption is on: no plain copy of a WAV is made.
    sealing = new_recordings_sealing()
    audio = found.audio.finalize(destination, audio_format, waveform, False, sealing)
    recording.encryption_key_id = sealing.key_id if sealing else ""
    recording.file.name = files.store(name, destination)
    recording.size, recording.sha256 = audio.size, audio.sha256
    recording.duration_seconds = audio.duration_seconds
    recording.audio_format = audio_format
    recording.peaks = waveform.peaks
    recording.status = Recording.Status.COMPLETE
    recording.status_detail = capture_loss(recording.signalling)


def capture_loss(call: Call) -> str:
    """What a supervisor is told of a call the capture lost packets of: that its gaps may
    be the recorder's, where its quality figures alone would blame the network."""
    if not call.capture_dropped:
        return ""
    return (
        f"the capture dropped {call.capture_dropped:,} packets while this call was live: "
        "gaps may be the recorder's, not the network's"
    )


def _keep_raw(recording: Recording, found: DecodedCall, files: RecordingFiles) -> None:
    """No direction could be decoded: keep the RTP as it came, and say which codec.

    The log is copied (or uploaded), not moved: it stays for a new attempt should this
    transaction be rolled back, and goes with the spool once the row is committed."""
    found.audio.close()
    log = log_file(found.spool)
    name = _audio_name(recording, suffix="rtplog")
    sealing = new_recordings_sealing()
    if sealing is None:
        recording.file.name = files.store(name, log)
        recording.size = log.stat().st_size
    else:
        # The raw RTP is as personal as the audio: sealed like it, into the place the
        # storage wants it (the final name on a folder, a file to upload otherwise).
        sealed = files.staging(name, found.spool)
        sealed.parent.mkdir(parents=True, exist_ok=True)
        with sealed.open("wb") as out:
            _, recording.size = sealing.seal_file(log, out)
        recording.file.name = files.store(name, sealed)
    recording.encryption_key_id = sealing.key_id if sealing else ""
    recording.audio_format = "rtp"
    recording.status = Recording.Status.NOT_DECODABLE
    recording.status_detail = f"not decodable: {recording.codec or 'unknown codec'}"[:200]


def remove_after_commit(spool: Path) -> None:
    """The call's log goes only once the row that points at its audio is committed: a
    crash before the commit leaves the log to be finished again (recordings/recovery.py)."""
    transaction.on_commit(lambda: remove_spool(spool))


def _audio_name(recording: Recording, suffix: str | None = None) -> str:
    """Named by the call (a call has one recording), so that the file can be written
    before its row, and a second attempt overwrites what a first left."""
    day = recording.started_at.astimezone(UTC)
    extension = suffix or settings.QMS_RECORDING_FORMAT
    return f"{day:%Y/%m/%d}/call-{recording.signalling_id:08d}.{extension}"


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
