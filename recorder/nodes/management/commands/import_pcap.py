"""python manage.py import_pcap FILE [FILE ...]"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from extensions.directory_view import known_phone_ips
from recorder.capture.sources import (
    CaptureFileError,
    CaptureNotes,
    Packet,
    note_pcap_end,
    pcap_chunks,
    read_captures,
)
from recorder.engine.engine import Engine
from recorder.nodes.caps import CapAlerts
from recorder.nodes.commands import CAPTURE_CHECKS
from recorder.nodes.summary import summary_lines
from recorder.recordings.finisher import finish_left_over
from recorder.recordings.finishing_process import settle_heap
from recorder.recordings.recovery import recover_spools
from recorder.sinks.commands import sink_for_commands
from recorder.sinks.database import (
    add_recording_arguments,
    recording_options,
)


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, paths: list[Path]) -> None:
        self.shown = sys.stderr.isatty()
        self.total = sum(path.stat().st_size for path in paths) or 1
        self.done = 0
        self.drawn_at = 0.0

    def advance(self, octets: int) -> None:
        self.done += octets
        now = time.monotonic()
        if self.shown and now - self.drawn_at > 0.5:
            self.drawn_at = now
            self.draw(min(self.done / self.total, 1.0))

    def draw(self, share: float) -> None:
        sys.stderr.write(f"\r[{'#' * int(share * 30):<30}] {share:6.1%}")
        sys.stderr.flush()

    def chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.advance(len(chunk))
            yield chunk
        self.finish()

    def packets(self, packets: Iterator[Packet]) -> Iterator[Packet]:
        for packet in packets:
            self.advance(len(packet[2]) + 16)
            yield packet
        self.finish()

    def finish(self) -> None:
        if self.shown:
            self.draw(1.0)
            sys.stderr.write("\n")


class Command(BaseCommand):
    help = (
        "Process pcap/pcapng capture files (several files in time order): learn ext/IP "
        "bindings and follow calls, as a live capture would."
    )
    requires_system_checks = CAPTURE_CHECKS

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path, help="pcap or pcapng files")
        add_recording_arguments(parser)
        parser.add_argument("--node", default="import", help="Capture node name for the calls.")

    def handle(self, *args: object, **options: object) -> None:
        paths: list[Path] = options["files"]
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path} is not a readable file.")
        if not options["no_recording"]:
            # What a killed earlier run left: recordings handed over, then cut calls.
            finish_left_over(options["node"], Path(settings.QMS_SPOOL_DIR))
            recover_spools(Path(settings.QMS_SPOOL_DIR))
        # What Django's set-up made lives as long as the command: out of the collector's
        # passes, which the capture's allocations set off every 700 (settle_heap).
        settle_heap()
        sink = sink_for_commands(options["node"], recording=not options["no_recording"])
        engine = Engine(sink, known_phone_ips(), **recording_options(options))
        started = time.perf_counter()
        notes = CaptureNotes()
        try:
            self.process(engine, paths, Progress(paths), notes)
        except CaptureFileError as error:
            raise CommandError(str(error)) from None
        finally:
            engine.finish()
            captured = time.perf_counter() - started
            sink.close()  # every event stored, every recording handed over finished
            CapAlerts(options["node"]).note(engine.stats.caps)
        for line in summary_lines(engine, sink, captured, notes):
            self.stdout.write(line)
        more = time.perf_counter() - started - captured
        self.stdout.write(
            f"stored in {more:.1f} s more (database writes: {sink.cpu_seconds:.1f} s of CPU)"
        )

    @staticmethod
    def process(engine: Engine, paths: list[Path], progress: Progress, notes: CaptureNotes) -> None:
        chunked = pcap_chunks(paths[0]) if len(paths) == 1 else None
        if chunked is not None:
            found, chunks = chunked
            engine.feed_pcap(found, progress.chunks(chunks))
            note_pcap_end(paths[0], found, notes, engine.stats.packets, engine.stats.octets)
        else:
            engine.run(progress.packets(read_captures(paths, notes)), time.time)
