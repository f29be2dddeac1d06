"""Is the stored audio the audio that was recorded? Its SHA-256 against the one kept then.

The SHA-256 is of the plain audio, the file a player gets: the same before and after a
file is sealed in place and whatever key wraps its data key, so it stays the evidence (and
the ETag) through encrypt_recordings and rotate_recording_keys. A sealed file is read
through its chunks, so checking it also checks every chunk's tag and the header's wrap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from recorder.media.sealed import SealedFileError
from recorder.models import Recording
from recorder.recordings.encryption import stored_audio


class IntegrityState(StrEnum):
    VERIFIED = "verified"
    MISMATCH = "mismatch"
    MISSING = "missing"
    # A sealed file that cannot be opened: a chunk or the header altered, the file cut,
    # its key not configured.
    UNREADABLE = "unreadable"
    UNKNOWN = "unknown"  # No SHA-256 was kept when the recording was stored.


MESSAGES = {
    IntegrityState.VERIFIED: "Verified: the file's SHA-256 matches the one stored when it "
    "was recorded.",
    IntegrityState.MISMATCH: "MISMATCH: the file's SHA-256 differs from the one stored when "
    "it was recorded. The audio has been changed or damaged since.",
    IntegrityState.MISSING: "The audio file is missing from storage.",
    IntegrityState.UNREADABLE: "UNREADABLE: the encrypted file cannot be opened as it was "
    "written. The audio has been changed or damaged since, or its key is not configured.",
    IntegrityState.UNKNOWN: "Not verifiable: no SHA-256 was stored with this recording.",
}


@dataclass(frozen=True)
class Integrity:
    state: IntegrityState
    stored: str
    computed: str = ""
    # Why an encrypted file could not be read, in a sentence.
    problem: str = ""

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
    except SealedFileError as error:
        return Integrity(IntegrityState.UNREADABLE, stored, problem=str(error))
    if not stored:
        return Integrity(IntegrityState.UNKNOWN, stored, computed)
    state = IntegrityState.VERIFIED if computed == stored else IntegrityState.MISMATCH
    return Integrity(state, stored, computed)


def _sha256(recording: Recording) -> str:
    digest = hashlib.sha256()
    # Streamed, block by block: a bucket's object is never held whole to be hashed.
    for block in stored_audio(recording).every_plain_byte():
        digest.update(block)
    return digest.hexdigest()
