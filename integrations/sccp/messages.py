"""Cisco SCCP (Skinny) station messages: ids, header, and decoders for the ones QMS needs.

Sources (facts only): Wireshark `epan/dissectors/packet-skinny.c` (message-id table and
names, `dissect_skinny_ipv4or6`, `VariableDirnumSize`) with its generator data
`tools/SkinnyProtocolOptimized.xml`; Asterisk `chan_skinny.c` structs; chan-sccp-b
`sccp_protocol.h` for the legacy CallManager 2.x ids 0x008C/0x008D; and the pyskinny
captures in ../shared/captures/public. ../shared/protocols.md section 1 collects them.

Every Skinny message is a 12-byte header and a payload. All integers are u32 little-endian;
IPv4 addresses are 4 raw bytes in network order. A layout is chosen by the header version
*and* the payload length, never by the id alone: the same id has a legacy CallManager 2.x
form, a Basic form and a V17+ form with 20-byte "ipv4or6" addresses.

Decoders raise one exception type, `SccpDecodeError`, with a short `kind`. An id this module
does not decode is not an error: `decode_message` returns None for it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final


class SccpDecodeError(ValueError):
    """A Skinny message that cannot be read. `kind` is a short, countable label."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


# --- Header ----------------------------------------------------------------------------------
#
# Skinny header (packet-skinny.c; Asterisk `struct skinny_req`), 12 bytes, all u32 LE:
#
#    0                   1                   2                   3
#    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   |  length: bytes after this field and `version` (id + payload)  |  0
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   |  version: header version (0 Basic, 0x11 V17, ...)             |  4
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   |  messageId                                                    |  8
#   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#   |  payload: length - 4 bytes ...                                | 12
#
HEADER: Final = struct.Struct("<III")
HEADER_SIZE: Final = HEADER.size
# The length field counts the 4-byte messageId, so it is never below 4.
MIN_LENGTH: Final = 4

# packet-skinny.c `header_version`.
HEADER_VERSIONS: Final[dict[int, str]] = {
    0x00: "Basic",
    0x0A: "V10",
    0x0B: "V11",
    0x0F: "V15",
    0x10: "V16",
    0x11: "V17",
    0x12: "V18",
    0x13: "V19",
    0x14: "V20",
    0x15: "V21",
    0x16: "V22",
}
V11: Final = 0x0B
V17: Final = 0x11
V18: Final = 0x12


@dataclass(frozen=True, slots=True)
class SccpHeader:
    length: int
    version: int
    message_id: int

    @property
    def message_size(self) -> int:
        """Bytes of the whole message on the wire, header included."""
        return self.length + 8


def parse_header(buffer: bytes, offset: int = 0) -> SccpHeader:
    """Read the 12-byte header at `offset`; the payload may still be incomplete."""
    if len(buffer) - offset < HEADER_SIZE:
        raise SccpDecodeError("short-header")
    length, version, message_id = HEADER.unpack_from(buffer, offset)
    if length < MIN_LENGTH:
        raise SccpDecodeError("length-below-4", str(length))
    return SccpHeader(length, version, message_id)


def split_message(buffer: bytes) -> tuple[SccpHeader, bytes]:
    """One whole message (header + payload) in `buffer`: its header and its payload."""
    header = parse_header(buffer)
    if header.message_size > len(buffer):
        raise SccpDecodeError("length-past-buffer", f"{header.length} > {len(buffer) - 8}")
    return header, bytes(buffer[HEADER_SIZE : header.message_size])


# --- Message ids (names from packet-skinny.c `message_id[]`) ---------------------------------

KEEP_ALIVE: Final = 0x0000
REGISTER: Final = 0x0001
IP_PORT: Final = 0x0002
KEYPAD_BUTTON: Final = 0x0003
STIMULUS: Final = 0x0005
OFF_HOOK: Final = 0x0006
ON_HOOK: Final = 0x0007
LINE_STAT_REQ: Final = 0x000B
OPEN_RECEIVE_CHANNEL_ACK: Final = 0x0022
SOFT_KEY_EVENT: Final = 0x0026
UNREGISTER: Final = 0x0027
REGISTER_ACK: Final = 0x0081
START_MEDIA_TRANSMISSION: Final = 0x008A
STOP_MEDIA_TRANSMISSION: Final = 0x008B
START_MEDIA_RECEPTION: Final = 0x008C
STOP_MEDIA_RECEPTION: Final = 0x008D
CALL_INFO: Final = 0x008F
LINE_STAT: Final = 0x0092
REGISTER_REJECT: Final = 0x009D
KEEP_ALIVE_ACK: Final = 0x0100
OPEN_RECEIVE_CHANNEL: Final = 0x0105
CLOSE_RECEIVE_CHANNEL: Final = 0x0106
CALL_STATE: Final = 0x0111
DIALED_NUMBER: Final = 0x011D
LINE_STAT_V2: Final = 0x0147
CALL_INFO_V2: Final = 0x014A

MESSAGE_NAMES: Final[dict[int, str]] = {
    0x0000: "KeepAliveReqMessage",
    0x0001: "RegisterReqMessage",
    0x0002: "IpPortMessage",
    0x0003: "KeypadButtonMessage",
    0x0004: "EnblocCallMessage",
    0x0005: "StimulusMessage",
    0x0006: "OffHookMessage",
    0x0007: "OnHookMessage",
    0x0008: "HookFlashMessage",
    0x0009: "ForwardStatReqMessage",
    0x000A: "SpeedDialStatReqMessage",
    0x000B: "LineStatReqMessage",
    0x000C: "ConfigStatReqMessage",
    0x000D: "TimeDateReqMessage",
    0x000E: "ButtonTemplateReqMessage",
    0x000F: "VersionReqMessage",
    0x0010: "CapabilitiesResMessage",
    0x0012: "ServerReqMessage",
    0x0020: "AlarmMessage",
    0x0021: "MulticastMediaReceptionAckMessage",
    0x0022: "OpenReceiveChannelAckMessage",
    0x0023: "ConnectionStatisticsResMessage",
    0x0024: "OffHookWithCgpnMessage",
    0x0025: "SoftKeySetReqMessage",
    0x0026: "SoftKeyEventMessage",
    0x0027: "UnregisterReqMessage",
    0x0028: "SoftKeyTemplateReqMessage",
    0x0029: "RegisterTokenReq",
    0x002A: "MediaTransmissionFailureMessage",
    0x002B: "HeadsetStatusMessage",
    0x002C: "MediaResourceNotificationMessage",
    0x002D: "RegisterAvailableLinesMessage",
    0x002E: "DeviceToUserDataMessage",
    0x002F: "DeviceToUserDataResponseMessage",
    0x0030: "UpdateCapabilitiesMessage",
    0x0031: "OpenMultiMediaReceiveChannelAckMessage",
    0x0032: "ClearConferenceMessage",
    0x0033: "ServiceURLStatReqMessage",
    0x0034: "FeatureStatReqMessage",
    0x0035: "CreateConferenceResMessage",
    0x0036: "DeleteConferenceResMessage",
    0x0037: "ModifyConferenceResMessage",
    0x0038: "AddParticipantResMessage",
    0x0039: "AuditConferenceResMessage",
    0x0040: "AuditParticipantResMessage",
    0x0041: "DeviceToUserDataMessageVersion1",
    0x0042: "DeviceToUserDataResponseMessageVersion1",
    0x0043: "CapabilitiesV2ResMessage",
    0x0044: "CapabilitiesV3ResMessage",
    0x0045: "PortResMessage",
    0x0046: "QoSResvNotifyMessage",
    0x0047: "QoSErrorNotifyMessage",
    0x0048: "SubscriptionStatReqMessage",
    0x0049: "MediaPathEventMessage",
    0x004A: "MediaPathCapabilityMessage",
    0x004C: "MwiNotificationMessage",
    0x0081: "RegisterAckMessage",
    0x0082: "StartToneMessage",
    0x0083: "StopToneMessage",
    0x0085: "SetRingerMessage",
    0x0086: "SetLampMessage",
    0x0087: "SetHookFlashDetectMessage",
    0x0088: "SetSpeakerModeMessage",
    0x0089: "SetMicroModeMessage",
    0x008A: "StartMediaTransmissionMessage",
    0x008B: "StopMediaTransmissionMessage",
    # Legacy CallManager 2.x only (chan-sccp-b sccp_protocol.h); not in Wireshark's table.
    0x008C: "StartMediaReceptionMessage",
    0x008D: "StopMediaReceptionMessage",
    0x008F: "CallInfoMessage",
    0x0090: "ForwardStatMessage",
    0x0091: "SpeedDialStatMessage",
    0x0092: "LineStatMessage",
    0x0093: "ConfigStatMessage",
    0x0094: "DefineTimeDateMessage",
    0x0095: "StartSessionTransmissionMessage",
    0x0096: "StopSessionTransmissionMessage",
    0x0097: "ButtonTemplateMessage",
    0x0098: "VersionMessage",
    0x0099: "DisplayTextMessage",
    0x009A: "ClearDisplay",
    0x009B: "CapabilitiesReqMessage",
    0x009D: "RegisterRejectMessage",
    0x009E: "ServerResMessage",
    0x009F: "Reset",
    0x0100: "KeepAliveAckMessage",
    0x0101: "StartMulticastMediaReceptionMessage",
    0x0102: "StartMulticastMediaTransmissionMessage",
    0x0103: "StopMulticastMediaReceptionMessage",
    0x0104: "StopMulticastMediaTransmissionMessage",
    0x0105: "OpenReceiveChannelMessage",
    0x0106: "CloseReceiveChannelMessage",
    0x0107: "ConnectionStatisticsReqMessage",
    0x0108: "SoftKeyTemplateResMessage",
    0x0109: "SoftKeySetResMessage",
    0x0110: "SelectSoftKeysMessage",
    0x0111: "CallStateMessage",
    0x0112: "DisplayPromptStatusMessage",
    0x0113: "ClearPromptStatusMessage",
    0x0114: "DisplayNotifyMessage",
    0x0115: "ClearNotifyMessage",
    0x0116: "ActivateCallPlaneMessage",
    0x0117: "DeactivateCallPlaneMessage",
    0x0118: "UnregisterAckMessage",
    0x0119: "BackSpaceResMessage",
    0x011A: "RegisterTokenAck",
    0x011B: "RegisterTokenReject",
    0x011C: "StartMediaFailureDetectionMessage",
    0x011D: "DialedNumberMessage",
    0x011E: "UserToDeviceDataMessage",
    0x011F: "FeatureStatMessage",
    0x0120: "DisplayPriNotifyMessage",
    0x0121: "ClearPriNotifyMessage",
    0x0122: "StartAnnouncementMessage",
    0x0123: "StopAnnouncementMessage",
    0x0124: "AnnouncementFinishMessage",
    0x0127: "NotifyDtmfToneMessage",
    0x0128: "SendDtmfToneMessage",
    0x0129: "SubscribeDtmfPayloadReqMessage",
    0x012A: "SubscribeDtmfPayloadResMessage",
    0x012B: "SubscribeDtmfPayloadErrMessage",
    0x012C: "UnSubscribeDtmfPayloadReqMessage",
    0x012D: "UnSubscribeDtmfPayloadResMessage",
    0x012E: "UnSubscribeDtmfPayloadErrMessage",
    0x012F: "ServiceURLStatMessage",
    0x0130: "CallSelectStatMessage",
    0x0131: "OpenMultiMediaReceiveChannelMessage",
    0x0132: "StartMultiMediaTransmissionMessage",
    0x0133: "StopMultiMediaTransmissionMessage",
    0x0134: "MiscellaneousCommandMessage",
    0x0135: "FlowControlCommandMessage",
    0x0136: "CloseMultiMediaReceiveChannelMessage",
    0x0137: "CreateConferenceReqMessage",
    0x0138: "DeleteConferenceReqMessage",
    0x0139: "ModifyConferenceReqMessage",
    0x013A: "AddParticipantReqMessage",
    0x013B: "DropParticipantReqMessage",
    0x013C: "AuditConferenceReqMessage",
    0x013D: "AuditParticipantReqMessage",
    0x013E: "ChangeParticipantReqMessage",
    0x013F: "UserToDeviceDataMessageVersion1",
    0x0140: "VideoDisplayCommandMessage",
    0x0141: "FlowControlNotifyMessage",
    0x0142: "ConfigStatV2Message",
    0x0143: "DisplayNotifyV2Message",
    0x0144: "DisplayPriNotifyV2Message",
    0x0145: "DisplayPromptStatusV2Message",
    0x0146: "FeatureStatV2Message",
    0x0147: "LineStatV2Message",
    0x0148: "ServiceURLStatV2Message",
    0x0149: "SpeedDialStatV2Message",
    0x014A: "CallInfoV2Message",
    0x014B: "PortReqMessage",
    0x014C: "PortCloseMessage",
    0x014D: "QoSListenMessage",
    0x014E: "QoSPathMessage",
    0x014F: "QoSTeardownMessage",
    0x0150: "UpdateDSCPMessage",
    0x0151: "QoSModifyMessage",
    0x0152: "SubscriptionStatMessage",
    0x0153: "NotificationMessage",
    0x0154: "StartMediaTransmissionAckMessage",
    0x0155: "StartMultiMediaTransmissionAckMessage",
    0x0156: "CallHistoryInfoMessage",
    0x0157: "LocationInfoMessage",
    0x0158: "MwiResMessage",
    0x0159: "AddOnDeviceCapabilitiesMessage",
    0x015A: "EnhancedAlarmMessage",
    0x015E: "CallCountReqMessage",
    0x015F: "CallCountRespMessage",
    0x0160: "RecordingStatusMessage",
}


# The largest payload a message can have (the specified layout with every optional block of
# the newest version, rounded up). The framer uses it only to judge a candidate header while
# resynchronising, where a KeepAlive "with 1024 bytes of payload" is certainly not a header.
MAX_PAYLOAD: Final[dict[int, int]] = {
    0x0000: 0,  # KeepAliveReqMessage
    0x0002: 4,  # IpPortMessage
    0x0003: 12,  # KeypadButtonMessage
    0x0005: 16,  # StimulusMessage
    0x0006: 8,  # OffHookMessage
    0x0007: 8,  # OnHookMessage
    0x000B: 4,  # LineStatReqMessage
    0x000D: 0,  # TimeDateReqMessage
    0x0022: 40,  # OpenReceiveChannelAckMessage (V17: 36)
    0x0026: 12,  # SoftKeyEventMessage
    0x0027: 4,  # UnregisterReqMessage
    0x0083: 12,  # StopToneMessage
    0x0100: 0,  # KeepAliveAckMessage
    0x0106: 16,  # CloseReceiveChannelMessage
    0x008B: 16,  # StopMediaTransmissionMessage
    0x0111: 28,  # CallStateMessage (24)
    0x011D: 33,  # DialedNumberMessage (25 + 8)
}


def message_name(message_id: int) -> str:
    """The Wireshark name of a message id, or "unknown" (a bounded label for counters)."""
    return MESSAGE_NAMES.get(message_id, "unknown")


# --- Field readers ---------------------------------------------------------------------------

_U32: Final = struct.Struct("<I")
DN_SIZE: Final = 24  # Directory numbers before V18 (packet-skinny.c VariableDirnumSize).
DN_SIZE_V18: Final = 25
NAME_SIZE: Final = 40


def _need(payload: bytes, size: int) -> None:
    if len(payload) < size:
        raise SccpDecodeError("truncated", f"{len(payload)} < {size}")


def _u32(payload: bytes, offset: int) -> int:
    _need(payload, offset + 4)
    return _U32.unpack_from(payload, offset)[0]


def _u32_or_none(payload: bytes, offset: int) -> int | None:
    return _u32(payload, offset) if len(payload) >= offset + 4 else None


def _ipv4(payload: bytes, offset: int) -> str:
    _need(payload, offset + 4)
    return str(ipaddress.IPv4Address(payload[offset : offset + 4]))


def _until_nul(raw: bytes) -> bytes:
    end = raw.find(b"\x00")
    return raw if end < 0 else raw[:end]


def _dn(raw: bytes) -> str:
    """A directory number, exactly as sent (R4): ASCII up to the first NUL, never reformatted."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise SccpDecodeError("bad-dn", raw.hex()) from None


def _name(raw: bytes) -> str:
    # Display names may be UTF-8 on phones that announce the UTF-8 feature; otherwise ASCII.
    return raw.decode("utf-8", errors="replace")


def _fixed_dn(payload: bytes, offset: int, size: int) -> str:
    _need(payload, offset + size)
    return _dn(_until_nul(payload[offset : offset + size]))


def _fixed_name(payload: bytes, offset: int, size: int) -> str:
    _need(payload, offset + size)
    return _name(_until_nul(payload[offset : offset + size]))


def _dn_size(version: int) -> int:
    return DN_SIZE_V18 if version >= V18 else DN_SIZE


def _ipv4or6(payload: bytes, offset: int, version: int) -> tuple[str, int]:
    """An "ipv4or6" address (packet-skinny.c dissect_skinny_ipv4or6) and the offset after it.

    V17+ headers: ipAddrType u32 (0 v4, 1 v6, 2 v4_v6) then a 16-byte address area; older
    headers: 4 raw IPv4 bytes.
    """
    if version < V17:
        return _ipv4(payload, offset), offset + 4
    address_type = _u32(payload, offset)
    _need(payload, offset + 20)
    area = payload[offset + 4 : offset + 20]
    if address_type in (0, 2):
        return str(ipaddress.IPv4Address(area[:4])), offset + 20
    if address_type == 1:
        return ipaddress.IPv6Address(area).compressed, offset + 20
    raise SccpDecodeError("bad-ip-type", str(address_type))


def _nul_strings(payload: bytes, offset: int, count: int) -> list[str]:
    """`count` back-to-back NUL-terminated strings of a dynamic (V2) message, as raw text.

    Strings missing at the end of the payload are empty; a string cut off without its
    NUL is a truncated message.
    """
    strings: list[str] = []
    for _ in range(count):
        if offset >= len(payload):
            strings.append("")
            continue
        end = payload.find(b"\x00", offset)
        if end < 0:
            raise SccpDecodeError("truncated", "unterminated string")
        strings.append(payload[offset:end].decode("utf-8", errors="replace"))
        offset = end + 1
    return strings


def _checked_dn(text: str) -> str:
    if not text.isascii():
        raise SccpDecodeError("bad-dn", text)
    return text


# --- Registration ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """RegisterReqMessage 0x0001 (phone -> CM).

    Payload (Basic header, packet-skinny.c; protocols.md 1.3):
      0 deviceName char[16] | 16 userId | 20 instance | 24 stationIpAddr (network order)
      28 deviceType | 32 maxStreams | 36 activeStreams | 40 protocolVer u8 | 41 unknown u8
      42 phoneFeatures u16 | 44 maxConferences ...
    The shortest form seen (CallManager 2.x) already carries deviceName .. deviceType.
    """

    device_name: str
    station_ip: str
    device_type: int | None
    protocol_version: int | None


def decode_register(version: int, payload: bytes) -> Register:
    _need(payload, 28)
    device_type = _u32_or_none(payload, 28)
    protocol_version = payload[40] if len(payload) > 40 else None
    device_name = _until_nul(payload[:16])
    if not device_name.isascii():
        raise SccpDecodeError("bad-device-name", device_name.hex())
    return Register(device_name.decode("ascii"), _ipv4(payload, 24), device_type, protocol_version)


@dataclass(frozen=True, slots=True)
class RegisterAck:
    """RegisterAckMessage 0x0081: 0 keepAliveInterval (s) | 4 dateTemplate char[6] | 10 pad u16
    | 12 secondaryKeepAliveInterval | 16 maxProtocolVer u8 | 17 unknown u8 | 18 phoneFeatures."""

    keepalive_interval: int
    max_protocol_version: int | None


def decode_register_ack(version: int, payload: bytes) -> RegisterAck:
    max_protocol = payload[16] if len(payload) > 16 else None
    return RegisterAck(_u32(payload, 0), max_protocol)


@dataclass(frozen=True, slots=True)
class RegisterReject:
    """RegisterRejectMessage 0x009D: 0 text char[32] (seen "Error: No License")."""

    text: str


def decode_register_reject(version: int, payload: bytes) -> RegisterReject:
    return RegisterReject(_name(_until_nul(payload[:32])))


@dataclass(frozen=True, slots=True)
class Unregister:
    """UnregisterReqMessage 0x0027: optional 0 unRegReasonCode (0 Unknown, 1 PowerSaveMode)."""

    reason: int | None


def decode_unregister(version: int, payload: bytes) -> Unregister:
    return Unregister(_u32_or_none(payload, 0))


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """KeepAliveReqMessage 0x0000 (phone -> CM), empty payload."""


def decode_keepalive(version: int, payload: bytes) -> KeepAlive:
    return KeepAlive()


@dataclass(frozen=True, slots=True)
class IpPort:
    """IpPortMessage 0x0002: 0 rtpMediaPort. Legacy phones announce their RTP port here."""

    rtp_port: int


def decode_ip_port(version: int, payload: bytes) -> IpPort:
    return IpPort(_u32(payload, 0))


# --- Lines -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineStatReq:
    """LineStatReqMessage 0x000B: 0 lineNumber."""

    line_number: int


def decode_line_stat_req(version: int, payload: bytes) -> LineStatReq:
    return LineStatReq(_u32(payload, 0))


@dataclass(frozen=True, slots=True)
class LineStat:
    """LineStatMessage 0x0092 and LineStatV2Message 0x0147: line number -> directory number.

    LineStat (112 bytes; Wireshark XML):
      0 lineNumber | 4 lineDirNumber char[24] | 28 lineFullyQualifiedDisplayName char[40]
      68 lineTextLabel char[40] | 108 lineDisplayOptions
    CallManager 2.x sends only lineNumber and lineDirNumber (28 bytes, seen in cm2_register).
    LineStatV2: 0 lineNumber | 4 lineType | 8.. NUL-terminated lineDirNumber,
      lineFullyQualifiedDisplayName, lineTextLabel.
    """

    line_number: int
    directory_number: str
    display_name: str = ""
    label: str = ""


def decode_line_stat(version: int, payload: bytes) -> LineStat:
    line_number = _u32(payload, 0)
    directory_number = _fixed_dn(payload, 4, DN_SIZE)
    if len(payload) < 28 + NAME_SIZE:
        return LineStat(line_number, directory_number)
    display_name = _fixed_name(payload, 28, NAME_SIZE)
    label = _fixed_name(payload, 68, NAME_SIZE) if len(payload) >= 108 else ""
    return LineStat(line_number, directory_number, display_name, label)


def decode_line_stat_v2(version: int, payload: bytes) -> LineStat:
    _need(payload, 8)
    directory_number, display_name, label = _nul_strings(payload, 8, 3)
    return LineStat(_u32(payload, 0), _checked_dn(directory_number), display_name, label)


# --- Calls -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallInfo:
    """CallInfoMessage 0x008F and CallInfoV2Message 0x014A: the parties of one call.

    CallInfo (384 bytes; Wireshark XML, Asterisk `call_info_message`):
      0 callingPartyName char[40] | 40 callingParty char[24] | 64 calledPartyName char[40]
      104 calledParty char[24] | 128 lineInstance | 132 callReference | 136 callType
      (1 InBoundCall, 2 OutBoundCall, 3 ForwardCall) | 140.. redirect parties, mailboxes ...
    Legacy CallManager 2.x: the first 128 bytes only (no line, call reference or type).
    CallInfoV2: 8 x u32 (lineInstance, callReference, callType, originalCdpnRedirectReason,
      lastRedirectingReason, callInstance, callSecurityStatus, partyPIRestrictionBits), then
      NUL-terminated callingParty, AlternateCallingParty, calledParty, originalCalledParty,
      lastRedirectingParty, 4 voice mailboxes, callingPartyName, calledPartyName, ...
    """

    calling_party: str
    calling_party_name: str
    called_party: str
    called_party_name: str
    line_instance: int | None = None
    call_reference: int | None = None
    call_type: int | None = None


LEGACY_CALL_INFO_SIZE: Final = 128


def decode_call_info(version: int, payload: bytes) -> CallInfo:
    _need(payload, LEGACY_CALL_INFO_SIZE)
    parties = (
        _fixed_dn(payload, 40, DN_SIZE),
        _fixed_name(payload, 0, NAME_SIZE),
        _fixed_dn(payload, 104, DN_SIZE),
        _fixed_name(payload, 64, NAME_SIZE),
    )
    if len(payload) < 140:
        return CallInfo(*parties)
    return CallInfo(*parties, _u32(payload, 128), _u32(payload, 132), _u32(payload, 136))


def decode_call_info_v2(version: int, payload: bytes) -> CallInfo:
    _need(payload, 32)
    strings = _nul_strings(payload, 32, 11)
    calling, called = _checked_dn(strings[0]), _checked_dn(strings[2])
    line_instance, call_reference, call_type = struct.unpack_from("<III", payload, 0)
    return CallInfo(
        calling, strings[9], called, strings[10], line_instance, call_reference, call_type
    )


@dataclass(frozen=True, slots=True)
class CallState:
    """CallStateMessage 0x0111 (24 bytes): 0 callState | 4 lineInstance | 8 callReference
    | 12 privacy | 16 precedenceLv | 20 precedenceDm. States: Wireshark `DCallState`."""

    state: int
    line_instance: int
    call_reference: int


CALL_STATE_NAMES: Final[dict[int, str]] = {
    0: "Idle",
    1: "OffHook",
    2: "OnHook",
    3: "RingOut",
    4: "RingIn",
    5: "Connected",
    6: "Busy",
    7: "Congestion",
    8: "Hold",
    9: "CallWaiting",
    10: "CallTransfer",
    11: "CallPark",
    12: "Proceed",
    13: "CallRemoteMultiline",
    14: "InvalidNumber",
    15: "HoldRevert",
    16: "Whisper",
    17: "RemoteHold",
}


def decode_call_state(version: int, payload: bytes) -> CallState:
    _need(payload, 12)
    return CallState(*struct.unpack_from("<III", payload, 0))


@dataclass(frozen=True, slots=True)
class DialedNumber:
    """DialedNumberMessage 0x011D: 0 dialedNumber char[24], or char[25] from V18
    (VariableDirnumSize), then lineInstance, callReference."""

    dialed_number: str
    line_instance: int
    call_reference: int


def decode_dialed_number(version: int, payload: bytes) -> DialedNumber:
    size = _dn_size(version)
    _need(payload, size + 8)
    line_instance, call_reference = struct.unpack_from("<II", payload, size)
    return DialedNumber(_fixed_dn(payload, 0, size), line_instance, call_reference)


# --- Phone events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookEvent:
    """OffHookMessage 0x0006 / OnHookMessage 0x0007: empty payload on older phones (seen in
    the CUCM 4 capture), else 0 lineInstance | 4 callReference."""

    off_hook: bool
    line_instance: int | None = None
    call_reference: int | None = None


def decode_off_hook(version: int, payload: bytes) -> HookEvent:
    return HookEvent(True, _u32_or_none(payload, 0), _u32_or_none(payload, 4))


def decode_on_hook(version: int, payload: bytes) -> HookEvent:
    return HookEvent(False, _u32_or_none(payload, 0), _u32_or_none(payload, 4))


@dataclass(frozen=True, slots=True)
class SoftKeyEvent:
    """SoftKeyEventMessage 0x0026: 0 softKeyEvent (2 NewCall, 3 Hold, 4 Transfer, 9 EndCall,
    10 Resume, 11 Answer, 13 Confrn, 15 Join, 0x4D DirTrfr, 0x4E Select, ...; Wireshark
    `SoftKeyEvent`, Asterisk `SOFTKEY_*`) | 4 lineInstance | 8 callReference (the call the
    key was pressed on)."""

    event: int
    line_instance: int | None
    call_reference: int | None


SOFT_KEY_TRANSFER: Final = 4
SOFT_KEY_END_CALL: Final = 9
SOFT_KEY_CONFERENCE: Final = 13  # Confrn
SOFT_KEY_JOIN: Final = 15
SOFT_KEY_DIRECT_TRANSFER: Final = 0x4D  # DirTrfr
SOFT_KEY_SELECT: Final = 0x4E


def decode_soft_key_event(version: int, payload: bytes) -> SoftKeyEvent:
    return SoftKeyEvent(_u32(payload, 0), _u32_or_none(payload, 4), _u32_or_none(payload, 8))


@dataclass(frozen=True, slots=True)
class Stimulus:
    """StimulusMessage 0x0005: 0 stimulus (3 Hold, 9 Line, ...) | 4 lineInstance
    | 8 callReference | 12 stimulusStatus; CallManager 2.x phones send the first two only."""

    stimulus: int
    line_instance: int | None
    call_reference: int | None


STIMULUS_HOLD: Final = 3
# The fixed Transfer and Conference keys of phones that have them (Wireshark DeviceStimulus).
STIMULUS_TRANSFER: Final = 4
STIMULUS_CONFERENCE: Final = 0x7D


def decode_stimulus(version: int, payload: bytes) -> Stimulus:
    return Stimulus(_u32(payload, 0), _u32_or_none(payload, 4), _u32_or_none(payload, 8))


@dataclass(frozen=True, slots=True)
class KeypadButton:
    """KeypadButtonMessage 0x0003: 0 kpButton (0-9, 0x0E *, 0x0F #) | 4 lineInstance
    | 8 callReference (the last two only when the length says so)."""

    button: int
    line_instance: int | None
    call_reference: int | None


def decode_keypad_button(version: int, payload: bytes) -> KeypadButton:
    if len(payload) < 12:
        return KeypadButton(_u32(payload, 0), None, None)
    return KeypadButton(*struct.unpack_from("<III", payload, 0))


# --- Media -----------------------------------------------------------------------------------

# Media_PayloadType (Skinny compressionType) -> RTP payload type and encoding (Wireshark enum,
# Asterisk SKINNY_CODEC_*; RFC 3551 static types).
COMPRESSION_TO_RTP: Final[dict[int, tuple[int, str]]] = {
    2: (8, "PCMA/8000"),
    3: (8, "PCMA/8000"),
    4: (0, "PCMU/8000"),
    5: (0, "PCMU/8000"),
    6: (9, "G722/8000"),
    7: (9, "G722/8000"),
    8: (9, "G722/8000"),
    9: (4, "G723/8000"),
    10: (15, "G728/8000"),
    11: (18, "G729/8000"),
    12: (18, "G729/8000"),
    15: (18, "G729/8000"),
    16: (18, "G729/8000"),
    0x50: (3, "GSM/8000"),
}
# Codecs that only ever travel with a dynamic RTP payload type (codecParams.dynamicPayload).
DYNAMIC_CODECS: Final[dict[int, str]] = {
    0x52: "G726-32/8000",
    0x53: "G726-24/8000",
    0x54: "G726-16/8000",
    0x56: "iLBC/8000",
    0x59: "iSAC/16000",
    0x61: "AMR/8000",
    0x62: "AMR-WB/16000",
}


def rtp_payload_types(compression_type: int, dynamic_payload: int) -> tuple[tuple[int, str], ...]:
    """The RTP payload types a Skinny codec maps to, dynamic ones from codecParams."""
    if compression_type in COMPRESSION_TO_RTP:
        return (COMPRESSION_TO_RTP[compression_type],)
    if compression_type in DYNAMIC_CODECS and 96 <= dynamic_payload <= 127:
        return ((dynamic_payload, DYNAMIC_CODECS[compression_type]),)
    return ()


@dataclass(frozen=True, slots=True)
class OpenReceiveChannel:
    """OpenReceiveChannelMessage 0x0105 (CM -> phone: open a receive port):
    0 conferenceID | 4 passThruPartyID | 8 millisecondPacketSize | 12 compressionType
    | 16 qualifierIn.ecValue | 20 g723BitRate (<=V10) or codecParams (>=V11: codecMode u8,
    dynamicPayload u8, codecParam1 u8, codecParam2 u8) | 24 callReference | key info ..."""

    conference_id: int
    pass_thru_party_id: int
    packet_ms: int
    compression_type: int
    dynamic_payload: int
    call_reference: int | None


def decode_open_receive_channel(version: int, payload: bytes) -> OpenReceiveChannel:
    _need(payload, 16)
    conference_id, party_id, packet_ms, compression = struct.unpack_from("<IIII", payload, 0)
    dynamic_payload = payload[21] if version >= V11 and len(payload) >= 24 else 0
    call_reference = _u32_or_none(payload, 24)
    return OpenReceiveChannel(
        conference_id, party_id, packet_ms, compression, dynamic_payload, call_reference
    )


@dataclass(frozen=True, slots=True)
class OpenReceiveChannelAck:
    """OpenReceiveChannelAckMessage 0x0022 (phone -> CM: "I receive RTP here").

      V<17: 0 status | 4 ipAddr | 8 portNumber | 12 passThruPartyID | 16 callReference
      V17+: 0 status | 4 ipAddrType | 8 ipAddr[16] | 24 portNumber | 28 passThruPartyID
            | 32 callReference
    callReference is absent on older phones (CUCM 4 capture: 16 bytes).
    """

    status: int
    ip: str
    port: int
    pass_thru_party_id: int
    call_reference: int | None


def decode_open_receive_channel_ack(version: int, payload: bytes) -> OpenReceiveChannelAck:
    status = _u32(payload, 0)
    ip, offset = _ipv4or6(payload, 4, version)
    _need(payload, offset + 8)
    port, party_id = struct.unpack_from("<II", payload, offset)
    return OpenReceiveChannelAck(status, ip, port, party_id, _u32_or_none(payload, offset + 8))


@dataclass(frozen=True, slots=True)
class StartMediaTransmission:
    """StartMediaTransmissionMessage 0x008A (CM -> phone: "send RTP there").

    Basic:  0 conferenceID | 4 passThruPartyID | 8 remoteIpAddr | 12 remotePortNumber
            | 16 millisecondPacketSize | 20 compressionType | 24 qualifierOut[16]
            (codecParams at +12 from V11: codecMode u8, dynamicPayload u8, ...)
            | 40 callReference | ...
    V17+:   remoteIpAddr is ipv4or6 (20 bytes): port 28, ms 32, codec 36, qualifierOut 40,
            callReference 56.
    Legacy CallManager 2.x (36 bytes): 0 remoteIpAddr | 4 remotePortNumber
            | 8 millisecondPacketSize | 12 compressionType | ... (no ids, no call reference)
    """

    remote_ip: str
    remote_port: int
    packet_ms: int
    compression_type: int
    conference_id: int | None = None
    pass_thru_party_id: int | None = None
    dynamic_payload: int = 0
    call_reference: int | None = None

    @property
    def legacy(self) -> bool:
        return self.pass_thru_party_id is None


BASIC_SMT_MIN: Final = 40


def decode_start_media_transmission(version: int, payload: bytes) -> StartMediaTransmission:
    if version < V17 and len(payload) < BASIC_SMT_MIN:
        return _decode_legacy_smt(payload)
    _need(payload, 8)
    conference_id, party_id = struct.unpack_from("<II", payload, 0)
    ip, offset = _ipv4or6(payload, 8, version)
    _need(payload, offset + 12)
    port, packet_ms, compression = struct.unpack_from("<III", payload, offset)
    qualifier = offset + 12
    dynamic_payload = (
        payload[qualifier + 13] if version >= V11 and len(payload) > qualifier + 13 else 0
    )
    return StartMediaTransmission(
        ip, port, packet_ms, compression, conference_id, party_id, dynamic_payload,
        _u32_or_none(payload, qualifier + 16),
    )  # fmt: skip


def _decode_legacy_smt(payload: bytes) -> StartMediaTransmission:
    _need(payload, 16)
    port, packet_ms, compression = struct.unpack_from("<III", payload, 4)
    return StartMediaTransmission(_ipv4(payload, 0), port, packet_ms, compression)


@dataclass(frozen=True, slots=True)
class StopMedia:
    """StopMediaTransmissionMessage 0x008B and CloseReceiveChannelMessage 0x0106:
    0 conferenceID | 4 passThruPartyID | 8 callReference | 12 portHandlingFlag.
    CallManager 2.x sends a single u32 (4 bytes)."""

    receive: bool
    conference_id: int
    pass_thru_party_id: int | None
    call_reference: int | None


def decode_stop_media_transmission(version: int, payload: bytes) -> StopMedia:
    return StopMedia(False, _u32(payload, 0), _u32_or_none(payload, 4), _u32_or_none(payload, 8))


def decode_close_receive_channel(version: int, payload: bytes) -> StopMedia:
    return StopMedia(True, _u32(payload, 0), _u32_or_none(payload, 4), _u32_or_none(payload, 8))


@dataclass(frozen=True, slots=True)
class StartMediaReception:
    """StartMediaReceptionMessage 0x008C, legacy CallManager 2.x (chan-sccp-b; 24 bytes seen):
    0 remoteIpAddr | 4 millisecondPacketSize | 8 compressionType. The phone receives on the
    port it announced with IpPortMessage."""

    remote_ip: str
    packet_ms: int
    compression_type: int


def decode_start_media_reception(version: int, payload: bytes) -> StartMediaReception:
    _need(payload, 12)
    packet_ms, compression = struct.unpack_from("<II", payload, 4)
    return StartMediaReception(_ipv4(payload, 0), packet_ms, compression)


@dataclass(frozen=True, slots=True)
class StopMediaReception:
    """StopMediaReceptionMessage 0x008D, legacy CallManager 2.x: one u32 (4 bytes seen)."""


def decode_stop_media_reception(version: int, payload: bytes) -> StopMediaReception:
    return StopMediaReception()


SccpMessage = (
    Register | RegisterAck | RegisterReject | Unregister | KeepAlive | IpPort | LineStatReq
    | LineStat | CallInfo | CallState | DialedNumber | HookEvent | SoftKeyEvent | Stimulus
    | KeypadButton | OpenReceiveChannel | OpenReceiveChannelAck | StartMediaTransmission
    | StopMedia | StartMediaReception | StopMediaReception
)  # fmt: skip

DECODERS: Final = {
    KEEP_ALIVE: decode_keepalive,
    REGISTER: decode_register,
    IP_PORT: decode_ip_port,
    KEYPAD_BUTTON: decode_keypad_button,
    STIMULUS: decode_stimulus,
    OFF_HOOK: decode_off_hook,
    ON_HOOK: decode_on_hook,
    LINE_STAT_REQ: decode_line_stat_req,
    OPEN_RECEIVE_CHANNEL_ACK: decode_open_receive_channel_ack,
    SOFT_KEY_EVENT: decode_soft_key_event,
    UNREGISTER: decode_unregister,
    REGISTER_ACK: decode_register_ack,
    START_MEDIA_TRANSMISSION: decode_start_media_transmission,
    STOP_MEDIA_TRANSMISSION: decode_stop_media_transmission,
    START_MEDIA_RECEPTION: decode_start_media_reception,
    STOP_MEDIA_RECEPTION: decode_stop_media_reception,
    CALL_INFO: decode_call_info,
    LINE_STAT: decode_line_stat,
    REGISTER_REJECT: decode_register_reject,
    OPEN_RECEIVE_CHANNEL: decode_open_receive_channel,
    CLOSE_RECEIVE_CHANNEL: decode_close_receive_channel,
    CALL_STATE: decode_call_state,
    DIALED_NUMBER: decode_dialed_number,
    LINE_STAT_V2: decode_line_stat_v2,
    CALL_INFO_V2: decode_call_info_v2,
}


def decode_message(version: int, message_id: int, payload: bytes) -> SccpMessage | None:
    """Decode one message's payload; None for ids QMS does not read (not an error)."""
    decoder = DECODERS.get(message_id)
    return None if decoder is None else decoder(version, payload)
