"""The capture loop's side of recording: RTP packets appended, raw, to a call's log.

Decoding audio costs far more per packet than the capture loop can spend, so the loop
only appends each RTP packet, as it came off the wire, with its arrival time and
direction, to one append-only file per call. When the call ends the log is decoded off
the packet path (reordering, loss, codecs, DTMF, quality figures) into the recording.
Nothing is held in memory beyond a small write buffer, and a process killed mid-call
leaves a log whose every complete record can still be decoded.

Record layout (little-endian):

    0        8        9        11
    +--------+--------+--------+------------------------+
    | arrival| dir    | length | RTP packet (length)    |
    | float64| uint8  | uint16 |                        |
    +--------+--------+--------+------------------------+

`dir` is the Side that receives the packet: 0 caller, 1 callee.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from integrations.observations import Side

RECORD = struct.Struct("<dBH")
LOG_NAME = "rtp.log"
MANIFEST_NAME = "call.json"
MAX_PACKET = 65535
DIRECTION_CODE = {Side.CALLER: 0, Side.CALLEE: 1}
CODE_DIRECTION = {code: side for side, code in DIRECTION_CODE.items()}


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    arrival: float
    receiver: Side
    packet: bytes


class RtpLog:
    """One call's append-only RTP log in its own spool directory."""

    def __init__(self, directory: Path, manifest: dict, buffer_size: int = 64 * 1024) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        write_manifest(directory, manifest)
        # Buffered: one write system call per buffer, not per packet.
        self.file = open(directory / LOG_NAME, "ab", buffering=buffer_size)  # noqa: SIM115
        self.packets = 0
        self.failed_writes = 0

    def append(self, arrival: float, receiver: Side, packet: bytes) -> None:
        self.append_coded(arrival, DIRECTION_CODE[receiver], packet)

    def append_coded(self, arrival: float, code: int, packet: bytes) -> None:
        """The packet path's form of append: the direction already as its code, and two
        buffered writes rather than a concatenated copy."""
        if len(packet) > MAX_PACKET:
            return
        try:
            self.file.write(RECORD.pack(arrival, code, len(packet)))
            self.file.write(packet)
            self.packets += 1
        except OSError:
            # Disk full or gone: counted; the capture goes on, and writing resumes when
            # space returns (the log keeps whole records only, see read_log).
            self.failed_writes += 1

    def flush(self) -> None:
        """Hand the buffer to the kernel: what a kill -9 can lose is what came since."""
        try:
            self.file.flush()
        except OSError:
            self.failed_writes += 1

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            self.failed_writes += 1


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write the call's description next to its log, atomically (temp file, then rename)."""
    temporary = directory / (MANIFEST_NAME + ".tmp")
    temporary.write_text(json.dumps(manifest, sort_keys=True))
    os.replace(temporary, directory / MANIFEST_NAME)


def read_manifest(directory: Path) -> dict:
    return json.loads((directory / MANIFEST_NAME).read_text())


def read_log(directory: Path) -> Iterator[LoggedPacket]:
    """Every complete record of a call's log, in the order written. A record cut short
    by a crash or a full disk ends the log there."""
    path = directory / LOG_NAME
    if not path.exists():
        return
    with open(path, "rb") as log:
        while header := log.read(RECORD.size):
            if len(header) < RECORD.size:
                return
            arrival, code, length = RECORD.unpack(header)
            packet = log.read(length)
            if len(packet) < length or code not in CODE_DIRECTION:
                return
            yield LoggedPacket(arrival, CODE_DIRECTION[code], packet)
