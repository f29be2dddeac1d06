"""Live capture through tcpdump: one child process per interface writes classic pcap into a
pipe, and QMS reads the pipe in blocks (docs/capture.md says why this and not libpcap in
the process or an mmap ring of QMS's own).

The kernel's ring is tcpdump's (`-B`, sized by the caller), so a burst the engine has not
caught up with waits in the kernel, not in Python. tcpdump writes each packet to the pipe
as it takes it (`-U`); each read hands the engine whatever has gathered, so the busier the
wire, the larger the blocks. A block is cut anywhere, even inside a record: the engine's
PcapStream carries the cut record over (recorder/engine/pcapfile.py).

A tcpdump outlives QMS only briefly. Its pipe's reader gone, its next write ends it
(SIGPIPE). One that saw no packet since, still holding its ring, is ended when its
interface's capture starts again: each capture keeps its tcpdumps' process ids in
`pid_file`, and ends those a previous run left there. (Linux's parent-death signal would
not do: tcpdump drops its privileges after opening the interface, which clears it.)

Drops are tcpdump's own figures for its socket (libpcap's pcap_stats): asked for with
SIGUSR1 (request_stats), read from its standard error, and given once
more, exact, when it stops. A stop is SIGINT: tcpdump writes what it holds and closes the
pipe, and the caller reads up to the end, so nothing captured before a stop is lost.

    source = TcpdumpCapture(["eth1"], "udp or tcp", buffer_mib=512)
    source.start()                 # returns once every tcpdump is listening
    for block in source.blocks():  # Block(interface, bytes), None after 100 ms of silence
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
# InterfaceStats are kept ("captured" is what it wrote, which QMS counts itself).
LISTENING = re.compile(rb"listening on ")
COUNTERS = {
    "captured": re.compile(rb"(\d+) packets? captured"),
    "received": re.compile(rb"(\d+) packets? received by filter"),
    "dropped": re.compile(rb"(\d+) packets? dropped by kernel"),
    "interface_dropped": re.compile(rb"(\d+) packets? dropped by interface"),
}


@dataclass
class InterfaceStats:
    """One interface's counters, as libpcap keeps them for its socket: packets the filter
    passed, dropped by the kernel (the ring was full), dropped by the interface."""

    interface: str
    received: int = 0
    dropped: int = 0
    interface_dropped: int = 0

    @property
    def lost(self) -> int:
        return self.dropped + self.interface_dropped


# An interface's two rings (recorder/nodes/rings.py merges them by capture time).
MEDIA, SIGNALLING = "media", "signalling"
RINGS = (MEDIA, SIGNALLING)


@dataclass(frozen=True, slots=True)
class Block:
    """What one read of a ring's pipe returned: classic pcap, cut anywhere; empty once the
    ring's stream has ended. `ring` is MEDIA or SIGNALLING; a source with one stream per
    interface leaves it empty."""

    interface: str
    data: bytes
    ring: str = ""


@dataclass
class Child:
    """One interface's tcpdump, its pipes and what it has said."""

    interface: str
    process: subprocess.Popen
    stats: InterfaceStats
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
    """Live interfaces in promiscuous mode, each through its own tcpdump, with one BPF
    filter for all; `buffer_mib` is each interface's kernel ring."""

    def __init__(
        self,
        interfaces: list[str],
        bpf: str = "",
        buffer_mib: int = 512,
        pid_file: Path | None = None,
    ) -> None:
        if not interfaces:
            raise CaptureFileError("Live capture needs at least one interface.")
        self.interfaces = list(interfaces)
        self.bpf = bpf
        self.buffer_mib = buffer_mib
        self.pid_file = pid_file
        self.running: list[Child] = []
        self.by_pipe: dict[int, Child] = {}  # by the file descriptor of either pipe
        # Each interface's counters, kept after its tcpdump ended.
        self.counters = [InterfaceStats(interface) for interface in self.interfaces]
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.early: list[Block] = []  # what came while start() waited for the others

    def command(self, interface: str) -> list[str]:
        command = [tcpdump_path(), "-i", interface, "-U", "-w", "-", "-n"]
        command += ["-s", str(SNAPLEN), "-B", str(self.buffer_mib * 1024)]
        return command + ([self.bpf] if self.bpf else [])

    def start(self) -> None:
        """Start every interface's tcpdump and return once each says it is listening;
        CaptureFileError with tcpdump's own sentence if one cannot (no such interface, no
        permission, a filter it cannot compile)."""
        if self.pid_file is not None:
            end_leftovers(self.pid_file)
        for interface, counters in zip(self.interfaces, self.counters, strict=True):
            process = subprocess.Popen(  # noqa: S603 (an argument list, no shell)
                self.command(interface),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # only QMS stops it, and a terminal's ^C reaches QMS
            )
            child = Child(interface, process, counters)
            self.running.append(child)
            for pipe in (process.stdout, process.stderr):
                os.set_blocking(pipe.fileno(), False)
                self.by_pipe[pipe.fileno()] = child
                self.selector.register(pipe.fileno(), selectors.EVENT_READ)
            with contextlib.suppress(OSError):
                fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
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
                log.warning("%s: tcpdump did not end after its stop; killed", child.interface)
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
        """Each interface's counters as tcpdump last said them."""
        return self.counters

    def _early(self) -> Iterator[Block]:
        """What came while start() waited, each block handed over once."""
        while self.early:
            yield self.early.pop(0)

    def _read(self, timeout: float) -> Iterator[Block]:
        for key, _ in self.selector.select(timeout):
            fd = key.fd
            child = self.by_pipe[fd]
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                continue
            if fd == child.process.stdout.fileno():
                if data:
                    yield Block(child.interface, data)
                    continue
            elif data:
                self._heard(child, data)
                continue
            self.selector.unregister(fd)
            child.open_pipes -= 1
            if not child.open_pipes and not self.stopping:
                child.process.wait(timeout=STOP_SECONDS)
                if not child.listening:
                    raise CaptureFileError(
                        f"Cannot capture on {child.interface}: {child.last_words()}."
                    )
                raise CaptureFileError(
                    f"Capture on {child.interface} stopped: tcpdump ended by itself "
                    f"({child.last_words()})."
                )

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
