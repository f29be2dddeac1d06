"""A HEP listener as a live source: UDP datagrams from remote agents, in blocks of frames.

It has what the capture loop asks of a live source (recorder/nodes/live.py LiveSource),
so `sniff --hep` and a capture node's HEP sniffer run the loop a mirror port runs. Each
read takes what the socket holds, up to BLOCK_DATAGRAMS, decodes it (recorder/capture/
hep.py) and hands over one HepBlock: the frames, with their capture times and agents, and
the count of each fault. None after SILENCE_SECONDS without a datagram, as tcpdump's
source does.

The socket's receive buffer is the ring: a burst the engine has not caught up with waits
in the kernel. It is asked for as many bytes as the media ring of a mirror capture
(QMS_CAPTURE_BUFFER_MIB), forced past net.core.rmem_max when the process may (the
capability CAP_NET_ADMIN), else as large as rmem_max allows. What overflows it is counted
by the kernel for the socket (SO_RXQ_OVFL, given with each datagram read), and reported
as the capture's drops, so the calls live at the time are marked as a mirror port's are.

    source = HepCapture("0.0.0.0:9060", auth_key=b"", buffer_bytes=512 << 20)
    source.start()                 # returns once the socket is bound
    for block in source.blocks():  # HepBlock, or None after 100 ms of silence
        ...
    source.stop()
    for block in source.rest():    # what the socket still held at the stop
        ...
    source.close()
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from recorder.capture.hep import HepDecoder, HepFrame, listen_address
from recorder.capture.sources import CaptureFileError
from recorder.capture.tcpdump import InterfaceStats

log = logging.getLogger(__name__)

SILENCE_SECONDS = 0.1
# Datagrams read before a block is handed over: the loop's ticks and statistics still
# come between blocks under a flood.
BLOCK_DATAGRAMS = 2048
# The largest UDP datagram.
DATAGRAM_BYTES = 65535
# Linux's socket option for the count of datagrams dropped on a full receive buffer
# (socket(7)); Python names it on some builds only.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
OVERFLOW_SPACE = socket.CMSG_SPACE(4)


@dataclass(frozen=True, slots=True)
class HepBlock:
    """What one read of the HEP socket gave: its frames in arrival order, and the count
    of each kind of datagram refused (hep.py's kinds). `more` and `ring` are a tcpdump
    Block's, so the loop tells the two apart by type alone."""

    interface: str
    frames: list[HepFrame]
    faults: Counter = field(default_factory=Counter)
    ring: str = ""
    more: bool = False


class HepCapture:
    """One UDP socket receiving HEP from any number of agents."""

    def __init__(self, address: str, auth_key: bytes = b"", buffer_bytes: int = 0) -> None:
        try:
            self.host, self.port = listen_address(address)
        except ValueError as error:
            raise CaptureFileError(str(error)) from None
        self.address = address
        self.label = f"hep {address}"
        self.buffer_bytes = buffer_bytes
        self.decoder = HepDecoder(auth_key)
        self.socket: socket.socket | None = None
        self.datagrams = 0
        self.dropped = 0

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # [::] takes IPv4 agents too (as ::ffff:a.b.c.d), whatever the host's default.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind((self.host, self.port))
        except OSError as error:
            listener.close()
            raise CaptureFileError(
                f"Cannot listen for HEP on {self.address}: {error.strerror or error}."
            ) from None
        self._size_buffer(listener)
        listener.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        listener.setblocking(False)
        self.socket = listener

    def _size_buffer(self, listener: socket.socket) -> None:
        if not self.buffer_bytes:
            return
        try:
            listener.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.buffer_bytes)
        except OSError:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_bytes)
        # Linux reports twice what it keeps for the data (socket(7)).
        granted = listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        if granted < self.buffer_bytes:
            log.warning(
                "%s: the receive buffer is %d KiB, not the %d KiB asked for "
                "(raise net.core.rmem_max, or give the capture CAP_NET_ADMIN)",
                self.label, granted >> 10, self.buffer_bytes >> 10,
            )  # fmt: skip

    def blocks(self) -> Iterator[HepBlock | None]:
        """Blocks as datagrams come, None after each silence; until the socket is closed."""
        while self.socket is not None:
            try:
                readable, _, _ = select.select([self.socket], [], [], SILENCE_SECONDS)
            except (OSError, ValueError):
                return  # closed under the loop
            if not readable:
                yield None
                continue
            block = self._read()
            yield block if block.frames or block.faults else None

    def _read(self) -> HepBlock:
        frames: list[HepFrame] = []
        faults: Counter = Counter()
        for _ in range(BLOCK_DATAGRAMS):
            try:
                datagram, ancillary, _, _ = self.socket.recvmsg(DATAGRAM_BYTES, OVERFLOW_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                # An ICMP error queued on the socket, say: not a datagram, nothing lost.
                log.debug("%s: %s", self.label, error)
                continue
            self.datagrams += 1
            self._note_overflow(ancillary)
            frame = self.decoder.frame(datagram, time.time(), faults)
            if frame is not None:
                frames.append(frame)
        return HepBlock(self.label, frames, faults)

    def _note_overflow(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        """The kernel's count of datagrams the full buffer dropped, since the socket opened."""
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                self.dropped = max(self.dropped, struct.unpack("=I", data[:4])[0])

    def stop(self) -> None:
        """Nothing to stop: what the socket holds is read by rest()."""

    def rest(self) -> Iterator[HepBlock]:
        """What the socket still holds: read to its end, then nothing more."""
        if self.socket is None:
            return
        while True:
            block = self._read()
            if not block.frames and not block.faults:
                return
            yield block

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def request_stats(self) -> None:
        """The drop count comes with the datagrams: nothing to ask for."""

    def stats(self) -> list[InterfaceStats]:
        return [InterfaceStats(self.label, received=self.datagrams, dropped=self.dropped)]
