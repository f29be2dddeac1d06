"""Traffic generator: N concurrent calls with G.711 RTP, as a pcap with known truth.

    python bench/traffic.py --calls 1000 --seconds 10 --out var/bench/sip-1000.pcap
    python bench/traffic.py --calls 1000 --seconds 10 --sccp --out var/bench/sccp-1000.pcap

The calls, their signalling (SIP, or an SCCP station session) and their RTP are written by
recorder/capture/traffic.py, which the tests build their captures from too; this is its
command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/traffic.py

from recorder.capture.traffic import make_calls, packets, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sccp", action="store_true", help="SCCP signalling instead of SIP")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    count = write(options.out, packets(make_calls(options.calls), options.seconds, options.sccp))
    print(f"{options.out}: {count} packets, {options.calls} calls, {options.seconds} s of RTP")


if __name__ == "__main__":
    main()
