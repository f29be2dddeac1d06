"""Cisco SCCP (Skinny) station protocol: a pure decoder, a stream framer and a session tracker.

Nothing here imports Django or touches a database: bytes go in, observations
(`integrations.observations`) come out. See docs/sccp.md for what QMS reads from Skinny.
"""

from __future__ import annotations

from integrations.sccp.framing import SccpFrame, SccpStreamFramer
from integrations.sccp.messages import SccpDecodeError, decode_message, message_name
from integrations.sccp.tracker import SccpTracker

__all__ = [
    "SccpDecodeError",
    "SccpFrame",
    "SccpStreamFramer",
    "SccpTracker",
    "decode_message",
    "message_name",
]
