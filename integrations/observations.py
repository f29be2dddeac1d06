"""What the call systems tell QMS, as plain data.

Every source (SIP, Cisco SCCP, Lync, the ShoreTel TAPI bridge) turns its own messages into
these types, and only these types leave a decoder. They import nothing from Django so
decoders stay pure and can be fed raw bytes in tests and fuzzers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class BindingSource(StrEnum):
    """Where an (extension, IP) fact was learned (rule R6)."""

    SIP_REGISTER = "sip-register"
    SIP_CALL = "sip-call"
    SCCP = "sccp"
    TAPI = "tapi"
    LYNC = "lync"
    STATIC = "static"


@dataclass(frozen=True, slots=True)
class BindingSeen:
    """One sighting of an extension at a phone IP.

    `extension` is exactly as the call system wrote it (rule R4): decoders never reformat.
    `expires_in` is the lifetime the call system granted, in seconds, when it gave one
    (SIP Expires); None means "use the configured default". `unregister` is true for a SIP
    `Expires: 0` or an SCCP Unregister. `device` is the phone's own identity when the
    protocol carries one (an SCCP device name, a SIP instance id), and `line_number` the
    line the extension sits on when the protocol says so (SCCP LineStat, TAPI).
    """

    extension: str
    ip: str
    source: BindingSource
    seen_at: datetime
    expires_in: int | None = None
    unregister: bool = False
    device: str = ""
    line_number: int | None = None
