"""The words every source and the engine share (integrations/observations.py)."""

from __future__ import annotations

import json

from integrations.observations import (
    UNSIGNALLED_CALL_PREFIX,
    CallDirection,
    CallProtocol,
    CallState,
    Side,
)


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
