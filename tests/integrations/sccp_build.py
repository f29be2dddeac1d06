"""Test helper: hand-built Skinny messages for layouts the public captures do not contain."""

from __future__ import annotations

import ipaddress
import struct

from recorder.capture.synthesis import fixed, skinny  # the header and text fields: written once


def ipv4(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def ipv4or6(address: str) -> bytes:
    """The V17+ ipv4or6 form: ipAddrType u32 then a 16-byte address area."""
    parsed = ipaddress.ip_address(address)
    kind = 0 if parsed.version == 4 else 1
    return struct.pack("<I", kind) + parsed.packed.ljust(16, b"\x00")


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def register(device: str, station_ip: str, version: int = 0) -> bytes:
    payload = fixed(device, 16) + u32(0, 1) + ipv4(station_ip) + u32(30007, 0, 0) + bytes(12)
    return skinny(0x0001, payload, version)


def line_stat(line: int, dn: str, display: str = "", label: str = "") -> bytes:
    payload = u32(line) + fixed(dn, 24) + fixed(display, 40) + fixed(label, 40) + u32(0)
    return skinny(0x0092, payload)


def call_state(state: int, line: int, callref: int, version: int = 0) -> bytes:
    return skinny(0x0111, u32(state, line, callref, 0, 4, 0), version)


def call_info(
    calling: str, calling_name: str, called: str, called_name: str, line: int, callref: int,
    call_type: int,
) -> bytes:  # fmt: skip
    payload = (
        fixed(calling_name, 40) + fixed(calling, 24) + fixed(called_name, 40) + fixed(called, 24)
        + u32(line, callref, call_type)
    )  # fmt: skip
    return skinny(0x008F, payload.ljust(384, b"\x00"))


def keepalive() -> bytes:
    return skinny(0x0000)


def soft_key(event: int, line: int, callref: int) -> bytes:
    """SoftKeyEventMessage: the key pressed, on which line and call."""
    return skinny(0x0026, u32(event, line, callref))


def stimulus(stimulus_id: int, line: int, callref: int | None = None) -> bytes:
    """StimulusMessage: a fixed key; short (no call reference) when `callref` is None."""
    tail = u32(callref, 0) if callref is not None else b""
    return skinny(0x0005, u32(stimulus_id, line) + tail)


def dialed_number(number: str, line: int, callref: int) -> bytes:
    return skinny(0x011D, fixed(number, 24) + u32(line, callref))


def open_receive_channel(callref: int, party: int) -> bytes:
    """OpenReceiveChannel (Basic): µ-law, 20 ms, for `callref`."""
    return skinny(0x0105, u32(callref, party, 20, 4, 0, 0, callref))


def open_receive_channel_ack(ip: str, port: int, party: int, callref: int) -> bytes:
    return skinny(0x0022, u32(0) + ipv4(ip) + u32(port, party, callref))


def start_media_transmission(callref: int, party: int, ip: str, port: int) -> bytes:
    """StartMediaTransmission (Basic): send µ-law, 20 ms, to ip:port."""
    payload = u32(callref, party) + ipv4(ip) + u32(port, 20, 4) + bytes(16) + u32(callref)
    return skinny(0x008A, payload)
