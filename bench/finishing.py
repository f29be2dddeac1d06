"""What finishing a short call costs, on its own: issue 13 §3's "at most 2 ms of one core".

    .venv/bin/python bench/finishing.py --calls 1000 --seconds 4
    .venv/bin/python bench/finishing.py --calls 1000 --seconds 4 --profile

Imports bench/traffic.py's capture of N concurrent calls once, in a var folder of its own,
with the finishing process held back: every call ends as in production (its spool closed,
its PendingFinalisation row committed) and nothing is finished. A pristine copy of the
folder is kept. Each of --runs runs restores the folder from it (the pending rows name
their spools by absolute path), syncs the disk, and finishes every pending recording by
the same finish_batch a command's finishing process runs, in batches of its size, reading
this process's CPU time around it: Django's set-up is apart, the imports the first batch
makes are in, as they are in a finishing process's own count. Prints the CPU time a call
and how the recordings came out (all "complete" when nothing went wrong).

--against DIR finishes the same folder with another checkout's code in turns with this
one's (runs alternate, so both see the same machine). --profile runs the first run under
cProfile and prints the 45 costliest functions.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
# The code that finishes: this checkout, or (--against) another one.
CODE = Path(os.environ.get("QMS_BENCH_CODE", ROOT))
sys.path.insert(0, str(CODE))

from bench.end_to_end import BENCH_KEY, capture_file  # noqa: E402


def environment(var: Path) -> dict:
    return {**os.environ, "QMS_VAR_DIR": str(var), "DEBUG": "0", "SECRET_KEY": BENCH_KEY}


def prepare(capture: Path, var: Path) -> None:
    """The capture imported into `var` with every recording left pending."""
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=environment(var),
                   check=True)  # fmt: skip
    subprocess.run([PYTHON, __file__, "--import-only", str(capture)], cwd=ROOT,
                   env=environment(var), check=True)  # fmt: skip


def import_held_back(capture: Path) -> None:
    """(In the child) import_pcap with a finisher that only keeps what it is handed."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    django.setup()
    from collections import Counter

    from django.core.management import call_command

    import recorder.nodes.management.commands.import_pcap as command

    class HeldBack:
        processes = 1

        def __init__(self) -> None:
            self.outcomes: Counter = Counter()

        def start(self) -> None:
            pass

        def submit(self, pending) -> None:
            pass

        def close(self) -> None:
            pass

    if hasattr(command, "sink_for_commands"):  # the sink in a thread, its finisher held back
        from recorder.sinks.database import DatabaseSink

        command.sink_for_commands = lambda node, recording=True: DatabaseSink(
            node, finisher=HeldBack()
        )
    else:  # an earlier commit's code
        command.finisher_for_commands = HeldBack
    call_command("import_pcap", str(capture))


def finish_all(profile: bool) -> tuple[float, int, dict]:
    """(In the child) every pending recording finished as a finishing process would: the
    CPU seconds it took, how many, and their outcomes (with the CPU split in user and
    system time)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    django.setup()
    from collections import Counter

    from recorder.nodes.models import PendingFinalisation
    from recorder.recordings import finishing_process
    from recorder.recordings.finalise import finish_batch
    from recorder.recordings.finishing_process import BATCH

    # As a finishing process does after its set-up (an earlier commit's code may not).
    getattr(finishing_process, "settle_heap", lambda: None)()

    pending = list(PendingFinalisation.objects.order_by("pk").values_list("pk", flat=True))
    outcomes: Counter = Counter()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for first in range(0, len(pending), BATCH):
        outcomes.update(finish_batch(pending[first : first + BATCH]).values())
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    outcomes["user/system CPU"] = f"{user:.2f}/{system:.2f} s"
    spent = user + system
    if profiler is not None:
        import pstats

        profiler.disable()
        order = os.environ.get("QMS_BENCH_SORT", "cumulative")  # or tottime
        pstats.Stats(profiler).sort_stats(order).print_stats(45)
    return spent, len(pending), dict(outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--against", type=Path,
                        help="another checkout (an earlier commit's worktree) whose code "
                        "finishes the same folder in turns with this one's")  # fmt: skip
    parser.add_argument("--import-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--finish-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.import_only:
        import_held_back(options.import_only)
        return
    if options.finish_only:
        spent, calls, outcomes = finish_all(options.profile)
        print(f"RESULT {spent:.3f} {calls} {outcomes}")
        return
    capture = capture_file(options.calls, options.seconds)
    with tempfile.TemporaryDirectory(prefix="qms-finishing-", dir=ROOT / "var") as scratch:
        # The pending rows name their spools by absolute path: each run finishes the
        # folder the import made, restored from a pristine copy.
        var, pristine = Path(scratch) / "var", Path(scratch) / "pristine"
        prepare(capture, var)
        shutil.copytree(var, pristine, symlinks=True)
        codes = [ROOT, options.against] if options.against else [ROOT]
        # (This process runs this checkout's bench; a child finishing with an earlier
        # commit's code imports that commit's, which may not have it.)
        from bench.end_to_end import compile_project

        for code in codes:
            compile_project(code)
        for run in range(options.runs * len(codes)):
            code = codes[run % len(codes)].resolve()
            if run:
                # Set aside, not removed, until the scratch folder goes at the end: see
                # end_to_end.LEFT_FOR_THE_END (the files a run creates would pay for it).
                var.rename(Path(scratch) / f"finished-{run}")
                shutil.copytree(pristine, var, symlinks=True)
            # The copy's writeback would slow every file the run creates (ext4's journal).
            os.sync()
            command = [PYTHON, __file__, "--finish-only"]
            if options.profile and run == 0:
                command.append("--profile")
            child = {**environment(var), "QMS_BENCH_CODE": str(code)}
            done = subprocess.run(command, cwd=code, env=child, check=True,
                                  capture_output=True, text=True)  # fmt: skip
            result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
            if options.profile and run == 0:
                print(done.stdout)
            spent, calls, outcomes = result[0].split(" ", 3)[1:]
            per_call = float(spent) / int(calls) * 1000
            print(f"run {run} ({code}): {calls} calls finished in {float(spent):.2f} s of CPU, "
                  f"{per_call:.2f} ms a call; outcomes {outcomes}")  # fmt: skip


if __name__ == "__main__":
    main()
