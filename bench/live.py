"""Live capture against the wire: N concurrent calls replayed onto loopback at a packet rate.

    .venv/bin/python bench/live.py --calls 250 --seconds 20 --pps 25000
    .venv/bin/python bench/live.py --calls 1000 --seconds 20 --pps 100000 --sccp
    .venv/bin/python bench/live.py --calls 1000 --seconds 20 --pps 100000 --via dumpcap
    .venv/bin/python bench/live.py --calls 1000 --seconds 20 --pps 100000 --veth

Writes (or reuses) the bench/traffic.py capture of N concurrent G.711 calls, then, one
after the other on the same file and the same rate:

- `manage.py sniff --interface lo` on a fresh SQLite database, while
  `tcpreplay -K --pps RATE -i lo FILE` replays the capture; stopped with SIGINT once the
  replay is over. Then: how many calls became complete recordings, how many RTP packets
  each direction expected and received, and the kernel drops sniff reported
  (`--buffer-mib N` sets sniff's kernel ring, else QMS_CAPTURE_BUFFER_MIB's 512);
  with `--via dumpcap` or `--via tcpdump`, QMS is instead a prototype of another live
  source: dumpcap (`-B 512`) or tcpdump (`-B 524288`), a 512 MiB kernel ring, writes pcap
  into a pipe that bench/pipe_import.py
  feeds to the engine's file batch path (Engine.feed_pcap), as import_pcap reads a file
  (the prototypes that chose sniff's live source, docs/capture.md);
- `tshark -i lo -q -z rtp,streams` as the peer, on the same replay: its streams and the
  packets it counted lost.

With --veth the replay goes through a veth pair instead of loopback: the bench makes a
network namespace (qms-bench) holding one end (qms-bench1), where tcpreplay sends, and
QMS and tshark capture on the other end (qms-bench0), as on a mirror port; on lo the kernel
sees each packet twice (sent and received), on the veth pair once. The namespace is
removed at the end.

Run as root (tcpreplay writes to the interface). Prints one Markdown table row per tool
for bench/RESULTS.md, and the sniff process's peak RSS (its own, not its tcpdumps' or its
finishing process's). A benchmark run by hand, never by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from end_to_end import PYTHON, ROOT, capture_file, qms_environment

PACKETS_PER_SECOND = 50  # G.711 at 20 ms, each way
SETTLE_SECONDS = 3.0  # after the replay: the capture's queue drains, BYEs are handled
QMS_TOOLS = {
    "sniff": "manage.py sniff (tcpdump into PcapStream)",
    "dumpcap": "dumpcap -B 512 into feed_pcap (prototype)",
    "tcpdump": "tcpdump -B 524288 -U into feed_pcap (prototype)",
}
# tshark's rtp,streams row: ... Payload  Packets  Lost (percent) ...
STREAM_ROW = re.compile(r"\s(\d+)\s+(-?\d+) \((-?[\d.]+)%\)")
NAMESPACE, CAPTURE_END, REPLAY_END = "qms-bench", "qms-bench0", "qms-bench1"
# Where the capture listens, and how the replay is sent: loopback, or the veth pair.
CAPTURE_INTERFACE = "lo"
REPLAY = ["tcpreplay", "-i", "lo"]


def make_veth_pair() -> None:
    """The namespace and its veth pair: tcpreplay sends in the namespace, QMS listens out."""
    remove_veth_pair()
    for command in (
        ["ip", "netns", "add", NAMESPACE],
        ["ip", "link", "add", CAPTURE_END, "type", "veth", "peer", "name", REPLAY_END,
         "netns", NAMESPACE],
        ["ip", "link", "set", CAPTURE_END, "up"],
        ["ip", "-n", NAMESPACE, "link", "set", REPLAY_END, "up"],
    ):  # fmt: skip
        subprocess.run(command, check=True)
    globals()["CAPTURE_INTERFACE"] = CAPTURE_END
    globals()["REPLAY"] = ["ip", "netns", "exec", NAMESPACE, "tcpreplay", "-i", REPLAY_END]


def remove_veth_pair() -> None:
    """The namespace gone, and with it both ends of the pair."""
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, check=False)


def replay(capture: Path, pps: int) -> str:
    done = subprocess.run([*REPLAY, "-K", f"--pps={pps}", str(capture)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout + done.stderr


# The capture process's peak resident memory in the last run (VmHWM, KiB), read just before
# it is stopped: the sniff command's own process, not its tcpdumps or finishing process.
last_peak_kib = 0


def replay_rate(output: str) -> str:
    """tcpreplay's own account of the replay ("Actual: N packets ... in S seconds", "Rated:
    ... pps"): the rate the wire saw, not the one asked for."""
    lines = [
        line.strip()
        for line in output.splitlines()
        if line.strip().startswith(("Actual:", "Rated:"))
    ]
    return "; ".join(lines) or "tcpreplay printed no rate"


def peak_rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) if found else 0


def while_replaying(command: list[str], env: dict[str, str], capture: Path, pps: int) -> str:
    """Start `command`, replay the capture, stop it (its process group) with SIGINT; its
    whole output."""
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=output, start_new_session=True
        )
        time.sleep(3)  # the capture is open before the first packet
        print(f"  replayed for {Path(command[0]).name}: {replay_rate(replay(capture, pps))}")
        time.sleep(SETTLE_SECONDS)
        global last_peak_kib
        last_peak_kib = peak_rss_kib(child.pid)
        os.killpg(child.pid, signal.SIGINT)
        child.wait(timeout=600)
        output.seek(0)
        return output.read()


def qms_command(via: str, buffer_mib: int = 0) -> list[str]:
    if via == "dumpcap":
        dumpcap = f'dumpcap -i {CAPTURE_INTERFACE} -B 512 -f "udp or tcp" -P -w -'
        pipe = f"{dumpcap} | {PYTHON} bench/pipe_import.py"
        return ["sh", "-c", pipe]
    if via == "tcpdump":
        tcpdump = f"tcpdump -i {CAPTURE_INTERFACE} -B 524288 -U -Z root -w - 'udp or tcp'"
        return ["sh", "-c", f"{tcpdump} | {PYTHON} bench/pipe_import.py"]
    sniff = [str(PYTHON), "manage.py", "sniff", "--interface", CAPTURE_INTERFACE]
    sniff += ["--bpf", "udp or tcp"]
    return sniff + (["--buffer-mib", str(buffer_mib)] if buffer_mib else [])


def run_sniff(
    capture: Path, pps: int, var_dir: Path, via: str, packets_each_way: int, buffer_mib: int = 0
) -> tuple[str, dict]:
    env = qms_environment(var_dir)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    sniff = qms_command(via, buffer_mib)
    output = while_replaying(sniff, env, capture, pps)
    script = (
        "import json\n"
        "from recorder.models import Recording\n"
        "rows = list(Recording.objects.values('status', 'quality'))\n"
        "print(json.dumps(rows))\n"
    )
    found = subprocess.run([PYTHON, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    rows = json.loads(found.stdout.strip().splitlines()[-1])
    return output, summarise(rows, packets_each_way)


def summarise(rows: list[dict], packets_each_way: int) -> dict:
    """A recording is loss-free when both directions hold every packet the generator wrote
    (not only no gap in the sequence numbers: a lost tail leaves none)."""
    directions = [q for row in rows for q in (row["quality"] or {}).values()]
    expected = sum(q["expected"] for q in directions)
    received = sum(q["received"] for q in directions)
    loss_free = sum(
        1
        for row in rows
        if row["status"] == "complete"
        and len(row["quality"] or {}) == 2
        and all(
            q["lost"] <= 0 and q["received"] >= packets_each_way for q in row["quality"].values()
        )
    )
    return {"recordings": len(rows), "loss_free": loss_free, "expected": expected,
            "received": received}  # fmt: skip


def run_tshark(capture: Path, pps: int) -> tuple[int, int, int]:
    command = ["tshark", "-i", CAPTURE_INTERFACE, "-q", "-f", "udp or tcp", "-z", "rtp,streams"]
    output = while_replaying(command, dict(os.environ), capture, pps)
    streams = [(int(m.group(1)), int(m.group(2))) for m in STREAM_ROW.finditer(output)]
    lossless = sum(1 for _, lost in streams if lost <= 0)
    return len(streams), lossless, sum(packets for packets, _ in streams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--pps", type=int, default=25000)
    parser.add_argument("--sccp", action="store_true")
    parser.add_argument("--via", choices=list(QMS_TOOLS), default="sniff")
    parser.add_argument("--buffer-mib", type=int, default=0, help="sniff's kernel ring")
    parser.add_argument("--veth", action="store_true", help="replay through a veth pair")
    arguments = parser.parse_args()
    if arguments.veth:
        make_veth_pair()
    try:
        measure(arguments)
    finally:
        if arguments.veth:
            remove_veth_pair()


def measure(arguments: argparse.Namespace) -> None:
    for tool in ("tcpreplay", "tshark"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {tool}")
    capture = capture_file(arguments.calls, arguments.seconds, arguments.sccp)
    var_dir = Path(tempfile.mkdtemp(prefix="qms-live-", dir=ROOT / "var"))
    try:
        each_way = round(arguments.seconds * PACKETS_PER_SECOND)
        output, qms = run_sniff(
            capture, arguments.pps, var_dir, arguments.via, each_way, arguments.buffer_mib
        )
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    drops = re.findall(r"(\d+) dropped by the kernel", output)
    drops += re.findall(r"received/dropped on interface '[^']*': \d+/(\d+)", output)
    drops += re.findall(r"(\d+) packets dropped by kernel", output)
    if not drops:
        print(output[-1500:])
    qms_peak = last_peak_kib
    streams, lossless, counted = run_tshark(capture, arguments.pps)
    ring = f", --buffer-mib {arguments.buffer_mib}" if arguments.buffer_mib else ""
    ring += f", on {CAPTURE_INTERFACE}" if arguments.veth else ""
    print(
        f"| {capture.name} @ {arguments.pps:,} pps | {QMS_TOOLS[arguments.via]}{ring} | "
        f"{qms['recordings']} recordings, {qms['loss_free']} complete with no RTP lost | "
        f"{qms['received']:,} of {qms['expected']:,} RTP packets | kernel drops "
        f"{', '.join(drops) or '?'} |"
    )
    if arguments.via == "sniff":
        print(f"capture process peak RSS (VmHWM before the stop): {qms_peak / 1024:.0f} MiB")
    print(
        f"| {capture.name} @ {arguments.pps:,} pps | tshark -i {CAPTURE_INTERFACE} | "
        f"{streams} streams, "
        f"{lossless} with no RTP lost | {counted:,} RTP packets | |"
    )


if __name__ == "__main__":
    sys.exit(main())
