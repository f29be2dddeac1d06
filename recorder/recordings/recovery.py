"""Crash recovery: the spools a capture process that stopped mid-call left, made recordings.

While a call runs its audio is spooled as an RTP log (recorder/media/rtplog.py), and the log
outlives the call until the row of its recording is committed. A capture process that stops
without ending its calls (killed, crashed, its machine restarted) leaves their logs under its
spool root. This module is the one place that finishes them, for both kinds of capture:

- `sniff` and `import_pcap` call recover_spools() on their spool root before they capture:
  each spool is decoded there and then;
- a capture node's sniffer hands each of leftover_spools() to its outbox at start, and the
  node's recover_spool task (recorder/tasks.py) runs recover_spool() with a `finish` of its
  own: the call is ended as cut short and the decode queued as the node's finalisation.

The rules of recover_spool(), the same for both:

- a spool that is gone already is nothing to do;
- its Call row is the one its manifest names; a spool whose call QMS has no row for is set
  aside in ORPHANED, once, and logged, for a person to look at;
- a call whose recording is already stored (Recording.is_stored) only loses its spool;
  any other is finished as a partial recording that says `reason`;
- anything else that goes wrong, short of a database out of reach (raised, so that the
  caller tries again later), sets the spool aside in FAILED, marks its call's recording
  failed and parks the reason (ParkedEvent): one bad spool never stops a capture from
  starting, and is not tried again at every start.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from django.db import DatabaseError, transaction

from integrations.bounds import clean_text
from integrations.observations import Side
from qms.lib.database import TRANSIENT
from recorder.engine.calls import moment
from recorder.engine.codec import media_from_json
from recorder.media.rtplog import is_spool, pcm_folder, read_manifest, remove_spool
from recorder.models import Call, Recording
from recorder.nodes.alerts import park
from recorder.nodes.models import ParkedEvent, PendingFinalisation
from recorder.recordings.finish import (
    finish_recording,
    local_side_of,
    write_recording_row,
)

log = logging.getLogger(__name__)

# Where spools whose call is unknown are set aside, once, for a person to look at.
ORPHANED = "_orphaned"
# Where spools that could not be finished are set aside, with a ParkedEvent saying why.
FAILED = "_failed"

# What becomes of a leftover spool whose call is known: (call, spool, reason) -> recording.
Finish = Callable[[Call, Path, PendingFinalisation.Reason], Recording | None]


def leftover_spools(root: Path) -> list[Path]:
    """The spools under `root`, oldest first (their names start with the call's start):
    log files, and folders of the earlier layout with a manifest. Names that start with
    "_" (ORPHANED, FAILED) or "." are never spools."""
    if not root.is_dir():
        return []
    return sorted(
        path for path in root.iterdir() if not path.name.startswith(("_", ".")) and is_spool(path)
    )


def recover_spools(root: Path) -> list[Recording]:
    """Finish, as partial recordings, the spools a killed capture process left under `root`:
    `sniff` and `import_pcap` call it before they capture."""
    recovered = []
    for spool in leftover_spools(root):
        recording = recover_spool(spool, PendingFinalisation.Reason.CAPTURE_CRASHED)
        if recording is not None:
            log.warning("recovered a partial recording of call %s", recording.call_id)
            recovered.append(recording)
    return recovered


def recover_spool(
    spool: Path,
    reason: PendingFinalisation.Reason,
    finish: Finish | None = None,
    node: str = "",
) -> Recording | None:
    """One spool a stopped capture process left, by the rules above: the recording made of
    it, if it was made now. `finish` does what becomes of a spool whose call is known
    (default: finish_partial, in this process); `node` names the node in a ParkedEvent."""
    # The loop's edge: whatever a damaged spool raises is counted out, not the start.
    try:
        with transaction.atomic():
            call = spool_call(spool)
            if call is None:
                return None
            return (finish or finish_partial)(call, spool, reason)
    except TRANSIENT:
        raise
    except Exception as error:
        kept = set_aside_failed(spool, _call_or_none(spool), error, spool.name, node)
        log.exception("spool %s could not be finished; kept in %s", spool, kept)
        return None


def spool_call(spool: Path) -> Call | None:
    """The Call row a spool's manifest names. None for a spool that is gone, or whose call
    QMS has no row for: that one is set aside in ORPHANED (a node's events arrive in order,
    so a call unknown when its spool is recovered was never stored). ValueError (and
    OSError) for a manifest that cannot be read."""
    if not spool.exists():
        return None
    manifest = read_manifest(spool)
    if not isinstance(manifest, dict):
        raise ValueError("the spool's manifest is not a JSON object")
    call = call_named(manifest)
    if call is None:
        kept = set_aside(spool, ORPHANED)
        log.error("spool %s has no call row; kept for inspection in %s", spool, kept)
    return call


def call_named(manifest: dict) -> Call | None:
    """The Call row a spool's manifest names (its protocol, call id and start), if any."""
    try:
        return Call.objects.filter(
            protocol=str(manifest.get("protocol") or ""),
            call_id=str(manifest.get("call_id") or "")[:255],
            started_at=moment(float(manifest.get("started_at") or 0.0)),
        ).first()
    except (TypeError, ValueError, OverflowError):
        return None


def finish_partial(call: Call, spool: Path, reason: PendingFinalisation.Reason) -> Recording | None:
    """Decode a leftover spool now, as a partial recording that says why."""
    return finish_spool(call, spool, None, PendingFinalisation.Reason(reason).label)


def finish_spool(
    call: Call, spool: Path, local_side: Side | None, partial: str = ""
) -> Recording | None:
    """The call's recording from its spool, safely again: a call whose recording is stored
    already only loses its spool. `partial`, when given, is why the recording is partial.
    The caller holds the transaction: the spool goes only once the row is committed."""
    stored = Recording.objects.filter(signalling=call).first()
    if stored is not None and stored.is_stored():
        # Stored and committed, then stopped before the spool was removed: nothing to redo.
        remove_spool(spool)
        return None
    return finish_recording(call, spool, media_from_json(call.media), local_side, partial)


def set_aside_failed(
    spool: Path, call: Call | None, error: Exception, subject: str, node: str = ""
) -> Path:
    """A spool that could not be finished would fail every new attempt: it goes to FAILED
    for a person to look at, its call's recording says failed, and the reason is parked."""
    kept = set_aside(spool, FAILED)
    try:
        mark_failed(call, error)
    except DatabaseError as second:
        log.error("the recording of spool %s could not be marked failed: %s", kept, second)
    park(ParkedEvent.Kind.SPOOL, subject, error, {"spool": str(spool), "kept": str(kept)}, node)
    return kept


def mark_failed(call: Call | None, error: Exception) -> None:
    """The call's recording says it failed, and why, so that a supervisor sees a failed
    recording rather than none, or one that says "recording" for ever. A recording that is
    stored already stays as it is."""
    if call is None:
        return
    detail = clean_text(f"could not be finished: {type(error).__name__}: {error}", 200)
    with transaction.atomic():
        # The upsert locks the row until the transaction ends.
        recording = write_recording_row(call, local_side_of(call, None))
        if not Recording.objects.get(pk=recording.pk).is_stored():
            Recording.objects.filter(pk=recording.pk).update(
                status=Recording.Status.FAILED, status_detail=detail
            )


def set_aside(spool: Path, folder: str) -> Path:
    """Move a spool into `folder` (ORPHANED or FAILED) beside it, for a person to look at."""
    kept = spool.parent / folder / spool.name
    kept.parent.mkdir(exist_ok=True)
    remove_spool(kept)
    spool.rename(kept)
    pcm = pcm_folder(spool)
    if pcm.exists():
        shutil.rmtree(pcm, ignore_errors=True)
    return kept


def _call_or_none(spool: Path) -> Call | None:
    """The call of a spool that failed, if its manifest names one."""
    try:
        manifest = read_manifest(spool)
    except (OSError, ValueError):
        return None
    return call_named(manifest) if isinstance(manifest, dict) else None
