"""The audit trail's hash chain: each entry carries the SHA-256 of the one before it.

An entry's hash covers the hash before it and everything the entry says (when, who, what,
which recording, from where, the detail), in one canonical form that reads the same from
PostgreSQL and SQLite. Entries are chained in id order: the writer of an entry holds the
chain's head row (AuditChain) from reading the hash before until its transaction commits,
so entries are numbered in the order they are chained. `verify` walks the trail and
names every entry whose hash or link does not hold: a changed entry breaks its own hash, a
deleted one the link of the entry after it, an inserted one its own link (or it has no
hash), and cutting the trail's end leaves the head naming an entry that is gone.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The hash before the first entry of the chain.
GENESIS = "0" * 64
# Between the fields of an entry's canonical form: a byte no field's text holds.
SEPARATOR = "\x1f"


def canonical_detail(detail: object) -> str:
    """The detail as JSON in one spelling: keys sorted, no spaces, text as it is."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_ip(ip: str | None) -> str:
    if not ip:
        return ""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def digest(
    previous: str,
    at: datetime,
    user_id: int | None,
    username: str,
    action: str,
    recording_id: int | None,
    client_ip: str | None,
    detail: object,
) -> str:
    """The hash of one entry after `previous`."""
    parts = [
        previous,
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        "" if user_id is None else str(user_id),
        username,
        action,
        "" if recording_id is None else str(recording_id),
        canonical_ip(client_ip),
        canonical_detail(detail),
    ]
    return hashlib.sha256(SEPARATOR.join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def digest_of(entry, previous: str) -> str:
    """The hash of an AuditEntry (saved or about to be) after `previous`."""
    return digest(previous, entry.at, entry.user_id, entry.username, entry.action,
                  entry.recording_id, entry.client_ip, entry.detail)  # fmt: skip


@dataclass
class Verdict:
    """What `verify` found: entries looked at, the first chained one, every problem by
    entry id, and the head's hash."""

    entries: int = 0
    before_chain: int = 0
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    head: str = GENESIS

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(rows: Iterator[tuple], head_hash: str | None, head_entry: int | None) -> Verdict:
    """Walk `rows` (id, at, user_id, username, action, recording_id, client_ip, detail,
    previous_hash, entry_hash, in id order) against the chain's head."""
    verdict = Verdict()
    previous, chained, last_id = GENESIS, False, None
    for row in rows:
        pk, *fields, previous_hash, entry_hash = row
        verdict.entries += 1
        last_id = pk
        if entry_hash is None and not chained:
            verdict.before_chain += 1  # written before the trail was chained
            continue
        chained = True
        if entry_hash is None:
            verdict.problems.append((pk, "has no hash: inserted around the application"))
            continue
        if previous_hash != previous:
            verdict.problems.append(
                (pk, "does not follow the entry before it: an entry was deleted or inserted "
                     "before it")
            )  # fmt: skip
        if digest(previous_hash or "", *fields) != entry_hash:
            verdict.problems.append((pk, "was changed after it was written"))
        previous = entry_hash
    verdict.head = previous
    if chained and head_hash is None:
        verdict.problems.append((None, "the chain's head is missing: it was deleted"))
    elif head_hash is not None and (head_hash != previous or head_entry != last_id):
        verdict.problems.append(
            (head_entry, f"is the last entry the chain's head names, but the trail ends at "
                         f"entry {last_id}: entries at the end were deleted or added")
        )  # fmt: skip
    return verdict
