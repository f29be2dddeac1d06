"""Recording end to end: a pcap in, finished stereo WAV files and their rows out.

    .venv/bin/python bench/end_to_end.py --calls 1000 --seconds 20
    .venv/bin/python bench/end_to_end.py --calls 1000 --seconds 180

Generates (or reuses) the bench/traffic.py capture for N concurrent G.711 calls, then,
each pinned to CPU 0 with `taskset -c 0` (or the --cores given), times:

- the whole `manage.py import_pcap FILE` command on a fresh SQLite database and recordings
  folder (start-up, capture, bindings, calls, decoding, WAV files, SHA-256, rows), from
  outside, with its peak RSS (the command's own process; its sink thread shares the core);
- `tshark -q -z rtp,streams -r FILE`, the peer, on the same file in the same run.

QMS runs as in production, with DEBUG off; before each timed command the file is read into
the page cache, so that neither is timed reading the disk.

Then it checks what came out: one complete recording per call, a WAV file of the call's
length for each. Prints one Markdown table row per run for bench/RESULTS.md. With --cost it
also imports the file without recording, and prints what recording costs a call in CPU
time (the finishing processes included).
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
BENCH_KEY = "bench-only-key-" + "x" * 50


def capture_file(calls: int, seconds: float, sccp: bool = False) -> Path:
    """bench/traffic.py's capture of `calls` concurrent calls, written once and reused."""
    kind = "sccp" if sccp else "sip"
    path = ROOT / "var" / "bench" / f"{kind}-{calls}x{seconds:g}s.pcap"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [PYTHON, "bench/traffic.py", "--calls", str(calls), "--seconds", str(seconds)]
        subprocess.run([*command, *(["--sccp"] if sccp else []), "--out", str(path)], cwd=ROOT,
                       check=True)  # fmt: skip
    return path


def compile_project(code: Path = ROOT) -> None:
    """QMS's own modules byte-compiled, as an install does (docs/deployment.md): a timed
    command then spends no time compiling them, whatever PYTHONDONTWRITEBYTECODE says."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", "-j", "0", "manage.py", "qms",
                    "recorder", "extensions", "integrations"], cwd=code, check=True)  # fmt: skip


# The run folders, removed when the bench ends rather than between its runs. This machine's
# ext4 has no journal, and there creating a file skips every inode freed in about the last
# half minute (the kernel's recently_deleted()): right after a run's 2,000 files were
# removed, each file the next run created cost 0.3-0.7 ms of system time, against 0.02 ms
# when nothing had been removed (bench/RESULTS.md, session 16), a cost of the bench's own
# clearing up, not of the command it times.
LEFT_FOR_THE_END: list[Path] = []


def remove_at_the_end(path: Path) -> None:
    if not LEFT_FOR_THE_END:
        atexit.register(_remove_left)
    LEFT_FOR_THE_END.append(path)


def _remove_left() -> None:
    for path in LEFT_FOR_THE_END:
        shutil.rmtree(path, ignore_errors=True)


def warm(capture: Path) -> None:
    """Read the capture into the page cache before a timed run, so that neither command
    is timed reading the disk (QMS lets the kernel drop what it has read)."""
    with open(capture, "rb") as source:
        while source.read(1 << 24):
            pass


# The cores the timed commands may run on (taskset -c): "0" puts QMS's capture process and
# its finishing process on one core, as tshark has; "0,1" gives finishing a core of its own.
CORES = "0"
# The CPU time (user and system, seconds) of the last timed command and its children.
last_cpu = 0.0


def timed(command: list[str], environment: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in KiB of the child, and its output; its CPU time (children
    included: the finishing processes are waited for) goes to last_cpu. The child is waited
    for with wait4, so that its own usage is read, not the largest of every child this
    bench ran (tshark's, in a later pair)."""
    global last_cpu
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        child = subprocess.Popen(
            ["taskset", "-c", CORES, *command], cwd=ROOT, env=environment,
            stdout=output, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command, text)
    last_cpu = usage.ru_utime + usage.ru_stime
    return elapsed, usage.ru_maxrss, text


def qms_environment(var_dir: Path) -> dict[str, str]:
    """A production-like setting (DEBUG off: no query log kept in memory) on SQLite."""
    environment = dict(os.environ, QMS_VAR_DIR=str(var_dir), DEBUG="0", SECRET_KEY=BENCH_KEY)
    environment.pop("DATABASE_URL", None)
    return environment


def run_qms(capture: Path, var_dir: Path, *options: str) -> tuple[float, int, str]:
    environment = qms_environment(var_dir)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=environment, check=True)
    warm(capture)
    return timed([str(PYTHON), "manage.py", "import_pcap", str(capture), *options], environment)


def recording_cost(capture: Path, calls: int, recorded_cpu: float) -> str:
    """What recording costs a call, in CPU time: the same import without recording (the
    capture, signalling, bindings and call rows only) taken from the one with it, per call:
    spooling, finishing (decoding, the audio file, its hash and waveform) and storing."""
    var_dir = Path(tempfile.mkdtemp(prefix="qms-e2e-", dir=ROOT / "var"))
    try:
        run_qms(capture, var_dir, "--no-recording")
    finally:
        remove_at_the_end(var_dir)
    per_call = (recorded_cpu - last_cpu) / calls * 1000
    return (
        f"CPU: {recorded_cpu:.1f} s recording, {last_cpu:.1f} s without recording: "
        f"recording costs {per_call:.2f} ms of CPU a call"
    )


def check_output(var_dir: Path, calls: int, seconds: float) -> str:
    """One complete recording per call, each WAV as long as the call's audio."""
    environment = qms_environment(var_dir)
    script = (
        "from recorder.models import Recording\n"
        "rows = Recording.objects.all()\n"
        "print(rows.count(), rows.filter(status='complete').count())\n"
    )
    found = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script], cwd=ROOT, env=environment,
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1].split()  # fmt: skip
    files = sorted((var_dir / "recordings").rglob("*.wav"))
    lengths = []
    for path in files:
        with wave.open(str(path)) as audio:
            assert audio.getnchannels() == 2
            lengths.append(audio.getnframes() / audio.getframerate())
    short = [length for length in lengths if abs(length - seconds) > 0.1]
    assert int(found[0]) == calls == len(files), (found, len(files))
    assert int(found[1]) == calls, found
    assert not short, f"{len(short)} files are not {seconds} s long: {short[:5]}"
    return f"{calls} complete recordings, {len(files)} stereo WAV files of {seconds:g} s"


def cpu_by_part(output: str, total: float) -> str:
    """Where QMS's CPU went, from what the command and its finishing processes say of
    themselves (to a tenth of a second): finishing, the database process's sink, and the
    rest (the capture, every process's start-up, the pipes between them)."""
    reports = re.findall(r"finished \d+ recordings in ([\d.]+) s", output)
    finishing = [float(found) for found in reports]
    database = re.search(r"database writes: ([\d.]+) s of CPU", output)
    stored = float(database.group(1)) if database else 0.0
    rest = total - sum(finishing) - stored
    return (
        f"CPU by part: finishing {sum(finishing):.1f} s ({len(finishing)} processes), "
        f"database {stored:.1f} s, the rest (capture, start-ups, pipes) {rest:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--cores", default=CORES, help="taskset -c for the timed commands")
    parser.add_argument(
        "--cost", action="store_true", help="also import without recording: CPU per call"
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="pairs of QMS and tshark, one after the other"
    )
    arguments = parser.parse_args()
    globals()["CORES"] = arguments.cores
    capture = capture_file(arguments.calls, arguments.seconds)
    compile_project()
    for _ in range(arguments.runs):
        run_pair(capture, arguments)


def run_pair(capture: Path, arguments: argparse.Namespace) -> None:
    """QMS's import and tshark, one after the other: a row with both times, and the CPU
    time each took (QMS's with its processes; the wall time is what the target is about,
    the CPU time scatters less on a shared machine)."""
    var_dir = Path(tempfile.mkdtemp(prefix="qms-e2e-", dir=ROOT / "var"))
    try:
        qms_seconds, qms_peak, output = run_qms(capture, var_dir)
        qms_cpu = last_cpu
        outcome = check_output(var_dir, arguments.calls, arguments.seconds)
    finally:
        remove_at_the_end(var_dir)
    if arguments.cost:
        print(recording_cost(capture, arguments.calls, qms_cpu))
    rtp = int(re.search(r"RTP packets: (\d+) matched", output).group(1))
    warm(capture)
    tshark_seconds, _, _ = timed(["tshark", "-q", "-z", "rtp,streams", "-r", str(capture)],
                                 dict(os.environ))  # fmt: skip
    tshark_cpu = last_cpu
    print(output.strip().splitlines()[-1])
    print(outcome)
    print(cpu_by_part(output, qms_cpu))
    print(
        f"| {capture.name} | {rtp:,} | {qms_seconds:.1f} s, "
        f"**{rtp / qms_seconds:,.0f} RTP packets/s**"
        f" | {qms_peak // 1024} MiB | {tshark_seconds:.1f} s, {rtp / tshark_seconds:,.0f}"
        f" RTP packets/s | **{tshark_seconds / qms_seconds:.2f}x** |"
        f" CPU {qms_cpu:.1f} s / {tshark_cpu:.1f} s |"
    )


if __name__ == "__main__":
    sys.exit(main())
