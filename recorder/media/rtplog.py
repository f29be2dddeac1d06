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

import contextlib
import errno
import json
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from integrations.observations import Side

log = logging.getLogger(__name__)

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
    """One call's append-only RTP log in its own spool directory.

    Records are gathered in a small buffer and written with one system call per buffer.
    A write the disk refuses (full, gone) is undone to the last whole record and its
    packets are dropped and counted, so the log never holds a torn record in its middle
    and recording resumes, after a gap, as soon as space returns.
    """

    def __init__(self, directory: Path, manifest: dict, buffer_size: int = 64 * 1024) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        write_manifest(directory, manifest)
        self.fd = os.open(directory / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.buffer = bytearray()
        self.buffered_packets = 0
        self.buffer_size = buffer_size
        self.packets = 0
        self.dropped_packets = 0
        self.failed_writes = 0

    def append(self, arrival: float, receiver: Side, packet: bytes) -> None:
        self.append_coded(arrival, DIRECTION_CODE[receiver], packet)

    def append_coded(self, arrival: float, code: int, packet: bytes) -> None:
        """The packet path's form of append, with the direction already as its code."""
        if len(packet) > MAX_PACKET:
            return
        self.buffer += RECORD.pack(arrival, code, len(packet))
        self.buffer += packet
        self.buffered_packets += 1
        if len(self.buffer) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        """Hand the buffer to the kernel: what a kill -9 can lose is what came since."""
        if not self.buffer:
            return
        try:
            written = os.write(self.fd, self.buffer)
            if written < len(self.buffer):
                raise OSError(errno.ENOSPC, "short write to the spool")
        except OSError:
            self._undo()
        else:
            self.size += written
            self.packets += self.buffered_packets
        self.buffer.clear()
        self.buffered_packets = 0

    def _undo(self) -> None:
        """Cut the file back to its last whole record; count what is lost."""
        self.failed_writes += 1
        self.dropped_packets += self.buffered_packets
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)
        if self.failed_writes == 1:
            log.error("spool %s: cannot write (disk full?); dropping audio until it can",
                      self.directory)  # fmt: skip

    def close(self) -> None:
        self.flush()
        with contextlib.suppress(OSError):
            os.close(self.fd)


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
