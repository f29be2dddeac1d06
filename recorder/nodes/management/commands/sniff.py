"""python manage.py sniff --interface IF [--interface IF2] [--bpf FILTER] [--duration S]
python manage.py sniff --hep 0.0.0.0:9060 [--duration S]

A mirror port's interfaces through tcpdump, or a HEP listener: the packets remote agents
mirror, sent over UDP (recorder/capture/hepsocket.py). Both feed one engine the same way."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from extensions.directory_view import known_phone_ips
from recorder.capture.hepsocket import HepCapture
from recorder.capture.sources import CaptureFileError
from recorder.capture.tcpdump import TcpdumpCapture
from recorder.engine.engine import Engine
from recorder.nodes.caps import CapAlerts, caps_line
from recorder.nodes.commands import CAPTURE_CHECKS
from recorder.nodes.live import CaptureLoop, LiveSource
from recorder.nodes.summary import summary_lines
from recorder.recordings.finisher import finish_left_over
from recorder.recordings.finishing_process import settle_heap
from recorder.recordings.recovery import recover_spools
from recorder.sinks.commands import sink_for_commands
from recorder.sinks.database import (
    add_recording_arguments,
    recording_options,
)

log = logging.getLogger("qms.sniff")


class Command(BaseCommand):
    help = "Capture live from network interfaces until SIGINT/SIGTERM or --duration."
    requires_system_checks = CAPTURE_CHECKS

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--interface", action="append", help="Interface to capture on.")
        source.add_argument(
            "--hep",
            metavar="ADDRESS:PORT",
            help="Listen for HEP (v3, v2, v1) over UDP here, such as 0.0.0.0:9060 or "
            "[::]:9060, instead of capturing on an interface (QMS_HEP_AUTH_KEY, when set, "
            "is the agents' shared secret).",
        )
        parser.add_argument("--bpf", default="", help="A BPF capture filter, as for tcpdump.")
        parser.add_argument("--duration", type=float, default=0, help="Stop after S seconds.")
        parser.add_argument(
            "--buffer-mib",
            type=int,
            default=None,
            help="Each interface's media ring in MiB (default: QMS_CAPTURE_BUFFER_MIB).",
        )
        parser.add_argument(
            "--signalling-buffer-mib",
            type=int,
            default=None,
            help="Each interface's signalling ring in MiB (default: QMS_SIGNALLING_BUFFER_MIB).",
        )
        parser.add_argument(
            "--stats-every", type=float, default=10, help="Seconds between statistics lines."
        )
        add_recording_arguments(parser)
        parser.add_argument("--node", default="", help="Capture node name for the calls.")

    def handle(self, *args: object, **options: object) -> None:
        loop = CaptureLoop(options["stats_every"], self.log_stats, duration=options["duration"])
        loop.handle_signals()
        try:
            capture = self.source(options)
        except CaptureFileError as error:
            raise CommandError(str(error)) from None
        if not options["no_recording"]:
            # What a killed earlier run left: recordings handed over, then cut calls.
            finish_left_over(options["node"], Path(settings.QMS_SPOOL_DIR))
            recover_spools(Path(settings.QMS_SPOOL_DIR))
        # What Django's set-up made lives as long as the command: out of the collector's
        # passes, which the capture's allocations set off every 700 (settle_heap).
        settle_heap()
        sink = sink_for_commands(options["node"], recording=not options["no_recording"])
        engine = Engine(sink, known_phone_ips(), **recording_options(options))
        self.alerts = CapAlerts(options["node"])
        started = time.monotonic()
        try:
            capture.start()
            # Said once every tcpdump listens (the HEP socket is bound), so whoever started
            # sniff knows packets from now on are seen (the live-capture tests wait for it).
            log.info("capturing on %s", self.described(options))
            loop.run(capture, engine)
        except CaptureFileError as error:
            raise CommandError(str(error)) from None
        finally:
            capture.close()
            sink.close()  # every event stored, every recording handed over finished
            self.alerts.note(engine.stats.caps)
        seconds = time.monotonic() - started
        for line in summary_lines(engine, sink, seconds, interfaces=capture.stats()):
            self.stdout.write(line)

    def source(self, options: dict) -> LiveSource:
        buffer_mib = options["buffer_mib"] or settings.QMS_CAPTURE_BUFFER_MIB
        if options["hep"]:
            if options["bpf"]:
                raise CommandError("--bpf filters an interface's capture; --hep takes none.")
            auth_key = settings.QMS_HEP_AUTH_KEY.encode()
            return HepCapture(options["hep"], auth_key, buffer_mib << 20)
        signalling_mib = options["signalling_buffer_mib"] or settings.QMS_SIGNALLING_BUFFER_MIB
        # Named by the interfaces: a sniff killed outright leaves its tcpdumps to the next.
        pid_file = Path(settings.VAR_DIR) / f"sniff-{'+'.join(options['interface'])}.pid"
        return TcpdumpCapture(
            options["interface"], options["bpf"], buffer_mib, pid_file, signalling_mib
        )

    def described(self, options: dict) -> str:
        if options["hep"]:
            secret = " (with a shared secret)" if settings.QMS_HEP_AUTH_KEY else ""
            return f"HEP {options['hep']}{secret}"
        bpf = f" (filter {options['bpf']!r})" if options["bpf"] else ""
        return ", ".join(options["interface"]) + bpf

    def log_stats(self, capture: LiveSource, engine: Engine, rate: float) -> None:
        drops = ", ".join(
            f"{found.interface} {found.lost} (signalling {found.signalling_dropped})"
            for found in capture.stats()
        )
        log.info(
            "%.0f packets/s, capture drops %s, live calls %d", rate, drops, len(engine.calls.calls)
        )
        if engine.stats.caps:
            log.warning(caps_line(engine.stats.caps))
        self.alerts.note(engine.stats.caps)
