"""Live capture through tcpdump: two child processes per interface write classic pcap into
pipes, and QMS reads the pipes in blocks (docs/capture.md says why this and not libpcap in
the process or an mmap ring of QMS's own).

The kernel's rings are tcpdump's (`-B`), so a burst the engine has not caught up with
waits in the kernel, not in Python. Each interface has two: a large one for media (RTP and
RTCP) and a small one for everything else, signalling above all, so that RTP filling its
ring never costs a BYE or a REGISTER (ring_filter says how the two filters split the
traffic, each packet to exactly one). tcpdump writes each packet to its pipe as it takes it
(`-U`); each read hands the engine whatever has gathered, so the busier the wire, the
larger the blocks. A block is cut anywhere, even inside a record: the engine's PcapStream
carries the cut record over (recorder/engine/pcapfile.py). The two rings of an interface
hand over their blocks at different times; recorder/nodes/rings.py puts them back in
capture-time order.

A tcpdump outlives QMS only briefly. Its pipe's reader gone, its next write ends it
(SIGPIPE). One that saw no packet since, still holding its ring, is ended when its
interface's capture starts again: each capture keeps its tcpdumps' process ids in
`pid_file`, and ends those a previous run left there. (Linux's parent-death signal would
not do: tcpdump drops its privileges after opening the interface, which clears it.)

Drops are tcpdump's own figures for its socket (libpcap's pcap_stats): asked for with
SIGUSR1 (request_stats), read from its standard error, and given once more, exact, when it
stops; each interface's figures are its two rings' together, the signalling ring's drops
also apart. A stop is SIGINT: tcpdump writes what it holds and closes the pipe, and the
caller reads up to the end, so nothing captured before a stop is lost.

    source = TcpdumpCapture(["eth1"], "udp or tcp", buffer_mib=512, signalling_buffer_mib=32)
    source.start()                 # returns once every tcpdump is listening
    for block in source.blocks():  # Block(interface, bytes, ring), None after 100 ms of silence
        ...
    source.stop()
    for block in source.rest():    # what was captured before the stop
        ...
    source.close()
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recorder.capture.sources import CaptureFileError

log = logging.getLogger(__name__)

# tcpdump's ring hands over a block once it is full, or a second (tcpdump's read timeout)
# after its first packet. Not --immediate-mode: libpcap then takes the older ring of fixed
# slots, each as large as the snapshot length (64 KiB on lo), and a ring of 512 MiB holds
# a few thousand packets.
HANDOVER_SECONDS = 1.0
# The pipe between tcpdump and QMS: as large as the kernel lets a process make it without
# privilege (/proc/sys/fs/pipe-max-size, 1 MiB by default), so tcpdump rarely waits on it.
PIPE_BYTES = 1 << 20
READ_BYTES = 1 << 20
SILENCE_SECONDS = 0.1
# How long tcpdump has to open its interface, and, after a stop, to write what it holds.
START_SECONDS = 10.0
STOP_SECONDS = 10.0
# tcpdump's largest snapshot length: every frame whole.
SNAPLEN = 262144
STDERR_KEPT = 4096

# What tcpdump writes to standard error: "listening on IF, link-type ..." once open, and
# its counters, on one line after SIGUSR1 and one per line when it ends. Only those of
# RingStats are kept ("captured" is what it wrote, which QMS counts itself). The listening
# line comes in several writes, and is waited for whole: a capture that ended while
# tcpdump still wrote it would end the tcpdump too (tcpdump exits on SIGPIPE).
LISTENING = re.compile(rb"listening on .*\n")
REJECTS_ALL = re.compile(rb"expression rejects all packets")
COUNTERS = {
    "captured": re.compile(rb"(\d+) packets? captured"),
    "received": re.compile(rb"(\d+) packets? received by filter"),
    "dropped": re.compile(rb"(\d+) packets? dropped by kernel"),
    "interface_dropped": re.compile(rb"(\d+) packets? dropped by interface"),
}

# An interface's two rings. MEDIA selects RTP and RTCP (RFC 3550 section 5.1: version 2,
# the first byte's top bits 10) in whole UDP datagrams, over IPv4 and IPv6; the signalling
# ring takes what MEDIA does not. SIP's first byte is a letter (top bits 01), SCCP and SIP
# over TCP are not UDP, STUN starts 00: all signalling.
#
# - A fragment is never media: IPv4's "more fragments" flag or a fragment offset
#   (ip[6:2] & 0x3fff), and IPv6 whose next header is not UDP (a fragment header, or any
#   extension header). Every fragment of a datagram is then in the same ring, where the
#   engine reassembles it, whatever its first payload byte.
# - libpcap's udp[8] is IPv4 only (pcap-filter(7): "tcp, udp and other upper-layer protocol
#   types only apply to IPv4"), so IPv6 is read at a fixed offset: ip6[48] is the first
#   payload byte after the 40-byte header and the 8-byte UDP header.
# - The lengths are checked before the payload byte is read (ip[2:2], ip6[4:2]): a filter
#   reading past a packet's end rejects it, and would reject it in both rings. An empty
#   datagram is signalling. A frame shorter than its own IP header says is malformed; it
#   is in neither ring, as the engine would refuse it anyway.
# - A VLAN tag: the Linux kernel moves one tag out of the frame before any filter runs
#   (libpcap puts it back in what it writes), so a tagged packet is judged as an untagged
#   one. Under a second tag (802.1ad with 802.1Q inside), or in a tunnel (ERSPAN and
#   transparent GRE are not UDP; VXLAN's first byte is 0x08), a packet is signalling: an
#   encapsulated mirror takes the signalling ring whole (docs/capture.md).
#
# Each ring's filter is the user's and this one or its negation, so a packet the user's
# filter takes is judged the same way by both, with the same offsets (even after the user's
# own "vlan"), and goes to exactly one ring.
MEDIA, SIGNALLING = "media", "signalling"
RINGS = (MEDIA, SIGNALLING)
MEDIA_FILTER = (
    "(ip and udp and ip[6:2] & 0x3fff = 0 and ip[2:2] > 8 + 4 * (ip[0] & 0xf)"
    " and udp[8] & 0xc0 = 0x80)"
    " or (ip6 and ip6[6] = 17 and ip6[4:2] > 8 and ip6[48] & 0xc0 = 0x80)"
)


def ring_filter(bpf: str, ring: str) -> str:
    """The filter of one of an interface's rings: the user's (`bpf`, all packets if empty)
    narrowed to the ring's share."""
    share = f"({MEDIA_FILTER})" if ring == MEDIA else f"not ({MEDIA_FILTER})"
    return f"({bpf}) and {share}" if bpf.strip() else share


@dataclass
class RingStats:
    """One ring's counters, as libpcap keeps them for its socket: packets its filter
    passed, dropped by the kernel (the ring was full), dropped by the interface."""

    received: int = 0
    dropped: int = 0
    interface_dropped: int = 0


@dataclass
class InterfaceStats:
    """One interface's counters, its two rings' together: packets the filters passed,
    dropped by the kernel (a ring was full; `signalling_dropped` of them in the signalling
    ring, the ones that cost calls and bindings), dropped by the interface."""

    interface: str
    received: int = 0
    dropped: int = 0
    interface_dropped: int = 0
    signalling_dropped: int = 0

    @property
    def lost(self) -> int:
        return self.dropped + self.interface_dropped

    @classmethod
    def of_rings(cls, interface: str, media: RingStats, signalling: RingStats) -> InterfaceStats:
        return cls(
            interface,
            received=media.received + signalling.received,
            dropped=media.dropped + signalling.dropped,
            # The interface's own drop counter (libpcap reads it from /proc/net/dev in
            # promiscuous mode), which both rings report: counted once.
            interface_dropped=max(media.interface_dropped, signalling.interface_dropped),
            signalling_dropped=signalling.dropped,
        )


@dataclass(frozen=True, slots=True)
class Block:
    """What one read of a ring's pipe returned: classic pcap, cut anywhere; empty once the
    ring's stream has ended. `ring` is MEDIA or SIGNALLING; a source with one stream per
    interface leaves it empty."""

    interface: str
    data: bytes
    ring: str = ""
    # More blocks of the same read of the pipes follow (the loop merges the rings once it
    # has them all: recorder/nodes/rings.py).
    more: bool = False


@dataclass
class Child:
    """One ring's tcpdump, its pipes and what it has said."""

    interface: str
    ring: str
    process: subprocess.Popen
    stats: RingStats
    said: bytearray = field(default_factory=bytearray)
    listening: bool = False
    open_pipes: int = 2

    def last_words(self) -> str:
        """What tcpdump said that is not a counter: why it ended."""
        lines = [
            line.decode("utf-8", "replace").strip().removeprefix("tcpdump: ")
            for line in bytes(self.said).splitlines()
            if line.strip() and not any(pattern.search(line) for pattern in COUNTERS.values())
        ]
        # libpcap's reason often comes twice, the second time in brackets alone.
        said = [line for line in lines if not (line.startswith("(") and line[1:-1] in lines[0])]
        return "; ".join(said) or f"exit status {self.process.poll()}"


def tcpdump_path() -> str:
    """Where tcpdump is, or a sentence saying it is needed."""
    found = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise CaptureFileError(
            "Live capture needs tcpdump, which is not installed: apt-get install tcpdump."
        )
    return found


def end_leftovers(pid_file: Path) -> None:
    """End the tcpdumps that a capture which did not stop cleanly left in `pid_file`: each
    still a tcpdump (a process id is given again) whose capture process is gone (another
    capture on the same interface may be running, and keeps its own)."""
    try:
        lines = [line.split() for line in pid_file.read_text().splitlines()]
    except OSError:
        return
    for pid, parent in (map(int, line) for line in lines if len(line) == 2):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        orphaned = int(status[1]) != parent
        if orphaned and os.path.basename(command[0]) == b"tcpdump" and b"-w" in command:
            log.warning("ending tcpdump %d, left capturing by an earlier run", pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


class TcpdumpCapture:
    """Live interfaces in promiscuous mode, each through two tcpdumps (its media ring and
    its signalling ring), with one BPF filter for all; `buffer_mib` is each interface's
    media ring, `signalling_buffer_mib` its signalling ring."""

    def __init__(
        self,
        interfaces: list[str],
        bpf: str = "",
        buffer_mib: int = 512,
        pid_file: Path | None = None,
        signalling_buffer_mib: int = 32,
    ) -> None:
        if not interfaces:
            raise CaptureFileError("Live capture needs at least one interface.")
        self.interfaces = list(interfaces)
        self.bpf = bpf
        self.ring_mib = {MEDIA: buffer_mib, SIGNALLING: signalling_buffer_mib}
        self.pid_file = pid_file
        self.running: list[Child] = []
        self.by_pipe: dict[int, Child] = {}  # by the file descriptor of either pipe
        # Each ring's counters, kept after its tcpdump ended.
        self.counters = {
            (interface, ring): RingStats() for interface in self.interfaces for ring in RINGS
        }
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.early: list[Block] = []  # what came while start() waited for the others

    def command(self, interface: str, ring: str) -> list[str]:
        command = [tcpdump_path(), "-i", interface, "-U", "-w", "-", "-n"]
        command += ["-s", str(SNAPLEN), "-B", str(self.ring_mib[ring] * 1024)]
        return [*command, ring_filter(self.bpf, ring)]

    def start(self) -> None:
        """Start every ring's tcpdump (two per interface) and return once each says it is
        listening; CaptureFileError with tcpdump's own sentence if one cannot (no such
        interface, no permission, a filter it cannot compile)."""
        if self.pid_file is not None:
            end_leftovers(self.pid_file)
        for (interface, ring), counters in self.counters.items():
            self._start_child(interface, ring, counters)
        if self.pid_file is not None:
            pids = "".join(f"{child.process.pid} {os.getpid()}\n" for child in self.running)
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(pids)
        deadline = time.monotonic() + START_SECONDS
        try:
            while not all(child.listening for child in self.running):
                if time.monotonic() > deadline:
                    raise CaptureFileError("tcpdump did not start listening within 10 seconds.")
                self.early.extend(self._read(SILENCE_SECONDS))
        except CaptureFileError:
            self.close()
            raise

    def _start_child(self, interface: str, ring: str, counters: RingStats) -> None:
        process = subprocess.Popen(  # noqa: S603 (an argument list, no shell)
            self.command(interface, ring),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # only QMS stops it, and a terminal's ^C reaches QMS
        )
        child = Child(interface, ring, process, counters)
        self.running.append(child)
        for pipe in (process.stdout, process.stderr):
            os.set_blocking(pipe.fileno(), False)
            self.by_pipe[pipe.fileno()] = child
            self.selector.register(pipe.fileno(), selectors.EVENT_READ)
        with contextlib.suppress(OSError):
            fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def blocks(self) -> Iterator[Block | None]:
        """Blocks as they come; None after each SILENCE_SECONDS without any, so the
        caller can tick its clock. Ends when stop() is called. CaptureFileError when a
        tcpdump ends by itself (its interface went away, say)."""
        yield from self._early()
        while not self.stopping:
            found = False
            for block in self._read(SILENCE_SECONDS):
                found = True
                yield block
            if not found:
                yield None

    def stop(self) -> None:
        """Ask every tcpdump to stop: it writes what it holds, its final counters, and
        closes its pipe."""
        self.stopping = True
        for child in self.running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGINT)

    def rest(self) -> Iterator[Block]:
        """After stop(): what the tcpdumps still write, up to the end of every pipe (or
        STOP_SECONDS, after which a tcpdump that has not ended is killed)."""
        yield from self._early()
        deadline = time.monotonic() + STOP_SECONDS
        while self.selector.get_map() and time.monotonic() < deadline:
            yield from self._read(SILENCE_SECONDS)
        for child in self.running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s: the %s ring's tcpdump did not end after its stop; killed",
                    child.interface,
                    child.ring,
                )
                child.process.kill()

    def close(self) -> None:
        for child in self.running:
            if child.process.poll() is None:
                child.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=STOP_SECONDS)
            for pipe in (child.process.stdout, child.process.stderr):
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(pipe.fileno())
                pipe.close()
        self.by_pipe.clear()
        self.running.clear()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def request_stats(self) -> None:
        """Ask every tcpdump for its counters (SIGUSR1); they arrive on its standard error
        and stats() has them from the next read on."""
        if not self.stopping:
            for child in self.running:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGUSR1)

    def stats(self) -> list[InterfaceStats]:
        """Each interface's counters as its tcpdumps last said them."""
        return [
            InterfaceStats.of_rings(
                interface,
                self.counters[interface, MEDIA],
                self.counters[interface, SIGNALLING],
            )
            for interface in self.interfaces
        ]

    def _early(self) -> Iterator[Block]:
        """What came while start() waited, each block handed over once."""
        while self.early:
            yield self.early.pop(0)

    def _read(self, timeout: float) -> Iterator[Block]:
        """One read of every pipe that has something to say: its blocks, each but the last
        saying more follow (the loop merges an interface's rings once it has them all)."""
        found: list[Block] = []
        ended = None
        try:
            found.extend(self._reads(timeout))
        except CaptureFileError as error:  # what was read before it still goes to the engine
            ended = error
        for index, block in enumerate(found):
            yield Block(block.interface, block.data, block.ring, more=index < len(found) - 1)
        if ended is not None:
            raise ended

    def _reads(self, timeout: float) -> Iterator[Block]:
        for key, _ in self.selector.select(timeout):
            fd = key.fd
            child = self.by_pipe[fd]
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                continue
            if fd == child.process.stdout.fileno():
                if data:
                    yield Block(child.interface, data, child.ring)
                    continue
            elif data:
                self._heard(child, data)
                continue
            self.selector.unregister(fd)
            child.open_pipes -= 1
            if fd == child.process.stdout.fileno():
                yield Block(child.interface, b"", child.ring)  # the ring's stream has ended
            if not child.open_pipes and not self.stopping:
                child.process.wait(timeout=STOP_SECONDS)
                if self._leaves_nothing(child):
                    continue
                if not child.listening:
                    raise CaptureFileError(
                        f"Cannot capture on {child.interface}: {child.last_words()}."
                    )
                raise CaptureFileError(
                    f"Capture on {child.interface} stopped: tcpdump ended by itself "
                    f"({child.ring} ring: {child.last_words()})."
                )

    def _leaves_nothing(self, child: Child) -> bool:
        """Whether the tcpdump that ended is a ring the user's filter leaves nothing for
        ("proto gre" has no media): libpcap refuses a filter it can prove matches nothing.
        Its interface is then captured by the other ring alone. (Both refused means the
        user's filter takes nothing at all, which is said as tcpdump says it.)"""
        if child.listening or not REJECTS_ALL.search(child.said):
            return False
        if not any(
            other.interface == child.interface for other in self.running if other is not child
        ):
            return False
        log.info(
            "%s: the filter leaves nothing for the %s ring; the other ring takes it all",
            child.interface,
            child.ring,
        )
        self.running.remove(child)
        for pipe in (child.process.stdout, child.process.stderr):
            self.by_pipe.pop(pipe.fileno(), None)
            pipe.close()
        return True

    def _heard(self, child: Child, data: bytes) -> None:
        """tcpdump's standard error: whether it listens yet, and its counters."""
        child.said += data
        if not child.listening and LISTENING.search(child.said):
            child.listening = True
        # Keep the tail: a line's counters are read once the line is whole.
        text = bytes(child.said)
        whole = text[: text.rfind(b"\n") + 1]
        for name, pattern in COUNTERS.items():
            if name != "captured" and (found := pattern.findall(whole)):
                setattr(child.stats, name, int(found[-1]))
        if len(child.said) > STDERR_KEPT:
            del child.said[: len(child.said) - STDERR_KEPT]
