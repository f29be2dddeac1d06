"""The engine fed from a pipe of classic pcap, as import_pcap is from a file: a prototype of
issue 13's "dumpcap child writing pcap into a pipe" live source, for bench/live.py --via
dumpcap. Reads standard input until it ends (dumpcap stopped), then finishes the calls.

    dumpcap -q -i lo -B 512 -f "udp or tcp" -P -w - | python bench/pipe_import.py
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

import django  # noqa: E402

django.setup()

from extensions.directory_view import known_phone_ips  # noqa: E402
from recorder.capture.sources import pcap_format  # noqa: E402
from recorder.engine.engine import Engine  # noqa: E402
from recorder.sinks.database import DatabaseSink, recording_options  # noqa: E402

CHUNK = 1 << 22


def chunks(fd: int) -> Iterator[bytes]:
    """What the pipe holds at each read, up to CHUNK: never waits for a full chunk."""
    while block := os.read(fd, CHUNK):
        yield block


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # dumpcap stops; this reads to the end
    fd = sys.stdin.fileno()
    header = b""
    while len(header) < 24 and (more := os.read(fd, 24 - len(header))):
        header += more
    found = pcap_format(io.BytesIO(header), Path("<stdin>"))
    sink = DatabaseSink(node="pipe")
    engine = Engine(sink, known_phone_ips(), **recording_options({}))
    try:
        engine.feed_pcap(found, chunks(fd))
    finally:
        engine.finish()
        sink.close()
    print(f"packets {engine.stats.packets} rtp {engine.stats.rtp_packets}")


if __name__ == "__main__":
    main()
