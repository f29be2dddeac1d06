"""Capture throughput: QMS against tshark on the same file, in the same run, one core each.

    .venv/bin/python bench/throughput.py --calls 1000 --seconds 20

Generates (or reuses) the SIP and SCCP captures of bench/traffic.py, then for each runs,
pinned to one CPU with taskset:
  - `manage.py import_pcap FILE` on a fresh SQLite database (the whole command: start-up,
    decoding, classification and storing bindings and calls), timed from outside;
  - the engine alone with a sink that stores nothing (decode and classify only), timed
    inside, with its peak memory;
  - `tshark -q -z rtp,streams -r FILE` (Wireshark's RTP stream analysis), timed from outside.
It prints packets per second for each and QMS's ratio to tshark.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CORE = "0"


def generate(calls: int, seconds: float, sccp: bool) -> Path:
    kind = "sccp" if sccp else "sip"
    path = ROOT / "var" / "bench" / f"{kind}-{calls}x{seconds:g}s.pcap"
    if not path.exists():
        command = [
            PYTHON,
            "bench/traffic.py",
            "--calls",
            str(calls),
            "--seconds",
            str(seconds),
            "--out",
            str(path),
        ] + (["--sccp"] if sccp else [])
        subprocess.run(command, cwd=ROOT, check=True)
    return path


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        ["taskset", "-c", CORE, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stdout


def import_pcap(path: Path) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{scratch}/bench.sqlite3"}
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        return timed([PYTHON, "manage.py", "import_pcap", str(path)], env)


def engine_only(path: Path) -> tuple[float, int, int]:
    """Seconds, packets and peak RSS (KiB) of the engine alone, in a child process."""
    _, output = timed([PYTHON, "bench/throughput.py", "--engine-only", str(path)])
    elapsed, packets, peak = output.split()
    return float(elapsed), int(packets), int(peak)


def run_engine_only(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    from recorder.capture.sources import pcap_chunks
    from recorder.engine.engine import Engine
    from recorder.engine.sink import NullSink

    engine = Engine(NullSink())
    found, chunks = pcap_chunks(path)
    started = time.perf_counter()
    engine.feed_pcap(found, chunks)
    engine.finish()
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{elapsed:.3f} {engine.stats.packets} {peak}")


def packet_count(path: Path) -> int:
    with open(path, "rb") as capture:
        capture.read(24)
        count = 0
        while header := capture.read(16):
            capture.seek(int.from_bytes(header[8:12], "little"), 1)
            count += 1
    return count


def measure(path: Path) -> None:
    packets = packet_count(path)
    qms_seconds, summary = import_pcap(path)
    engine_seconds, engine_packets, peak = engine_only(path)
    tshark_seconds, _ = timed(["tshark", "-q", "-z", "rtp,streams", "-r", str(path)])
    assert engine_packets == packets
    print(f"\n{path.name}: {packets:,} packets, {path.stat().st_size / 1e6:.0f} MB")
    rows = [
        ("qms import_pcap (whole command, SQLite)", qms_seconds),
        ("qms engine only (decode + classify)", engine_seconds),
        ("tshark -q -z rtp,streams", tshark_seconds),
    ]
    for label, seconds in rows:
        print(f"  {label:<42} {seconds:7.2f} s  {packets / seconds:>10,.0f} packets/s")
    print(f"  ratio import_pcap / tshark: {tshark_seconds / qms_seconds:.2f}x")
    print(f"  ratio engine / tshark:      {tshark_seconds / engine_seconds:.2f}x")
    print(f"  engine peak RSS: {peak / 1024:.0f} MiB")
    print("  import_pcap summary: " + " | ".join(summary.strip().splitlines()[:6]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--engine-only", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.engine_only:
        run_engine_only(options.engine_only)
        return
    if shutil.which("tshark") is None:
        sys.exit("tshark is needed as the peer: apt-get install tshark")
    for sccp in (False, True):
        measure(generate(options.calls, options.seconds, sccp))


if __name__ == "__main__":
    main()
