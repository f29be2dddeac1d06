"""Shared test ground: real services when configured, a skip (or a failure under
QMS_REQUIRE_SERVICES=1) with a reason when they are not."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("QMS_REQUIRE_SERVICES") == "1"
PUBLIC_CAPTURES = Path(
    os.environ.get(
        "QMS_PUBLIC_CAPTURES",
        Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / "public",
    )
)


def need(available: bool, reason: str) -> None:
    """Skip a test whose service or tool is absent; fail instead when CI requires them."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (QMS_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def audit_trail_flushable_on_sqlite() -> Iterator[None]:
    """Between transactional tests Django empties SQLite tables with DELETE, which the audit
    trail's append-only triggers refuse, as they should: lift them around that flush alone."""
    import importlib

    # The backend's module first: importing its operations module alone is a cycle.
    from django.db.backends.sqlite3.base import DatabaseWrapper

    operations = DatabaseWrapper.ops_class
    triggers = importlib.import_module("recorder.migrations.0006_audit_append_only_everywhere")
    flush = operations.sql_flush

    def sql_flush(self, style, tables, **kwargs) -> list[str]:
        statements = flush(self, style, tables, **kwargs)
        if "recorder_auditentry" not in tables:
            return statements
        return [*triggers.SQLITE_DROP_TRIGGERS, *statements, *triggers.SQLITE_TRIGGERS]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operations, "sql_flush", sql_flush)
        yield


@pytest.fixture
def postgresql(transactional_db) -> None:
    from django.db import connection

    need(
        connection.vendor == "postgresql",
        "needs PostgreSQL: run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/qms",
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator:
    """A redis-server of the test's own on a free port, without persistence (the capture
    node and production tests: tests/recorder/nodes/capture_node.py)."""
    from tests.recorder.nodes.capture_node import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def public_captures() -> Path:
    need(PUBLIC_CAPTURES.is_dir(), f"needs the public captures in {PUBLIC_CAPTURES}")
    return PUBLIC_CAPTURES


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"needs the system tool {name}")
    return path


def need_loopback_capture() -> None:
    """Live tests capture on lo through tcpdump, as sniff does: it must be installed and
    allowed to capture (root, or CAP_NET_RAW on tcpdump)."""
    need_tool("tcpdump")
    from recorder.capture.sources import CaptureFileError
    from recorder.capture.tcpdump import TcpdumpCapture

    capture = TcpdumpCapture(["lo"], "udp port 9", buffer_mib=2)
    try:
        capture.start()
    except CaptureFileError as error:
        need(False, f"needs permission to capture on lo (root or CAP_NET_RAW): {error}")
    finally:
        capture.close()


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real small filesystem, so a full disk is the kernel's ENOSPC and not a mock."""
    mount_point.mkdir()
    need(os.geteuid() == 0, "mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    need(mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture(autouse=True)
def _fresh_call_servers() -> Iterator[None]:
    """The call servers are cached per process (extensions/trust.py); a test's rolled-back
    CallServer rows must not outlive it in that cache."""
    from extensions.trust import forget_call_servers

    forget_call_servers()
    yield
    forget_call_servers()
