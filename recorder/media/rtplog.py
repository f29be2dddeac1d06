"""The capture loop's side of recording: RTP packets appended, raw, to a call's log.

Decoding audio costs far more per packet than the capture loop can spend, so the loop
only appends each RTP packet, as it came off the wire, with its arrival time, to the
call's log; when the call ends the log is decoded off the packet path (reordering, loss,
codecs, DTMF, quality figures) into the recording. A process killed mid-call leaves a log
whose every complete block can still be decoded.

The packet path's append is two list appends. Packets wait in memory, per direction, until
the next flush: the engine flushes every call's log once a second of capture, and a
direction flushes by itself at BLOCK_PACKETS packets, so memory per call stays bounded
whatever the packet rate. A flush writes one block per direction in one system call:

    block header (8 bytes, little-endian)
    +--------+--------+----------+--------------+
    | dir    | magic  | count    | packet bytes |
    | uint8  | 0xB1   | uint16   | uint32       |
    +--------+--------+----------+--------------+
    then count float64 arrival times, count uint16 packet lengths, and the packets
    themselves back to back.

`dir` is the Side that receives the packets: 0 caller, 1 callee. Arrivals and lengths as
arrays make a block cheap to write and to read back whole (recorder/media/bulk.py decodes
the regular stretches of a block without a Python step per packet).

A call's log is one file, `<start>-<hash>.rtp`, in its capture's spool folder, and it
describes itself: its first record is the manifest (the call's protocol, id and start,
which name its Call row), a header of the same shape with magic 0xB2, a count of 0 and
the length of the JSON that follows. Readers of blocks skip it. One file and no folder a
call: on the benchmark machine's ext4 a new folder and the first name in it cost 0.4 ms of
CPU, a name in an existing folder 0.02 ms (bench/RESULTS.md, session 9). The manifest is
the file's first write, so a log that holds any block has it. Spools of the earlier
layout (a folder holding call.json and rtp.log) are still read, recovered and removed,
so that an upgrade mid-call loses nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from integrations.observations import Side
from recorder.lib.files import read_json

log = logging.getLogger(__name__)

BLOCK_HEADER = struct.Struct("<BBHI")
BLOCK_MAGIC = 0xB1
# The manifest record that opens a log file: the same header, count 0, then the JSON.
MANIFEST_MAGIC = 0xB2
MANIFEST_CODE = 0xFF
# Packets a direction holds before it writes a block of its own: about 5 s of 20 ms audio.
BLOCK_PACKETS = 256
# A block's packet count is 16 bits.
MAX_BLOCK_PACKETS = 0xFFFF
# A call's log file in a spool folder; the earlier layout's folder held the two below.
SPOOL_SUFFIX = ".rtp"
LOG_NAME = "rtp.log"
MANIFEST_NAME = "call.json"
# A manifest is a few hundred bytes: a longer one is no manifest of ours.
MANIFEST_LIMIT = 1 << 16
DIRECTION_CODE = {Side.CALLER: 0, Side.CALLEE: 1}
CODE_DIRECTION = {code: side for side, code in DIRECTION_CODE.items()}
ARRIVAL_BYTES = 8
READ_BUFFER = 1 << 20
LENGTH_BYTES = 2


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    arrival: float
    receiver: Side
    packet: bytes


class PendingRun(NamedTuple):
    """Packets of one direction waiting for the next block, in the block's own form:
    little-endian float64 arrivals, uint16 lengths, the packets back to back. (A named
    tuple: the capture loop makes one per stream and run.)"""

    count: int
    arrivals: bytes | memoryview
    lengths: bytes | memoryview
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class LogBlock:
    """One flush of one direction: arrival times, packet lengths, the packets concatenated."""

    receiver: Side
    arrivals: array
    lengths: array
    data: bytes

    def packets(self) -> Iterator[LoggedPacket]:
        offset = 0
        for arrival, length in zip(self.arrivals, self.lengths, strict=True):
            yield LoggedPacket(arrival, self.receiver, self.data[offset : offset + length])
            offset += length


# What _read_block gives for the manifest record: no packets, skipped by the readers.
_MANIFEST = LogBlock(Side.CALLER, array("d"), array("H"), b"")


class RtpLog:
    """One call's append-only RTP log: the file `path`, its manifest first.

    A write the disk refuses (full, gone) is undone to the last whole block and its
    packets are dropped and counted, so the log never holds a torn block in its middle
    and recording resumes, after a gap, as soon as space returns. A log that is there
    already (the same call logged again) is appended to; its manifest stays.
    OSError when the file cannot be made or its manifest written.
    """

    def __init__(self, path: Path, manifest: dict, block_packets: int = BLOCK_PACKETS) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            self.size = os.fstat(self.fd).st_size
            if self.size == 0:
                self.size = _write_all(self.fd, manifest_record(manifest))
        except OSError:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                if os.stat(path).st_size == 0:
                    os.unlink(path)
            raise
        self.block_packets = max(1, min(block_packets, MAX_BLOCK_PACKETS))
        # Per direction code: the arrival times and packets since the last flush, one by
        # one (the packet path's lists), and before them any runs appended whole.
        self.arrivals: tuple[list[float], list[bytes]] = ([], [])
        self.pending: tuple[list[bytes], list[bytes]] = ([], [])
        self.runs: tuple[list[PendingRun], list[PendingRun]] = ([], [])
        self.run_packets = [0, 0]
        self.packets = 0
        self.dropped_packets = 0
        self.failed_writes = 0

    def append(self, arrival: float, receiver: Side, packet: bytes) -> None:
        self.append_coded(arrival, DIRECTION_CODE[receiver], packet)

    def append_coded(self, arrival: float, code: int, packet: bytes) -> None:
        """The packet path's form of append, with the direction already as its code."""
        pending = self.pending[code]
        pending.append(packet)
        self.arrivals[code].append(arrival)
        if len(pending) >= self.block_packets:
            self.flush()

    def append_run(self, code: int, run: PendingRun) -> None:
        """Packets of one direction appended whole, in arrival order, after those before.
        A run of at most MAX_BLOCK_PACKETS always fits a block: what is pending goes first
        when together they would not."""
        if self.run_packets[code] + len(self.pending[code]) + run.count > MAX_BLOCK_PACKETS:
            self.flush()
        if self.pending[code]:
            self.runs[code].append(self._take_singles(code))
        self.runs[code].append(run)
        self.run_packets[code] += run.count
        if self.run_packets[code] >= self.block_packets:
            self.flush()

    def _take_singles(self, code: int) -> PendingRun:
        """The packets appended one by one so far, as a run; their lists emptied in place
        (the packet path holds them)."""
        pending, arrivals = self.pending[code], self.arrivals[code]
        run = PendingRun(
            len(pending),
            _little_endian(array("d", arrivals)),
            _little_endian(array("H", map(len, pending))),
            b"".join(pending),
        )
        self.run_packets[code] += run.count
        pending.clear()
        arrivals.clear()
        return run

    def flush(self) -> None:
        """Hand what is pending to the kernel: what a kill -9 can lose is what came since."""
        blocks, count = [], 0
        for code in (0, 1):
            if self.pending[code]:
                self.runs[code].append(self._take_singles(code))
            runs = self.runs[code]
            if runs:
                blocks.append(_block(code, runs))
                count += self.run_packets[code]
                runs.clear()
                self.run_packets[code] = 0
        if not blocks:
            return
        data = b"".join(blocks)
        try:
            written = os.write(self.fd, data)
            if written < len(data):
                raise OSError(errno.ENOSPC, "short write to the spool")
        except OSError:
            self._undo(count)
        else:
            self.size += written
            self.packets += count

    def _undo(self, count: int) -> None:
        """Cut the file back to its last whole block; count what is lost."""
        self.failed_writes += 1
        self.dropped_packets += count
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)
        if self.failed_writes == 1:
            log.error("spool %s: cannot write (disk full?); dropping audio until it can",
                      self.path)  # fmt: skip

    def close(self) -> None:
        self.flush()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _block(code: int, runs: list[PendingRun]) -> bytes:
    """One direction's pending packets as a block. A UDP payload is at most 65,527 bytes
    (the UDP length field is 16 bits), so every length fits its uint16."""
    count = sum(run.count for run in runs)
    total = sum(len(run.data) for run in runs)
    header = BLOCK_HEADER.pack(code, BLOCK_MAGIC, count, total)
    return b"".join(
        [header, *(run.arrivals for run in runs), *(run.lengths for run in runs),
         *(run.data for run in runs)]
    )  # fmt: skip


def _little_endian(values: array) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _write_all(fd: int, data: bytes) -> int:
    written = os.write(fd, data)
    if written < len(data):
        raise OSError(errno.ENOSPC, "short write to the spool")
    return written


def log_name(call_id: str, started_at: float) -> str:
    """A call's log file name in its capture's spool folder: its start and a digest of its
    Call-ID, so that a hostile Call-ID names no path (the manifest holds the Call-ID)."""
    return f"{int(started_at)}-{_call_digest(call_id)}{SPOOL_SUFFIX}"


def log_names_of(call_id: str) -> str:
    """A glob of the names the logs of calls with this Call-ID have, whatever their start."""
    return f"*-{_call_digest(call_id)}{SPOOL_SUFFIX}"


def _call_digest(call_id: str) -> str:
    return hashlib.sha1(call_id.encode(), usedforsecurity=False).hexdigest()[:20]


def manifest_record(manifest: dict) -> bytes:
    """The record that opens a log: the call's description as JSON, after its header."""
    text = json.dumps(manifest, sort_keys=True).encode()
    return BLOCK_HEADER.pack(MANIFEST_CODE, MANIFEST_MAGIC, 0, len(text)) + text


def is_spool(path: Path) -> bool:
    """Whether `path` is a call's log by its name: a log file, or a folder of the earlier
    layout with its manifest."""
    if path.name.endswith(SPOOL_SUFFIX):
        return path.is_file()
    return (path / MANIFEST_NAME).is_file()


def log_file(spool: Path) -> Path:
    """The file holding a spool's blocks: the spool itself, or the earlier layout's log."""
    return spool / LOG_NAME if spool.is_dir() else spool


def pcm_folder(spool: Path) -> Path:
    """Where a long call's decoded audio goes on beside its log while it is finished."""
    return spool / "pcm" if spool.is_dir() else spool.with_name(spool.name + ".pcm")


def remove_spool(spool: Path) -> None:
    """A spool gone, with whatever its finishing put beside it; nothing there is no error.
    (Removed first and asked about after: a log file, today's layout, costs no look.)"""
    try:
        spool.unlink()
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError):  # EISDIR on Linux, EPERM elsewhere
        if spool.is_dir():  # the earlier layout: a folder holding everything
            shutil.rmtree(spool, ignore_errors=True)
            return
        raise
    shutil.rmtree(spool.with_name(spool.name + ".pcm"), ignore_errors=True)


def read_manifest(spool: Path) -> dict:
    """The call's description; OSError or ValueError when it cannot be read. It is a JSON
    object when this module wrote it: the caller checks a manifest it does not trust."""
    if spool.is_dir():
        return read_json(spool / MANIFEST_NAME)
    with open(spool, "rb") as opened:
        header = opened.read(BLOCK_HEADER.size)
        if len(header) < BLOCK_HEADER.size:
            raise ValueError(f"{spool} holds no manifest")
        code, magic, _count, size = BLOCK_HEADER.unpack(header)
        if (code, magic) != (MANIFEST_CODE, MANIFEST_MAGIC) or size > MANIFEST_LIMIT:
            raise ValueError(f"{spool} does not start with a manifest")
        text = opened.read(size)
    if len(text) < size:
        raise ValueError(f"{spool}: its manifest is cut short")
    return json.loads(text)


def read_blocks(spool: Path) -> Iterator[LogBlock]:
    """Every complete block of a call's log, in the order written. A block cut short by a
    crash or a full disk, or one that does not parse, ends the log there."""
    path = log_file(spool)
    try:
        # Blocks are small (a second of one call): read the file in large pieces.
        opened = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return
    with opened:
        while header := opened.read(BLOCK_HEADER.size):
            block = _read_block(opened, header)
            if block is None:
                return
            if block is not _MANIFEST:
                yield block


def _read_block(opened, header: bytes) -> LogBlock | None:
    if len(header) < BLOCK_HEADER.size:
        return None
    code, magic, count, total = BLOCK_HEADER.unpack(header)
    if (code, magic, count) == (MANIFEST_CODE, MANIFEST_MAGIC, 0) and total <= MANIFEST_LIMIT:
        return _MANIFEST if len(opened.read(total)) == total else None
    if magic != BLOCK_MAGIC or code not in CODE_DIRECTION:
        return None
    body = opened.read(count * (ARRIVAL_BYTES + LENGTH_BYTES) + total)
    if len(body) < count * (ARRIVAL_BYTES + LENGTH_BYTES) + total:
        return None
    arrivals = _native(array("d"), body[: count * ARRIVAL_BYTES])
    lengths = _native(array("H"), body[count * ARRIVAL_BYTES : count * (ARRIVAL_BYTES + 2)])
    if sum(lengths) != total:
        return None
    data = body[count * (ARRIVAL_BYTES + LENGTH_BYTES) :]
    return LogBlock(CODE_DIRECTION[code], arrivals, lengths, data)


def _native(values: array, data: bytes) -> array:
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def read_batches(spool: Path, batch_packets: int = 2048) -> Iterator[LogBlock]:
    """The log's blocks merged, per direction, into batches of about `batch_packets`:
    fewer, longer steps for the decoder. Each direction's packets keep their order; the
    two directions' batches interleave in no particular order."""
    groups: dict[Side, list[LogBlock]] = {side: [] for side in CODE_DIRECTION.values()}
    counts = dict.fromkeys(CODE_DIRECTION.values(), 0)
    for block in read_blocks(spool):
        group = groups[block.receiver]
        group.append(block)
        counts[block.receiver] += len(block.lengths)
        if counts[block.receiver] >= batch_packets:
            yield _merged(group)
            group.clear()
            counts[block.receiver] = 0
    for group in groups.values():
        if group:
            yield _merged(group)


def _merged(group: list[LogBlock]) -> LogBlock:
    if len(group) == 1:
        return group[0]
    arrivals, lengths = array("d"), array("H")
    for block in group:
        arrivals.extend(block.arrivals)
        lengths.extend(block.lengths)
    data = b"".join(block.data for block in group)
    return LogBlock(group[0].receiver, arrivals, lengths, data)


def read_log(spool: Path) -> Iterator[LoggedPacket]:
    """Every packet of every complete block, a direction's packets in arrival order."""
    for block in read_blocks(spool):
        yield from block.packets()


# --- a log that is still being written (live listening, recorder/media/live.py) -----------


def read_blocks_from(spool: Path, offset: int) -> tuple[list[LogBlock], int]:
    """The complete blocks written after byte `offset` of a live call's log, and the
    offset after the last of them: where the next read starts. A block the capture is
    writing now (cut short) is left for the next read; one that does not parse ends what
    this read gives, as it ends the log for its finishing."""
    blocks: list[LogBlock] = []
    path = log_file(spool)
    with open(path, "rb", buffering=READ_BUFFER) as opened:
        opened.seek(offset)
        while header := opened.read(BLOCK_HEADER.size):
            block = _read_block(opened, header)
            if block is None:
                break
            offset = opened.tell()
            if block is not _MANIFEST:
                blocks.append(block)
    return blocks, offset


def tail_offset(spool: Path, seconds: float) -> int:
    """Where to start reading a live call's log to get about its last `seconds`: the
    first block whose last packet arrived within `seconds` of the newest, found from the
    blocks' headers and last arrival times alone (the packets are skipped)."""
    ends: list[tuple[int, float]] = []
    path = log_file(spool)
    with open(path, "rb") as opened:
        offset = 0
        while len(header := opened.read(BLOCK_HEADER.size)) == BLOCK_HEADER.size:
            _code, magic, count, total = BLOCK_HEADER.unpack(header)
            if magic == MANIFEST_MAGIC and count == 0:
                offset += BLOCK_HEADER.size + total
            elif magic == BLOCK_MAGIC and count:
                opened.seek(offset + BLOCK_HEADER.size + (count - 1) * ARRIVAL_BYTES)
                last = opened.read(ARRIVAL_BYTES)
                if len(last) < ARRIVAL_BYTES:
                    break
                ends.append((offset, _native(array("d"), last)[0]))
                offset += BLOCK_HEADER.size + count * (ARRIVAL_BYTES + LENGTH_BYTES) + total
            else:
                break
            opened.seek(offset)
    if not ends:
        return 0
    newest = max(arrival for _offset, arrival in ends)
    return next(offset for offset, arrival in ends if arrival >= newest - seconds)
