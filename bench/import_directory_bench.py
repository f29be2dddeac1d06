"""How long `manage.py import_directory` takes on large phone exports (issue 11, L3).
Run by hand, not by CI.

    .venv/bin/python bench/import_directory_bench.py --rows 1000 10000

Creates its own PostgreSQL database (qms_imports_bench on 127.0.0.1:5432 by default) and
migrates it. For each size it writes an export of that many phones (SCCP and SIP, three
lines each: the phone's own number as line 1 and the next two phones' numbers as lines 2
and 3, an agent per phone) and times the whole command through call_command:

- dry run: the file checked against an empty directory, nothing written;
- import: the file into an empty directory;
- re-import: the same file again (every phone unchanged);
- refused: the same file with its last row giving line 1 to the first phone's number,
  which rule R2 refuses: nothing is written.

Prints seconds and milliseconds per row for each case.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

# The playback bench beside this one creates its PostgreSQL database the same way.
from playback_bench import create_database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADER = "device,protocol,ip,static_ip,agent,line1,line2,line3"


def configure(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "qms.settings"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-only-" + "x" * 40)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def export_rows(rows: int) -> list[str]:
    lines = [HEADER]
    for index in range(rows):
        protocol = "sccp" if index % 2 else "sip"
        numbers = [str(100000 + (index + step) % rows) for step in range(3)]
        ip = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
        lines.append(
            f"SEP{0x001122000000 + index:012X},{protocol},{ip},no,Agent {index:06d},"
            + ",".join(numbers)
        )
    return lines


def write_export(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timed(path: Path, *options: str) -> tuple[float, str]:
    from django.core.management import CommandError, call_command

    started = time.perf_counter()
    output = io.StringIO()
    try:
        call_command("import_directory", str(path), *options, stdout=output, stderr=io.StringIO())
        outcome = output.getvalue().strip().splitlines()[-1]
    except CommandError as error:
        outcome = str(error).splitlines()[0]
    return time.perf_counter() - started, outcome


def empty_directory() -> None:
    from extensions.models import Agent, Extension, LineAppearance, Phone

    LineAppearance.objects.all().delete()
    Phone.objects.all().delete()
    Extension.objects.all().delete()
    Agent.objects.all().delete()


CASES = ["dry run", "import", "re-import", "refused"]


def measure(rows: int, folder: Path, cases: list[str]) -> None:
    lines = export_rows(rows)
    good = write_export(folder / f"export-{rows}.csv", lines)
    clash = f"SEP{0xFFFF00000000:012X},sip,,no,Intruder,{lines[1].split(',')[5]},,"
    refused = write_export(folder / f"export-{rows}-refused.csv", [*lines, clash])
    empty_directory()
    for case, path, options in [
        ("dry run", good, ["--dry-run"]),
        ("import", good, []),
        ("re-import", good, []),
        ("refused", refused, []),
    ]:
        if case not in cases:
            continue
        seconds, outcome = timed(path, *options)
        print(
            f"{rows:>7,} rows  {case:<10} {seconds:8.2f} s  {seconds / rows * 1000:7.2f} ms/row"
            f"  {outcome[:90]}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="qms_imports_bench")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    parser.add_argument("--folder", type=Path, default=ROOT / "var" / "bench")
    options = parser.parse_args()
    create_database(options.server, options.database)
    configure(f"{options.server}/{options.database}")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    options.folder.mkdir(parents=True, exist_ok=True)
    for rows in options.rows:
        measure(rows, options.folder, options.cases)


if __name__ == "__main__":
    main()
