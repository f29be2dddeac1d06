"""python manage.py capture_sniffer --node NODE --interface IF [--bpf FILTER]
python manage.py capture_sniffer --node NODE --hep ADDRESS:PORT

The sniffer process a capture node's worker starts for each of its interfaces and HEP
listeners (recorder/nodes/node.py); run by hand, it captures into the outbox until SIGINT.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recorder.capture.sources import CaptureFileError
from recorder.nodes.sniffer import Sniffer


class Command(BaseCommand):
    help = "Capture on one interface into the node's outbox (started by the capture worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", required=True, help="The capture node's name.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--interface", help="Interface to capture on.")
        source.add_argument("--hep", metavar="ADDRESS:PORT", help="Listen for HEP here.")
        parser.add_argument("--bpf", default="", help="A BPF capture filter, as for tcpdump.")
        parser.add_argument(
            "--parent", type=int, default=0, help="Stop when this process (the worker) is gone."
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["hep"] and options["bpf"]:
            raise CommandError("--bpf filters an interface's capture; --hep takes none.")
        captured = options["hep"] or options["interface"]
        sniffer = Sniffer(
            options["node"], captured, options["bpf"], options["parent"], hep=bool(options["hep"])
        )
        try:
            sniffer.run()
        except CaptureFileError as error:
            sniffer.write_stats(running=False, error=str(error))
            raise CommandError(str(error)) from None
