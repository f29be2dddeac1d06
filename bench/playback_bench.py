"""How fast a supervisor searches a large archive (issue 6, section 5). Run by hand, not by CI.

    .venv/bin/python bench/playback_bench.py                # seed once, then measure
    .venv/bin/python bench/playback_bench.py --reseed       # start the archive afresh
    .venv/bin/python bench/playback_bench.py --explain var/bench/playback_plans.txt

Creates its own PostgreSQL database (qms_bench1m on 127.0.0.1:5432 by default), migrates
it, and seeds 1,000,000 recordings across 500 agents in 50 teams with COPY. Then, logged
in as the supervisor of one team, it times the API list and the recordings list page
unfiltered, with each filter and sorted: 200 requests each through Django's test Client
in the same process, after a few warm-up requests that are not counted. Prints p50 and
p95 in milliseconds per case, the number of matches, and, with
--explain, writes EXPLAIN (ANALYZE, BUFFERS) of each case's SQL to a file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 20261126
END = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 365
DIRECTIONS = ["inbound", "outbound", "internal"]
# (status, share of recordings)
STATUSES = [("complete", 0.95), ("partial", 0.03), ("not_decodable", 0.01), ("failed", 0.01)]
WARM_UP = 5


def configure(database_url: str) -> None:
    """Production-like settings: DEBUG off (no query log), plain HTTP from the test Client."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "qms.settings"
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-only-" + "x" * 40)
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def create_database(server_url: str, name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{server_url}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")
    connection.close()


# Seeding --------------------------------------------------------------------------------------


@dataclass
class Directory:
    agent_ids: list[int]
    numbers: list[str]  # numbers[i] is agent_ids[i]'s extension
    phone_ids: list[int]  # phone_ids[i] has numbers[i] as line 1


def seed(recordings: int, agents: int, teams: int) -> None:
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)
    started = time.perf_counter()
    directory = seed_directory(agents, teams)
    print(f"directory: {agents} agents, {teams} teams ({time.perf_counter() - started:.1f} s)")
    started = time.perf_counter()
    copy_recordings(directory, recordings)
    print(f"copied {recordings:,} recordings ({time.perf_counter() - started:.1f} s)")
    started = time.perf_counter()
    vacuum_analyze()
    print(f"VACUUM ANALYZE ({time.perf_counter() - started:.1f} s)")


def seed_directory(agents: int, teams: int) -> Directory:
    """Teams of equal size, each with one supervisor; every agent owns one extension that is
    line 1 of their own phone and line 2 of the next agent's phone."""
    from django.contrib.auth.models import User

    from extensions.models import Agent, Extension, LineAppearance, Phone, Team

    team_rows = Team.objects.bulk_create(Team(name=f"Team {t:02d}") for t in range(teams))
    for index, team in enumerate(team_rows):
        supervisor = User.objects.create_user(f"sup-{index:02d}")
        team.supervisors.add(supervisor)
    agent_rows = Agent.objects.bulk_create(Agent(name=f"Agent {a:03d}") for a in range(agents))
    Membership = Agent.teams.through
    Membership.objects.bulk_create(
        Membership(agent_id=agent.pk, team_id=team_rows[index * teams // agents].pk)
        for index, agent in enumerate(agent_rows)
    )
    numbers = [str(20000 + index) for index in range(agents)]
    extensions = Extension.objects.bulk_create(
        Extension(number=number, agent=agent)
        for number, agent in zip(numbers, agent_rows, strict=True)
    )
    phones = Phone.objects.bulk_create(
        Phone(device_name=f"SEP{0x001122000000 + index:012X}", protocol="sccp")
        for index in range(agents)
    )
    lines = [
        LineAppearance(phone=phone, line_number=1, extension=ext)
        for phone, ext in zip(phones, extensions, strict=True)
    ]
    lines += [
        LineAppearance(phone=phones[(index + 1) % agents], line_number=2, extension=extension)
        for index, extension in enumerate(extensions)
    ]
    LineAppearance.objects.bulk_create(lines)
    return Directory([a.pk for a in agent_rows], numbers, [p.pk for p in phones])


def recording_columns() -> list[str]:
    """Every column of recorder_recording but the id, checked against the model so that a
    new NOT NULL column fails here rather than in COPY."""
    from recorder.models import Recording

    columns = [field.column for field in Recording._meta.concrete_fields if not field.primary_key]
    missing = set(columns) - set(ROW_TEMPLATE)
    if missing:
        raise SystemExit(f"the seeder does not know the columns {sorted(missing)}")
    return columns


ROW_TEMPLATE = {
    "signalling_id": None,
    "call_id": "",
    "conversation_id": "",
    "started_at": None,
    "ended_at": None,
    "duration_seconds": 0,
    "direction": "",
    "extension": "",
    "agent_id": None,
    "phone_id": None,
    "remote_party": "",
    "remote_name": "",
    "local_ip": None,
    "remote_ip": None,
    "codec": "PCMU",
    "audio_format": "wav",
    "file": "",
    "size": 0,
    "sha256": "",
    "status": "complete",
    "status_detail": "",
    "dtmf": "[]",
    "quality": "{}",
    "peaks": None,
    "legal_hold": False,
    "mos_estimate": None,
}


def recording_rows(directory: Directory, count: int) -> Iterator[dict]:
    """Recordings spread evenly over agents and a year; one in ten is on another agent's
    extension (line 2 of their phone), one in twenty has no MOS estimate."""
    rng = random.Random(SEED)
    agents = len(directory.agent_ids)
    statuses = [status for status, _ in STATUSES]
    weights = [share for _, share in STATUSES]
    quality = json.dumps(
        {
            side: {"expected": 1500, "received": 1497, "lost": 3, "jitter_ms": 2.5}
            for side in ("agent_to_far", "far_to_agent")
        }
    )
    for n in range(count):
        who = rng.randrange(agents)
        line = who if rng.random() >= 0.1 else (who - 1) % agents
        started = END - timedelta(seconds=rng.randrange(DAYS * 86400))
        duration = round(min(3600.0, rng.lognormvariate(4.5, 1.0)), 2)
        yield {
            **ROW_TEMPLATE,
            "call_id": f"bench-{n}@10.1.0.1",
            "conversation_id": f"bench-{n}",
            "started_at": started.isoformat(),
            "ended_at": (started + timedelta(seconds=duration)).isoformat(),
            "duration_seconds": duration,
            "direction": rng.choice(DIRECTIONS),
            "extension": directory.numbers[line],
            "agent_id": directory.agent_ids[who],
            "phone_id": directory.phone_ids[who],
            "remote_party": f"617{rng.randrange(10_000_000):07d}",
            "local_ip": f"10.1.{who // 250}.{who % 250 + 1}",
            "remote_ip": "192.0.2.10",
            "file": f"bench/{started:%Y/%m/%d}/bench-{n}.wav",
            "size": int(duration * 16000) + 44,
            "sha256": f"{rng.getrandbits(256):064x}",
            "status": rng.choices(statuses, weights)[0],
            "quality": quality,
            "mos_estimate": None if rng.random() < 0.05 else round(rng.uniform(1.5, 4.4), 2),
        }


def copy_recordings(directory: Directory, count: int, batch: int = 100_000) -> None:
    from django.db import connection

    columns = recording_columns()
    rows = recording_rows(directory, count)
    with connection.cursor() as cursor:
        for start in range(0, count, batch):
            buffer = io.StringIO()
            for _ in range(min(batch, count - start)):
                buffer.write("\t".join(copy_value(value) for value in pick(next(rows), columns)))
                buffer.write("\n")
            buffer.seek(0)
            cursor.cursor.copy_expert(
                f"COPY recorder_recording ({', '.join(columns)}) FROM STDIN", buffer
            )
            print(f"  {min(start + batch, count):,}", end="\r", flush=True)


def pick(row: dict, columns: list[str]) -> list:
    return [row[column] for column in columns]


def copy_value(value: object) -> str:
    # COPY's text format: \N is NULL; the values written here hold no tab, newline or
    # backslash.
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def vacuum_analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("recorder_recording", "extensions_extension", "extensions_agent_teams"):
            cursor.execute(f"VACUUM ANALYZE {table}")


# Measuring ------------------------------------------------------------------------------------


@dataclass
class Case:
    """One search, as the API and as the recordings page ask for it (their parameter names
    differ where the page takes dates and the API moments)."""

    name: str
    api: dict
    page: dict | None = None  # None: the same parameters as the API's

    @property
    def page_query(self) -> dict:
        return self.api if self.page is None else self.page


def cases_for(supervisor) -> list[Case]:
    """Unfiltered, each filter with a value from the supervisor's own scope, and sorted."""
    from extensions.models import Agent, Team
    from recorder.playback.access import recordings_visible_to

    team = Team.objects.filter(supervisors=supervisor).first()
    agent = Agent.objects.filter(teams=team).order_by("pk").first()
    number = agent.extensions.values_list("number", flat=True).first()
    sample = recordings_visible_to(supervisor).order_by("pk").first()
    first_day, last_day = (END - timedelta(days=90)).date(), (END - timedelta(days=61)).date()
    durations = {"longer_than": 60, "shorter_than": 300}
    return [
        Case("unfiltered (newest first)", {}),
        Case("agent", {"agent": agent.pk}),
        Case("team", {"team": team.pk}),
        Case("extension", {"extension": number}),
        Case("far-party number (7 digits of it)", {"far_party": sample.remote_party[-7:]}),
        Case(
            "date range (30 days)",
            {
                "since": f"{first_day}T00:00:00Z",
                "until": f"{last_day + timedelta(days=1)}T00:00:00Z",
            },
            {"started_from": first_day, "started_to": last_day},
        ),
        Case("duration range (60-300 s)", durations),
        Case("direction", {"direction": "inbound"}),
        Case("status", {"status": "partial"}),
        Case("MOS below 2.0", {"mos_below": "2.0"}),
        Case("sorted by duration, longest first", {"sort": "-duration"}),
        Case("sorted by MOS, worst first", {"sort": "mos"}),
        Case(
            "agent + inbound + 60-300 s + MOS below 3.5",
            {"agent": agent.pk, "direction": "inbound", **durations, "mos_below": "3.5"},
        ),
    ]


def timed(client, url: str, requests: int) -> tuple[list[float], object]:
    for _ in range(WARM_UP):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    durations = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        durations.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return durations, response


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(supervisor, requests: int, only: str = "") -> list[tuple]:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(supervisor)
    page = reverse("recorder:list")
    results = []
    for case in cases_for(supervisor):
        if only not in case.name:
            continue
        api, response = timed(client, f"/api/recordings/{query_string(case.api)}", requests)
        matches = response.json()["count"]
        url = f"{page}{query_string(case.page_query)}"
        durations, response = timed(client, url, requests)
        # The page and the API must have found the same recordings.
        assert f'id="match-count">{matches} recording' in response.content.decode(), case.name
        row = [case.name, matches, *p50_p95(api), *p50_p95(durations)]
        results.append(tuple(row))
        print(" | ".join(str(cell) for cell in row), flush=True)
    return results


def query_string(query: dict) -> str:
    return f"?{urlencode(query)}" if query else ""


def p50_p95(durations: list[float]) -> list[str]:
    return [f"{statistics.median(durations):.1f}", f"{percentile(durations, 0.95):.1f}"]


def explain(supervisor, path: Path) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) every query an API list request runs on recordings."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(supervisor)
    with path.open("w") as out:
        for case in cases_for(supervisor):
            query = query_string(case.api)
            with CaptureQueriesContext(connection) as captured:
                client.get(f"/api/recordings/{query}")
            out.write(f"### {case.name} {query}\n\n")
            for sql in (q["sql"] for q in captured.captured_queries):
                if "recorder_recording" in sql and not sql.startswith("INSERT"):
                    out.write(f"{sql}\n\n{plan_of(connection, sql)}\n\n")
    print(f"plans written to {path}")


def plan_of(connection, sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(line for (line,) in cursor.fetchall())


# Main -----------------------------------------------------------------------------------------


def main() -> None:
    options = arguments()
    create_database(options.server, options.database)
    configure(f"{options.server}/{options.database}")
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from recorder.models import Recording

    call_command("migrate", interactive=False, verbosity=0)
    if options.reseed or Recording.objects.count() != options.recordings:
        seed(options.recordings, options.agents, options.teams)
    supervisor = User.objects.get(username="sup-00")
    if options.explain:
        explain(supervisor, Path(options.explain))
        return
    print(" | ".join(["case", "matches", "API p50 ms", "API p95 ms", "page p50 ms", "page p95 ms"]))
    measure(supervisor, options.requests, options.only)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="qms_bench1m")
    parser.add_argument("--recordings", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--teams", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--only", default="", help="the cases whose name contains this")
    parser.add_argument("--explain", metavar="FILE", help="write the query plans, then stop")
    return parser.parse_args()


if __name__ == "__main__":
    main()
