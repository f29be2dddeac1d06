"""A call's protocol, state and direction are the engine's own words
(integrations.observations): Django's choices are those values with labels, so every row the
engine and the integrations write is one of Call's choices."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from extensions.models import Phone
from integrations.observations import CallDirection, CallProtocol, CallState
from recorder.models import Call

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def call_of(protocol: str, **fields: object) -> Call:
    return Call(protocol=protocol, call_id="a-call@pbx", started_at=AT, **fields)


def test_call_protocol_choices_cover_every_protocol() -> None:
    choices = {value for value, _label in Call._meta.get_field("protocol").choices}
    assert choices == {protocol.value for protocol in CallProtocol}


def test_call_state_and_direction_choices_are_the_engines_values_in_its_order() -> None:
    assert Call.State.values == [state.value for state in CallState]
    assert Call.Direction.values == [direction.value for direction in CallDirection]


def test_every_phone_protocol_is_a_call_protocol() -> None:
    assert set(Phone.Protocol.values) <= {protocol.value for protocol in CallProtocol}


@pytest.mark.parametrize("protocol", list(CallProtocol))
@pytest.mark.parametrize("state", list(CallState))
def test_a_call_in_any_protocol_and_state_passes_the_field_checks(
    protocol: CallProtocol, state: CallState
) -> None:
    call_of(protocol, state=state, direction=CallDirection.UNKNOWN).clean_fields()


@pytest.mark.parametrize("direction", list(CallDirection))
def test_a_call_in_any_direction_passes_the_field_checks(direction: CallDirection) -> None:
    call_of(CallProtocol.SIP, direction=direction).clean_fields()


def test_a_protocol_no_source_writes_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        call_of("h323").clean_fields()
    assert list(refused.value.message_dict) == ["protocol"]


def test_the_django_choices_store_what_the_enums_say() -> None:
    call = call_of(CallProtocol.LYNC, state=CallState.HELD, direction=CallDirection.INTERNAL)
    assert (call.protocol, call.state, call.direction) == (
        Call.Protocol.LYNC,
        Call.State.HELD,
        Call.Direction.INTERNAL,
    )
    assert call.get_protocol_display() == "Lync / Skype for Business"
    assert call.get_state_display() == "on hold"
