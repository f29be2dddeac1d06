"""Is the stored audio the audio that was recorded? Its SHA-256 against the one kept then."""

from __future__ import annotations

import hashlib
from contextlib import closing
from dataclasses import dataclass
from enum import StrEnum

from recorder.models import Recording
from recorder.recordings.archive import open_stream

HASH_BLOCK_BYTES = 1 << 16


class IntegrityState(StrEnum):
    VERIFIED = "verified"
    MISMATCH = "mismatch"
    MISSING = "missing"
    UNKNOWN = "unknown"  # No SHA-256 was kept when the recording was stored.


MESSAGES = {
    IntegrityState.VERIFIED: "Verified: the file's SHA-256 matches the one stored when it "
    "was recorded.",
    IntegrityState.MISMATCH: "MISMATCH: the file's SHA-256 differs from the one stored when "
    "it was recorded. The audio has been changed or damaged since.",
    IntegrityState.MISSING: "The audio file is missing from storage.",
    IntegrityState.UNKNOWN: "Not verifiable: no SHA-256 was stored with this recording.",
}


@dataclass(frozen=True)
class Integrity:
    state: IntegrityState
    stored: str
    computed: str = ""

    @property
    def message(self) -> str:
        return MESSAGES[self.state]

    @property
    def ok(self) -> bool:
        return self.state == IntegrityState.VERIFIED


def verify(recording: Recording) -> Integrity:
    """Hash the stored file now, streamed in blocks, and compare it with the stored value."""
    stored = recording.sha256
    if not recording.file:
        return Integrity(IntegrityState.MISSING, stored)
    try:
        computed = _sha256(recording)
    except FileNotFoundError:
        return Integrity(IntegrityState.MISSING, stored)
    if not stored:
        return Integrity(IntegrityState.UNKNOWN, stored, computed)
    state = IntegrityState.VERIFIED if computed == stored else IntegrityState.MISMATCH
    return Integrity(state, stored, computed)


def _sha256(recording: Recording) -> str:
    digest = hashlib.sha256()
    # Streamed, block by block: a bucket's object is never held whole to be hashed.
    with closing(open_stream(recording.file.storage, recording.file.name)) as audio:
        while block := audio.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
