"""The observations' JSON: every observation comes back from its JSON text unchanged, and
JSON an older writer left (without the keys added since) still reads."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallEvent,
    CallProtocol,
    EncryptedSignallingSeen,
    Endpoint,
    MediaOffer,
    Side,
)
from recorder.engine.calls import CallSnapshot
from recorder.engine.codec import (
    binding_from_json,
    binding_json,
    encrypted_from_json,
    encrypted_json,
    media_from_json,
    media_json,
    snapshot_from_json,
    snapshot_json,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=2**31)
words = st.text(max_size=20)
addresses = st.ip_addresses().map(str)

offers = st.builds(
    MediaOffer,
    side=st.sampled_from(Side),
    receive_at=st.builds(Endpoint, addresses, st.integers(0, 65535)),
    payload_types=st.lists(st.tuples(st.integers(0, 127), words), max_size=4).map(tuple),
    mode=st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    encrypted=st.booleans(),
)

bindings = st.builds(
    BindingSeen,
    extension=words,
    ip=addresses,
    source=st.sampled_from(BindingSource),
    seen_at=moments,
    expires_in=st.none() | counts,
    unregister=st.booleans(),
    device=words,
    line_number=st.none() | st.integers(1, 64),
    aliases=st.lists(words, max_size=3).map(tuple),
    authority=st.just("") | addresses,
)

snapshots = st.builds(
    CallSnapshot,
    call_id=words,
    protocol=st.sampled_from(CallProtocol),
    event=st.sampled_from(CallEvent),
    started_at=timestamps,
    answered_at=st.none() | timestamps,
    ended_at=st.none() | timestamps,
    end_reason=words,
    state=words,
    direction=words,
    caller=words,
    caller_name=words,
    callee=words,
    callee_name=words,
    caller_ip=addresses,
    callee_ip=addresses,
    local_ip=addresses,
    local_number=words,
    media=st.lists(offers, max_size=4).map(tuple),
    spool=words,
    local_side=st.none() | st.sampled_from(Side),
    conversation_id=words,
)

sightings = st.builds(
    EncryptedSignallingSeen, ip=addresses, protocol=st.sampled_from(["sip-tls"]), seen_at=moments
)


def through_text(found: object) -> object:
    """What a reader gets back of what was written: the outbox and the broker keep text."""
    return json.loads(json.dumps(found))


@given(bindings)
def test_a_binding_comes_back_from_its_json_unchanged(seen: BindingSeen) -> None:
    assert binding_from_json(through_text(binding_json(seen))) == seen


@given(snapshots)
def test_a_call_snapshot_comes_back_from_its_json_unchanged(snapshot: CallSnapshot) -> None:
    assert snapshot_from_json(through_text(snapshot_json(snapshot))) == snapshot


@given(sightings)
def test_an_encrypted_phone_comes_back_from_its_json_unchanged(
    seen: EncryptedSignallingSeen,
) -> None:
    assert encrypted_from_json(through_text(encrypted_json(seen))) == seen


@given(st.lists(offers, max_size=4).map(tuple))
def test_a_call_row_s_media_comes_back_as_the_offers_it_kept(
    media: tuple[MediaOffer, ...],
) -> None:
    kept = through_text([media_json(offer) for offer in media])
    assert media_from_json(kept) == media


def test_media_an_older_writer_kept_without_mode_or_codecs_reads_with_the_defaults() -> None:
    kept = [{"side": "caller", "ip": "10.0.0.1", "port": 4000}]
    assert media_from_json(kept) == (MediaOffer(Side.CALLER, Endpoint("10.0.0.1", 4000)),)


def test_a_binding_an_older_writer_kept_without_aliases_or_authority_reads() -> None:
    kept = {"extension": "9001", "ip": "10.0.0.11", "source": "sip-register",
            "seen_at": "2026-11-26T09:30:15+00:00", "expires_in": 3600}  # fmt: skip
    seen_at = datetime(2026, 11, 26, 9, 30, 15, tzinfo=UTC)
    expected = BindingSeen("9001", "10.0.0.11", BindingSource.SIP_REGISTER, seen_at, 3600)
    assert binding_from_json(kept) == expected


def test_the_codec_imports_no_django() -> None:
    # None in sys.modules makes any import of the name fail.
    probe = "import sys; sys.modules['django'] = None; import recorder.engine.codec"
    subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, check=True)
