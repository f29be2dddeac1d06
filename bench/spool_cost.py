"""What recording costs the capture loop: the engine with and without RTP spool logs.

    .venv/bin/python bench/spool_cost.py var/bench/sip-1000x20s.pcap nolog
    .venv/bin/python bench/spool_cost.py var/bench/sip-1000x20s.pcap log

(the capture file is the one bench/throughput.py generates). Prints the mode, packets,
seconds, packets/s and peak memory of Engine.feed_pcap with a sink that stores nothing.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

from recorder.capture.sources import pcap_chunks  # noqa: E402
from recorder.engine.engine import Engine  # noqa: E402
from recorder.engine.sink import NullSink  # noqa: E402


def main() -> None:
    capture, mode = Path(sys.argv[1]), sys.argv[2]
    root = Path(tempfile.mkdtemp(dir=ROOT / "var"))
    try:
        engine = Engine(NullSink(), spool_root=root if mode == "log" else None)
        started = time.perf_counter()
        found, chunks = pcap_chunks(capture)
        engine.feed_pcap(found, chunks)
        elapsed = time.perf_counter() - started
        engine.finish()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rate = int(engine.stats.packets / elapsed)
        print(mode, engine.stats.packets, round(elapsed, 2), rate, f"peak RSS {peak // 1024} MiB")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
