"""python manage.py capture_sniffer --node NODE --interface IF [--bpf FILTER]

The sniffer process a capture node's worker starts for each of its interfaces
(recorder/nodes/node.py); run by hand, it captures into the outbox until SIGINT.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recorder.capture.sources import CaptureFileError
from recorder.nodes.sniffer import Sniffer


class Command(BaseCommand):
    help = "Capture on one interface into the node's outbox (started by the capture worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", required=True, help="The capture node's name.")
        parser.add_argument("--interface", required=True, help="Interface to capture on.")
        parser.add_argument("--bpf", default="", help="A BPF capture filter, as for tcpdump.")
        parser.add_argument(
            "--parent", type=int, default=0, help="Stop when this process (the worker) is gone."
        )

    def handle(self, *args: object, **options: object) -> None:
        sniffer = Sniffer(options["node"], options["interface"], options["bpf"], options["parent"])
        try:
            sniffer.run()
        except CaptureFileError as error:
            sniffer.write_stats(running=False, error=str(error))
            raise CommandError(str(error)) from None
