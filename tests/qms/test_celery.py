"""The Celery app: in-process without a broker, a real worker on Redis with one."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import EagerResult
from django.conf import settings
from django.db import connection
from django.utils import timezone

from extensions.models import Binding
from extensions.services import apply_binding
from extensions.tasks import expire_stale_bindings
from integrations.observations import BindingSeen, BindingSource
from qms.celery import app as celery_app
from tests.conftest import need

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TEST_REDIS_URL = os.environ.get("QMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TASK_NAME = "extensions.tasks.expire_stale_bindings"


def lapsed_binding(extension: str = "9001", ip: str = "10.20.0.11") -> Binding:
    """A SIP registration seen ten minutes ago for a minute: due to expire now."""
    seen = BindingSeen(
        extension=extension,
        ip=ip,
        source=BindingSource.SIP_REGISTER,
        seen_at=timezone.now() - timedelta(minutes=10),
        expires_in=60,
    )
    return apply_binding(seen).binding


def test_the_app_discovers_the_directory_tasks() -> None:
    assert TASK_NAME in celery_app.tasks


@pytest.mark.django_db
def test_without_a_broker_a_task_runs_in_process_and_expires_a_lapsed_binding() -> None:
    if settings.CELERY_BROKER_URL:
        pytest.skip("CELERY_BROKER_URL is set, so tasks are not run in-process")
    binding = lapsed_binding()
    assert binding.ended_at is None

    result = expire_stale_bindings.delay()

    assert isinstance(result, EagerResult)
    assert result.get() == 1
    binding.refresh_from_db()
    assert binding.end_reason == Binding.EndReason.EXPIRED
    assert binding.ended_at == binding.expires_at


@pytest.mark.django_db
def test_without_a_broker_a_binding_still_within_its_lifetime_stays_open() -> None:
    if settings.CELERY_BROKER_URL:
        pytest.skip("CELERY_BROKER_URL is set, so tasks are not run in-process")
    seen = BindingSeen("9002", "10.20.0.12", BindingSource.SIP_REGISTER, timezone.now(), 3600)
    binding = apply_binding(seen).binding

    assert expire_stale_bindings.delay().get() == 0
    binding.refresh_from_db()
    assert binding.ended_at is None


# A real worker on Redis ------------------------------------------------------------------


@pytest.fixture
def test_redis() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        need(False, f"needs Redis at {TEST_REDIS_URL} (QMS_TEST_REDIS_URL): {error}")
    finally:
        client.close()
    return TEST_REDIS_URL


def worker_database_url() -> str:
    """The test database as a DATABASE_URL, so a worker process writes where the test reads."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    user = quote(db["USER"], safe="")
    return f"postgres://{user}{password}@{db['HOST']}{port}/{quote(db['NAME'])}"


@pytest.fixture
def celery_worker_process(
    postgresql: None, test_redis: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """`celery -A qms worker` on a queue of its own, configured only through the
    environment, as an operator would run it."""
    queue = f"qms-test-{uuid.uuid4().hex}"
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DEBUG="1",
        DATABASE_URL=worker_database_url(),
        CELERY_BROKER_URL=test_redis,
        CELERY_RESULT_BACKEND=test_redis,
        QMS_VAR_DIR=str(tmp_path),
    )
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "qms", "worker", "--pool", "solo"]
    command += ["--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "INFO"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield queue, log_path
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        forget_queue(test_redis, queue)


def forget_queue(redis_url: str, queue: str) -> None:
    """Drop the routing keys kombu keeps for the queue, so test runs leave Redis as found."""
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"*{queue}*"):
            client.delete(key)
    finally:
        client.close()


def test_a_worker_on_redis_consumes_a_published_task_and_expires_a_lapsed_binding(
    celery_worker_process: tuple[str, Path], test_redis: str
) -> None:
    queue, log_path = celery_worker_process
    binding = lapsed_binding()
    # A client app with only the broker and result backend: it publishes the task by its
    # registered name, exactly as celery beat would, and reads the worker's answer back.
    client = Celery("qms-test-client", broker=test_redis, backend=test_redis, set_as_current=False)
    try:
        sent = client.tasks[TASK_NAME].apply_async(queue=queue, ignore_result=False)
        try:
            expired = sent.get(timeout=15)
        except ResultTimeout:
            pytest.fail(f"the worker did not answer within 15 s:\n{log_path.read_text()}")
        sent.forget()
    finally:
        client.close()

    assert expired == 1
    binding.refresh_from_db()
    assert binding.end_reason == Binding.EndReason.EXPIRED
    assert binding.ended_at == binding.expires_at


# Messages already queued in Redis and beat's schedule name tasks by these strings. They were
# the tasks' dotted paths when the code moved into its rooms (issue 12) and never change.
WIRE_TASK_NAMES = {
    "extensions.tasks.expire_stale_bindings",
    "recorder.tasks.end_lapsed_listens",
    "integrations.shoretel.tasks.poll_tapi_bridges",
    "recorder.tasks.apply_binding",
    "recorder.tasks.compute_peaks",
    "recorder.tasks.finalise_recording",
    "recorder.tasks.note_encrypted_signalling",
    "recorder.tasks.purge_expired_recordings",
    "recorder.tasks.record_call",
    "recorder.tasks.recover_spool",
    "recorder.tasks.sweep_stale_calls",
}


def test_every_task_keeps_the_name_queued_messages_and_beat_use() -> None:
    celery_app.loader.import_default_modules()
    ours = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert ours == WIRE_TASK_NAMES
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= WIRE_TASK_NAMES
