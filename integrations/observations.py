"""What the call systems tell QMS, as plain data.

Every source (SIP, Cisco SCCP, Lync, the ShoreTel TAPI bridge) turns its own messages into
these types, and only these types leave a decoder. They import nothing from Django so
decoders stay pure and can be fed raw bytes in tests and fuzzers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, TypeVar

Frozen = TypeVar("Frozen", bound=type)


def direct_init(cls: Frozen) -> Frozen:
    """The frozen dataclass `cls`, with an __init__ that stores each field straight into the
    instance: through the slot's own descriptor, or into the instance dict of a class without
    slots. The __init__ dataclasses writes for a frozen class calls object.__setattr__ for
    every field (a frozen instance refuses plain assignment), 1,270 instructions a field
    under callgrind against 600 through the descriptor, and the capture loop fills about
    400,000 fields so on the 1,000-call pcap's SIP alone.

    The new __init__ takes the same parameters, with the same defaults, as dataclasses' own
    (kept as its `__wrapped__`, which inspect.signature shows); the class stays frozen and
    compares, hashes, prints and pickles as before. Only for plain fields: none with a
    default_factory, init=False or kw_only, and no __post_init__.
    """
    generated = cls.__init__
    fields = dataclasses.fields(cls)
    names = [field.name for field in fields]
    plain = all(f.init and not f.kw_only and f.default_factory is MISSING for f in fields)
    if not (cls.__dataclass_params__.frozen and plain) or hasattr(cls, "__post_init__"):
        raise TypeError(f"direct_init takes a frozen dataclass of plain fields: {cls}")
    if "self" in names or "stored" in names:
        raise TypeError(f"direct_init needs the names self and stored: {cls}")
    if "__slots__" in cls.__dict__:
        namespace = {f"set_{name}": cls.__dict__[name].__set__ for name in names}
        stores = [f"    set_{name}(self, {name})" for name in names]
    else:
        namespace = {}
        stores = ["    stored = self.__dict__", *(f"    stored[{n!r}] = {n}" for n in names)]
    source = "\n".join([f"def __init__(self, {', '.join(names)}):", *stores, "    pass"])
    # The source is made of the class's own field names, which are identifiers.
    exec(source, namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__defaults__ = generated.__defaults__
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__wrapped__ = generated
    cls.__init__ = init
    return cls


class CallProtocol(StrEnum):
    """Which call system a call was followed through, as Call.protocol stores it."""

    SIP = "sip"
    SCCP = "sccp"
    LYNC = "lync"
    TAPI = "tapi"
    # RTP of a known phone whose signalling is not on the wire (a ShoreTel phone's, which
    # the TAPI feed describes): the engine makes up an unsignalled call for it.
    RTP = "rtp"


# An unsignalled call's id begins with this (the engine writes rtp:<phone>:<far>:<second>):
# the ShoreTel integration finds by it the recordings its TAPI calls explain.
UNSIGNALLED_CALL_PREFIX: Final = f"{CallProtocol.RTP}:"


class CallState(StrEnum):
    """Where a call stands, as the engine tracks it and Call.state stores it."""

    SETUP = "setup"
    RINGING = "ringing"
    CONNECTED = "connected"
    HELD = "held"
    ENDED = "ended"


class CallDirection(StrEnum):
    """Which way a call goes as seen from the recorded phones: placed by one (outbound),
    to one (inbound), or between two of them (internal); unknown while no side is a
    phone QMS knows."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"
    UNKNOWN = ""


class BindingSource(StrEnum):
    """Where an (extension, IP) fact was learned (rule R6)."""

    SIP_REGISTER = "sip-register"
    SIP_CALL = "sip-call"
    SCCP = "sccp"
    TAPI = "tapi"
    LYNC = "lync"
    STATIC = "static"


@direct_init
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
    # Other forms in which the same message wrote the same user, tried in order when the
    # directory does not hold `extension` (a Lync line URI tel:+14255550100;ext=100 gives
    # extension "100" and alias "+14255550100"; a Lync From gives the SIP user name and
    # its P-Asserted-Identity the number). Each is exactly as written (R4).
    aliases: tuple[str, ...] = ()
    # The call server that vouched for the sighting, as the packets show it: the address
    # that answered the REGISTER with a 2xx, or the CallManager of the SCCP session. Empty
    # where no call server speaks (a call's From, TAPI, the directory itself).
    authority: str = ""


@direct_init
@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address and port, as on the wire (IPv6 in its compressed text form)."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


class Side(StrEnum):
    """The two parties of a call, as the signalling names them."""

    CALLER = "caller"
    CALLEE = "callee"

    @property
    def other(self) -> Side:
        """The far party of this one: the callee's is the caller, and the other way round."""
        return Side.CALLEE if self is Side.CALLER else Side.CALLER


@direct_init
@dataclass(frozen=True, slots=True)
class MediaOffer:
    """Where one party of a call receives RTP: an SDP `m=audio` line (RFC 4566), an SCCP
    OpenReceiveChannelAck (the phone) or StartMediaTransmission (the far end).

    `payload_types` maps RTP payload type to encoding name and clock rate as the
    signalling gave them, e.g. ((0, "PCMU/8000"), (101, "telephone-event/8000")).
    `mode` is the SDP direction attribute: sendrecv, sendonly, recvonly or inactive.
    """

    side: Side
    receive_at: Endpoint
    payload_types: tuple[tuple[int, str], ...] = ()
    mode: str = "sendrecv"
    encrypted: bool = False


class CallEvent(StrEnum):
    START = "start"
    RINGING = "ringing"
    ANSWER = "answer"
    MEDIA = "media"
    HOLD = "hold"
    RESUME = "resume"
    TRANSFER = "transfer"
    END = "end"


@direct_init
@dataclass(frozen=True, slots=True)
class CallSignal:
    """One step of one call, from any call system.

    `call_id` is unique per call and protocol: the SIP Call-ID, `sccp:<device>:<callref>`,
    or for an unsignalled call UNSIGNALLED_CALL_PREFIX and its addresses.
    Parties are written exactly as the signalling wrote them (R4). `local_side` says
    which party is the monitored phone when the protocol knows it (SCCP and TAPI speak
    for one phone); for SIP it is empty and the engine decides from the directory which
    side is a known phone. `media` carries the offers this step announced (START, MEDIA,
    ANSWER, HOLD, RESUME may all carry SDP). `reason` explains an END (bye, cancel,
    486, onhook, ...) or names a TRANSFER target.
    """

    call_id: str
    event: CallEvent
    at: datetime
    protocol: CallProtocol
    caller: str = ""
    caller_name: str = ""
    callee: str = ""
    callee_name: str = ""
    local_side: Side | None = None
    caller_ip: str = ""
    callee_ip: str = ""
    media: tuple[MediaOffer, ...] = ()
    reason: str = ""
    # The call this one takes over, when the signalling says so (an INVITE with an
    # RFC 3891 Replaces header, as an attended transfer sends).
    replaces_call_id: str = ""
    # A call of the same conversation that this one does not take over: both go on (an
    # SCCP consult call placed with the Transfer or Confrn key on that call, calls joined
    # with Join or DirTrfr, the next segment of a call whose far party changed). The
    # engine gives this call that call's conversation id, on any step that carries it.
    joins_call_id: str = ""


@direct_init
@dataclass(frozen=True, slots=True)
class EncryptedSignallingSeen:
    """A phone talking to its call system over TLS (SIP on 5061, secure SCCP on 2443):
    QMS can see that it exists but cannot read its extensions or calls."""

    ip: str
    protocol: str
    seen_at: datetime


Observation = BindingSeen | CallSignal
