"""The wire's bounds (integrations/bounds.py): whatever text a stranger writes, a bounded
observation carries no NUL, control or lone surrogate, fits the column it ends up in, and
keeps an extension exactly as written (rule R4) or is refused.

The columns are read from the models themselves, so a column made shorter is caught here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extensions.models import Binding, Extension, SeenExtension
from integrations import bounds
from integrations.bounds import (
    CUT_MARK,
    DIALABLE,
    REPLACEMENT,
    SIP_USER_NAME,
    UNSAFE,
    Refused,
    bounded,
    clean_address,
    clean_text,
    is_dotted_quad,
)
from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallEvent,
    CallProtocol,
    CallSignal,
    Endpoint,
    MediaOffer,
    Side,
)
from recorder.models import Call, Recording

AT = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
# What a stranger can put in a header: any code point, lone surrogates (invalid UTF-8
# decoded with surrogateescape) included, and the characters the audit used most.
HOSTILE_CHARACTERS = st.one_of(
    st.characters(exclude_categories=()),
    st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ud800", "\udfff", "<", "=", "%"]),
)
SHORT_TEXT = st.text(HOSTILE_CHARACTERS, max_size=300)
# Up to 10,000 characters, built by repetition: drawing each one would outgrow the buffer
# hypothesis draws from.
LONG_TEXT = st.tuples(st.text(HOSTILE_CHARACTERS, min_size=1, max_size=12), st.integers(1, 10_000))
HOSTILE_TEXT = st.one_of(SHORT_TEXT, LONG_TEXT.map(lambda pair: (pair[0] * pair[1])[:10_000]))
HOSTILE_ADDRESS = st.one_of(HOSTILE_TEXT, st.ip_addresses().map(str), st.just(""))
TIMES = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1), timezones=st.just(UTC)
)


def column(model: type, name: str) -> int:
    return model._meta.get_field(name).max_length


def is_safe(text: str) -> bool:
    """No NUL, control (but tab) or surrogate: what PostgreSQL, jsonb and a log line take."""
    return all(
        char == "\t" or not (ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F) for char in text
    ) and not any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def stores_in(text: str, limit: int) -> bool:
    return is_safe(text) and len(text) <= limit


def is_inet(text: str) -> bool:
    """Empty (the column's NULL) or an address an inet column takes (Django drops an IPv6
    zone before it gets there)."""
    if text == "":
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


offers = st.builds(
    MediaOffer,
    side=st.sampled_from(Side),
    receive_at=st.builds(Endpoint, HOSTILE_ADDRESS, st.integers(0, 65535)),
    payload_types=st.lists(st.tuples(st.integers(0, 127), HOSTILE_TEXT), max_size=40).map(tuple),
    mode=HOSTILE_TEXT,
    encrypted=st.booleans(),
)
signals = st.builds(
    CallSignal,
    call_id=HOSTILE_TEXT,
    event=st.sampled_from(CallEvent),
    at=TIMES,
    protocol=st.one_of(st.sampled_from(["sip", "sccp", "lync", "tapi"]), HOSTILE_TEXT),
    caller=HOSTILE_TEXT,
    caller_name=HOSTILE_TEXT,
    callee=HOSTILE_TEXT,
    callee_name=HOSTILE_TEXT,
    local_side=st.sampled_from([None, Side.CALLER, Side.CALLEE]),
    caller_ip=HOSTILE_ADDRESS,
    callee_ip=HOSTILE_ADDRESS,
    media=st.lists(offers, max_size=10).map(tuple),
    reason=HOSTILE_TEXT,
    replaces_call_id=HOSTILE_TEXT,
    joins_call_id=HOSTILE_TEXT,
)


@settings(max_examples=60, deadline=None)
@given(signals)
def test_every_text_of_a_bounded_call_signal_stores_in_its_column(signal: CallSignal) -> None:
    kept = bounded(signal)
    assert stores_in(kept.call_id, column(Call, "call_id"))
    assert stores_in(kept.replaces_call_id, column(Call, "call_id"))
    assert stores_in(kept.joins_call_id, column(Call, "conversation_id"))
    assert stores_in(kept.protocol, column(Call, "protocol"))
    for name in ("caller", "caller_name", "callee", "callee_name"):
        assert stores_in(getattr(kept, name), column(Call, name)), name
    if kept.event == CallEvent.END:
        assert stores_in(kept.reason, column(Call, "end_reason"))
    else:  # a transfer's target, kept as the URI it names
        assert is_safe(kept.reason) and len(kept.reason) <= column(Call, "call_id")
    assert is_inet(kept.caller_ip) and is_inet(kept.callee_ip)


@settings(max_examples=60, deadline=None)
@given(offers)
def test_every_text_of_a_bounded_media_offer_stores_in_the_call_and_its_recording(
    offer: MediaOffer,
) -> None:
    (kept,) = bounded(CallSignal("c1", CallEvent.START, AT, "sip", media=(offer,))).media
    assert is_inet(kept.receive_at.ip)
    assert kept.mode in {"sendrecv", "sendonly", "recvonly", "inactive"}
    for _number, name in kept.payload_types:
        assert stores_in(name, column(Recording, "codec"))


bindings = st.builds(
    BindingSeen,
    extension=HOSTILE_TEXT,
    ip=HOSTILE_ADDRESS,
    source=st.sampled_from(BindingSource),
    seen_at=TIMES,
    expires_in=st.one_of(st.none(), st.integers(-(2**63), 2**63)),
    unregister=st.booleans(),
    device=HOSTILE_TEXT,
    line_number=st.one_of(st.none(), st.integers(-(2**31), 2**31)),
    aliases=st.lists(HOSTILE_TEXT, max_size=10).map(tuple),
)


@settings(max_examples=80, deadline=None)
@given(bindings)
def test_a_bounded_binding_stores_in_the_directory_or_is_refused(seen: BindingSeen) -> None:
    try:
        kept = bounded(seen)
    except Refused as refused:
        assert refused.kind in {"bad-extension", "bad-address", "bad-time"}
        return
    assert kept.extension == seen.extension  # R4: never reformatted, only kept or refused
    assert stores_in(kept.extension, column(Extension, "number"))
    assert column(Extension, "number") <= column(SeenExtension, "number")
    assert column(Extension, "number") <= column(Binding, "extension_number")
    assert is_inet(kept.ip) and kept.ip != ""
    assert stores_in(kept.device, column(Binding, "device"))
    assert kept.line_number is None or 1 <= kept.line_number <= 32767
    for alias in kept.aliases:
        assert alias in seen.aliases and stores_in(alias, column(Extension, "number"))


@settings(max_examples=50, deadline=None)
@given(signals)
def test_bounding_twice_changes_nothing_more(signal: CallSignal) -> None:
    once = bounded(signal)
    assert bounded(once) == once


def binding(extension: str) -> BindingSeen:
    return BindingSeen(extension, "10.20.0.11", BindingSource.SIP_REGISTER, AT, 3600)


@pytest.mark.parametrize(
    "extension",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        '=HYPERLINK("http://evil.example","9001")',
        "=1+1",
        "@SUM(A1)",
        "1" * 200,
        "",
        "90\x0001",
        "9001\ud800",
        "john smith",
        "9001;drop",
    ],
)
def test_a_binding_whose_extension_breaks_r4_is_refused_as_bad_extension(extension: str) -> None:
    with pytest.raises(Refused) as refused:
        bounded(binding(extension))
    assert refused.value.kind == "bad-extension"


@pytest.mark.parametrize(
    "extension", ["9001", "01234", "+14255550100", "*67", "#31#", "john.smith", "alice_b-2", "x"]
)
def test_a_binding_whose_extension_is_valid_passes_unchanged(extension: str) -> None:
    seen = binding(extension)
    assert bounded(seen) == seen


@settings(max_examples=50, deadline=None)
@given(
    st.one_of(
        st.from_regex(DIALABLE, fullmatch=True), st.from_regex(SIP_USER_NAME, fullmatch=True)
    ).filter(lambda text: len(text) <= column(Extension, "number"))
)
def test_any_extension_written_as_r4_allows_passes_exactly_as_written(extension: str) -> None:
    assert bounded(binding(extension)).extension == extension


def test_an_ordinary_call_signal_passes_unchanged() -> None:
    signal = CallSignal(
        "a84b4c76e66710@pc33.example.com", CallEvent.START, AT, "sip",
        caller="+1-425-555-0100", caller_name="Alice Ünal", callee="01234",
        caller_ip="10.20.0.11", callee_ip="2001:db8::1",
        media=(MediaOffer(Side.CALLER, Endpoint("10.20.0.11", 16384),
                          ((0, "PCMU/8000"), (101, "telephone-event/8000"))),),
    )  # fmt: skip
    assert bounded(signal) == signal


def test_an_over_long_call_id_stays_apart_from_another_with_the_same_prefix() -> None:
    prefix = "a" * 400
    first = bounded(CallSignal(prefix + "-first", CallEvent.START, AT, "sip"))
    second = bounded(CallSignal(prefix + "-second", CallEvent.START, AT, "sip"))
    assert first.call_id != second.call_id
    assert len(first.call_id) <= column(Call, "call_id")
    assert len(second.call_id) <= column(Call, "call_id")


@settings(max_examples=50, deadline=None)
@given(
    prefix=st.text(HOSTILE_CHARACTERS, min_size=column(Call, "call_id"), max_size=400),
    ends=st.lists(st.text(HOSTILE_CHARACTERS, max_size=20), min_size=2, max_size=2, unique=True),
)
def test_over_long_call_ids_that_differ_anywhere_stay_apart(prefix: str, ends: list[str]) -> None:
    first, second = (
        bounded(CallSignal(prefix + end, CallEvent.START, AT, "sip")).call_id for end in ends
    )
    assert first != second


def test_a_nul_in_a_caller_id_becomes_a_replacement_character() -> None:
    kept = bounded(CallSignal("c1", CallEvent.START, AT, "sip", caller="555\x00123"))
    assert kept.caller == "555\ufffd123"


def test_an_over_long_party_is_cut_to_its_column_with_a_mark() -> None:
    kept = bounded(CallSignal("c1", CallEvent.START, AT, "sip", caller_name="<b>" * 3000))
    assert len(kept.caller_name) == column(Call, "caller_name")
    assert kept.caller_name.endswith(CUT_MARK)


# -- the fast paths: the same answers as the plain rules --------------------------------------

# Any code point, lone surrogates (what invalid UTF-8 became) and controls included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=300)


@given(ANY_TEXT, st.integers(min_value=1, max_value=400))
def test_clean_text_replaces_exactly_what_the_unsafe_pattern_names(text: str, limit: int) -> None:
    replaced = UNSAFE.sub(REPLACEMENT, text)
    expected = replaced if len(replaced) <= limit else replaced[: limit - 1] + CUT_MARK
    assert clean_text(text, limit) == expected


@given(st.one_of(st.ip_addresses().map(str), ANY_TEXT, st.sampled_from(["10.0.0.1", "::1"])))
def test_a_remembered_address_check_answers_as_the_check_itself(value: str) -> None:
    try:
        ipaddress.ip_address(value)
        valid = len(value) <= 45
    except ValueError:
        valid = False
    for _ in range(2):  # the second answer comes from what was remembered
        assert clean_address(value) == (value if valid else "")


# What most of the wire is: text that needs no cleaning, addresses that are addresses.
PLAIN_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
PLAIN_ADDRESS = st.one_of(st.ip_addresses().map(str), st.just(""))
plain_offers = st.builds(
    MediaOffer,
    side=st.sampled_from(Side),
    receive_at=st.builds(Endpoint, PLAIN_ADDRESS, st.integers(0, 65535)),
    # A list where a tuple belongs is copied into a tuple, as before.
    payload_types=st.lists(
        st.tuples(st.integers(0, 127), PLAIN_TEXT) | st.lists(PLAIN_TEXT, min_size=2, max_size=2),
        max_size=4,
    ).flatmap(lambda pairs: st.sampled_from([pairs, tuple(pairs)])),
    mode=st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", "odd"]),
    encrypted=st.booleans(),
)
plain_signals = st.builds(
    CallSignal,
    call_id=PLAIN_TEXT,
    event=st.sampled_from(CallEvent),
    at=TIMES,
    protocol=st.sampled_from(CallProtocol),
    caller=PLAIN_TEXT,
    callee=PLAIN_TEXT,
    caller_ip=PLAIN_ADDRESS,
    callee_ip=st.one_of(PLAIN_ADDRESS, HOSTILE_ADDRESS),
    media=st.lists(st.one_of(plain_offers, offers), max_size=3).map(tuple),
    reason=PLAIN_TEXT,
)
plain_bindings = st.builds(
    BindingSeen,
    extension=st.sampled_from(["9001", "+14255550100", "alice", "bad ext"]),
    ip=PLAIN_ADDRESS,
    source=st.sampled_from(BindingSource),
    seen_at=TIMES,
    expires_in=st.one_of(st.none(), st.integers(-10, 10**7)),
    device=st.one_of(PLAIN_TEXT, HOSTILE_TEXT),
    line_number=st.one_of(st.none(), st.integers(-2, 2000)),
    aliases=st.lists(st.sampled_from(["100", "bob", "no way", "\x00"]), max_size=6).flatmap(
        lambda aliases: st.sampled_from([aliases, tuple(aliases)])
    ),
    authority=PLAIN_ADDRESS,
)


def bounded_or_refused(observation: object) -> object:
    try:
        kept = bounded(observation)
    except Refused as refused:
        return ("refused", refused.kind)
    return kept, repr(kept)  # the repr tells a str from a StrEnum, a tuple from a list


@settings(max_examples=600, deadline=None)
@given(st.one_of(plain_signals, plain_bindings, signals, bindings))
def test_an_observation_that_needs_no_cleaning_is_kept_as_a_copy_would_be(
    observation: object,
) -> None:
    kept = bounded_or_refused(observation)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bounds, "_with", lambda observation, **fields: replace(observation, **fields))
        patch.setattr(bounds, "_kept", lambda given, made: made)
        copied = bounded_or_refused(observation)
    assert kept == copied


DOTTED_TEXT = st.text(st.sampled_from("0123456789.٣ x:"), max_size=20)


@given(st.one_of(DOTTED_TEXT, st.ip_addresses(v=4).map(str)))
def test_a_dotted_quad_is_exactly_an_ipv4_address_that_ipaddress_writes_back_unchanged(
    text: str,
) -> None:
    try:
        written = str(ipaddress.IPv4Address(text))
    except ValueError:
        written = None
    assert is_dotted_quad(text) == (written == text)


def cleaned_field_by_field(signal: CallSignal) -> CallSignal:
    """_bounded_signal as it was before it looked at a signal's text at once: each field
    cleaned by its own call, the signal kept when each came back as it was."""
    if bounds.clean_moment(signal.at) is None:
        raise Refused("bad-time")
    reason_max = bounds.REASON_MAX if signal.event == CallEvent.END else bounds.TARGET_MAX
    return bounds._with(
        signal,
        call_id=bounds.clean_identifier(signal.call_id),
        protocol=clean_text(signal.protocol, bounds.PROTOCOL_MAX),
        caller=bounds.clean_party(signal.caller),
        caller_name=bounds.clean_party(signal.caller_name),
        callee=bounds.clean_party(signal.callee),
        callee_name=bounds.clean_party(signal.callee_name),
        caller_ip=clean_address(signal.caller_ip),
        callee_ip=clean_address(signal.callee_ip),
        media=bounds._kept(
            signal.media,
            tuple(bounds._bounded_offer(offer) for offer in signal.media[: bounds.OFFERS_MAX]),
        ),
        reason=clean_text(signal.reason, reason_max),
        replaces_call_id=bounds.clean_identifier(signal.replaces_call_id),
        joins_call_id=bounds.clean_identifier(signal.joins_call_id),
    )


# Text a decoder gives nearly always (printable, around the columns' lengths), or a stranger's.
PLAIN_OR_HOSTILE_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300), HOSTILE_TEXT
)
PLAIN_OR_HOSTILE_ADDRESS = st.one_of(st.ip_addresses().map(str), st.just(""), HOSTILE_ADDRESS)
plain_offers = st.builds(
    MediaOffer,
    side=st.sampled_from(Side),
    receive_at=st.builds(Endpoint, PLAIN_OR_HOSTILE_ADDRESS, st.integers(0, 65535)),
    payload_types=st.lists(st.tuples(st.integers(0, 127), PLAIN_OR_HOSTILE_TEXT), max_size=40).map(
        tuple
    ),
    mode=st.one_of(st.sampled_from(sorted(bounds.MODES)), HOSTILE_TEXT),
)
plain_or_hostile_signals = st.builds(
    CallSignal,
    call_id=PLAIN_OR_HOSTILE_TEXT,
    event=st.sampled_from(CallEvent),
    at=TIMES,
    protocol=st.one_of(st.sampled_from(CallProtocol), PLAIN_OR_HOSTILE_TEXT),
    caller=PLAIN_OR_HOSTILE_TEXT,
    caller_name=PLAIN_OR_HOSTILE_TEXT,
    callee=PLAIN_OR_HOSTILE_TEXT,
    callee_name=PLAIN_OR_HOSTILE_TEXT,
    caller_ip=PLAIN_OR_HOSTILE_ADDRESS,
    callee_ip=PLAIN_OR_HOSTILE_ADDRESS,
    media=st.lists(plain_offers, max_size=10).map(tuple),
    reason=PLAIN_OR_HOSTILE_TEXT,
    replaces_call_id=PLAIN_OR_HOSTILE_TEXT,
    joins_call_id=PLAIN_OR_HOSTILE_TEXT,
)


@settings(max_examples=300, deadline=None)
@given(plain_or_hostile_signals)
def test_a_signal_is_bounded_as_its_fields_cleaned_one_by_one_would_be(signal: CallSignal) -> None:
    expected = cleaned_field_by_field(signal)
    kept = bounded(signal)
    assert kept == expected
    assert (kept is signal) == (expected is signal)


def test_a_signal_whose_text_is_not_all_text_is_cleaned_into_text() -> None:
    signal = replace(CallSignal("c1", CallEvent.START, AT, CallProtocol.SIP), caller=1001)
    assert bounded(signal) == cleaned_field_by_field(signal)
    assert bounded(signal).caller == "1001"
