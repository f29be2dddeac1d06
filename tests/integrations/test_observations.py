"""The words every source and the engine share (integrations/observations.py)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.observations import (
    UNSIGNALLED_CALL_PREFIX,
    BindingSeen,
    CallDirection,
    CallProtocol,
    CallSignal,
    CallState,
    EncryptedSignallingSeen,
    Endpoint,
    MediaOffer,
    Side,
    direct_init,
)
from integrations.sip.calls import Refusal
from integrations.sip.message import CSeq, SipMessage
from integrations.sip.registrations import PendingRegister
from integrations.sip.sdp import MediaDescription, SessionDescription
from integrations.sip.tracker import Packet
from integrations.sip.uri import NameAddr, SipUri, Via
from recorder.engine.calls import CallSnapshot


def test_the_other_side_of_a_party_is_the_far_party() -> None:
    assert Side.CALLER.other is Side.CALLEE
    assert Side.CALLEE.other is Side.CALLER
    assert all(side.other.other is side for side in Side)


def test_the_words_are_their_strings_in_json_and_in_comparisons() -> None:
    words = [CallProtocol.LYNC, CallState.CONNECTED, CallDirection.INBOUND, CallDirection.UNKNOWN]
    assert json.loads(json.dumps(words)) == ["lync", "connected", "inbound", ""]
    assert json.loads(json.dumps(words)) == words
    assert CallProtocol("rtp") is CallProtocol.RTP


def test_an_unsignalled_call_id_begins_with_its_protocol() -> None:
    assert UNSIGNALLED_CALL_PREFIX == "rtp:"
    assert UNSIGNALLED_CALL_PREFIX.partition(":")[0] == CallProtocol.RTP


# Every class whose __init__ direct_init wrote, beside the __init__ dataclasses wrote for it.
DIRECT_INIT_CLASSES = [
    BindingSeen,
    Endpoint,
    MediaOffer,
    CallSignal,
    EncryptedSignallingSeen,
    SipUri,
    NameAddr,
    Via,
    CSeq,
    SipMessage,
    MediaDescription,
    SessionDescription,
    Packet,
    PendingRegister,
    Refusal,
    CallSnapshot,
]
FIELD_VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=8), st.binary(max_size=8))


@given(
    data=st.data(),
    cls=st.sampled_from(DIRECT_INIT_CLASSES),
    by_name=st.booleans(),
)
def test_a_direct_init_makes_what_the_dataclass_init_makes(
    data: st.DataObject, cls: type, by_name: bool
) -> None:
    fields = dataclasses.fields(cls)
    required = sum(f.default is dataclasses.MISSING for f in fields)
    given_count = data.draw(st.integers(required, len(fields)))
    values = [data.draw(FIELD_VALUES) for _ in range(given_count)]
    names = [f.name for f in fields[:given_count]]
    expected = object.__new__(cls)
    cls.__init__.__wrapped__(expected, *values)
    made = cls(**dict(zip(names, values, strict=True))) if by_name else cls(*values)
    assert made == expected
    for field in fields:
        assert getattr(made, field.name) is getattr(expected, field.name)
    assert repr(made) == repr(expected)
    assert pickle.loads(pickle.dumps(made)) == expected


@pytest.mark.parametrize("cls", DIRECT_INIT_CLASSES)
def test_a_class_with_a_direct_init_stays_frozen_and_takes_what_it_took(cls: type) -> None:
    fields = dataclasses.fields(cls)
    made = cls(*range(len(fields)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, fields[0].name, "changed")
    with pytest.raises(TypeError):
        cls(*range(len(fields) + 1))
    with pytest.raises(TypeError):
        cls(nonsense=1)
    written = inspect.signature(cls.__init__, follow_wrapped=False).parameters.values()
    generated = inspect.signature(cls.__init__.__wrapped__).parameters.values()
    assert [(p.name, p.kind, p.default) for p in written] == [
        (p.name, p.kind, p.default) for p in generated
    ]


def test_direct_init_refuses_what_it_cannot_write() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithFactory:
        items: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass
    class NotFrozen:
        number: int

    for cls in (WithFactory, NotFrozen):
        with pytest.raises(TypeError):
            direct_init(cls)
