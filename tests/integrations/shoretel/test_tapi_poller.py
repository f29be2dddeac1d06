"""The TAPI poller against the reference bridge over HTTP, on PostgreSQL: the directory's
bindings, ShoreTel calls, and every way the bridge can let it down."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.result import EagerResult
from django.conf import settings
from django.utils import timezone

from extensions.models import Agent, Binding, Extension, Phone
from integrations.shoretel.bridge.simulator import PHONE_A, PHONE_B, BridgeSimulator
from integrations.shoretel.models import TapiBridgeState, TapiCall, TapiEvent
from integrations.shoretel.poller import poll_bridge, poll_due_bridges
from integrations.shoretel.tasks import TASK_NAME, poll_tapi_bridges
from qms.celery import app as celery_app
from tests.conftest import need
from tests.integrations.tapi_bridge import START, bridge_for, gus_at_phone_a, state
from tests.qms.test_celery import forget_queue, worker_database_url

Sim = Callable[..., BridgeSimulator]
pytestmark = pytest.mark.usefixtures("postgresql")


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(START + offset, UTC)


def open_bindings() -> list[tuple[str, str, str]]:
    rows = Binding.objects.filter(ended_at__isnull=True).order_by("extension_number", "ip")
    return [(row.extension_number, row.ip, row.source) for row in rows]


# The directory --------------------------------------------------------------------------------


def test_a_phone_logging_in_becomes_a_tapi_binding_and_places_its_agent(bridge_sim: Sim) -> None:
    phone = gus_at_phone_a()
    simulator = bridge_sim("login")
    bridge = bridge_for(simulator)

    report = poll_bridge(bridge)

    assert (report.outcome, report.events, report.bindings) == ("ok", 1, 2)
    binding = Binding.objects.get()
    assert (binding.extension_number, binding.ip, binding.source) == ("9007", PHONE_A.ip, "tapi")
    assert (binding.device, binding.line_number, binding.phone) == (PHONE_A.device, 1, phone)
    assert (binding.first_seen, binding.ended_at) == (at(0), None)
    assert Agent.objects.get(name="Gus").current_ip == PHONE_A.ip  # rule R7
    assert Phone.objects.get(pk=phone.pk).current_ip == PHONE_A.ip
    polled = state(bridge)
    assert (polled.boot_id, polled.cursor) == (simulator.boot_id, f"{simulator.boot_id}.1")
    assert polled.lines == [["9007", PHONE_A.ip]]
    assert polled.last_success_at is not None and polled.consecutive_failures == 0


def test_an_extension_moving_phones_moves_its_binding_and_its_agent(bridge_sim: Sim) -> None:
    gus_at_phone_a()
    bridge = bridge_for(bridge_sim("move"))

    poll_bridge(bridge)

    assert open_bindings() == [("9007", PHONE_B.ip, "tapi")]
    left = Binding.objects.get(ip=PHONE_A.ip)
    assert (left.first_seen, left.ended_at) == (at(0), at(30))
    assert left.end_reason == Binding.EndReason.UNREGISTERED
    assert Binding.objects.get(ip=PHONE_B.ip).first_seen == at(30)
    assert Agent.objects.get(name="Gus").current_ip == PHONE_B.ip


def test_a_line_gone_from_the_line_list_is_unregistered(bridge_sim: Sim) -> None:
    # The bridge knew 9007 and 9008; it restarts after ShoreTel lost 9008 while it was
    # down, so no event says so: only the line list does.
    before = bridge_sim("demo", pace="manual", elapsed=10)
    bridge = bridge_for(before)
    poll_bridge(bridge)
    assert open_bindings() == [("9007", PHONE_A.ip, "tapi"), ("9008", PHONE_B.ip, "tapi")]
    before.stop()
    bridge.url = bridge_sim("login").url
    bridge.save()

    report = poll_bridge(bridge)

    assert (report.outcome, report.restarts) == ("ok", 1)
    assert open_bindings() == [("9007", PHONE_A.ip, "tapi")]
    assert Binding.objects.get(extension_number="9008").end_reason == "unregistered"
    assert state(bridge).lines == [["9007", PHONE_A.ip]]


# Calls ---------------------------------------------------------------------------------------


def test_an_inbound_call_is_one_tapi_call_with_its_parties_and_times(bridge_sim: Sim) -> None:
    bridge = bridge_for(bridge_sim("inbound-call"))

    report = poll_bridge(bridge)

    assert (report.events, report.calls) == (6, 5)
    call = TapiCall.objects.get()
    assert (call.call_id, call.extension, call.phone_ip) == ("1001", "9007", PHONE_A.ip)
    assert (call.local_side, call.direction, call.origin) == ("callee", "inbound", "external")
    assert (call.caller, call.caller_name, call.callee) == ("6175551212", "Acme Corp", "9007")
    assert (call.started_at, call.connected_at, call.ended_at) == (at(5), at(10), at(12))
    assert call.state == "idle"
    assert call.far_party == ("6175551212", "Acme Corp")
    assert TapiEvent.objects.filter(bridge=bridge).count() == 6


def test_an_outbound_call_keeps_its_first_connect_through_a_hold(bridge_sim: Sim) -> None:
    bridge = bridge_for(bridge_sim("outbound-call"))

    poll_bridge(bridge)

    call = TapiCall.objects.get()
    assert (call.local_side, call.direction, call.far_party) == (
        "caller",
        "outbound",
        ("6175550100", ""),
    )
    assert (call.connected_at, call.ended_at) == (at(10), at(15))


def test_a_call_to_an_extension_qms_knows_is_internal(bridge_sim: Sim) -> None:
    Extension.objects.create(number="6175550100")
    bridge = bridge_for(bridge_sim("outbound-call"))
    poll_bridge(bridge)
    assert TapiCall.objects.get().direction == "internal"


# The beat ------------------------------------------------------------------------------------


def test_the_beat_polls_every_enabled_bridge_in_process(bridge_sim: Sim) -> None:
    if settings.CELERY_BROKER_URL:
        pytest.skip("CELERY_BROKER_URL is set, so tasks are not run in-process")
    entry = celery_app.conf.beat_schedule["tapi-poll"]
    assert (entry["task"], entry["schedule"]) == (TASK_NAME, settings.QMS_TAPI_POLL_SECONDS)
    simulator = bridge_sim("login")
    bridge_for(simulator, name="hq")
    resting = bridge_for(simulator, name="lab", enabled=False)

    result = poll_tapi_bridges.delay()

    assert isinstance(result, EagerResult)
    assert result.get() == {"hq": "ok"}
    assert simulator.requests["/v1/events"] == 1
    assert not TapiBridgeState.objects.filter(bridge=resting).exists()
    assert open_bindings() == [("9007", PHONE_A.ip, "tapi")]


def test_a_bridge_is_polled_again_only_when_its_interval_has_passed(bridge_sim: Sim) -> None:
    simulator = bridge_sim("login")
    bridge = bridge_for(simulator, poll_seconds=30)
    now = timezone.now()
    poll_due_bridges(now)
    poll_due_bridges(now + timedelta(seconds=29))
    assert simulator.requests["/v1/events"] == 1
    assert state(bridge).next_poll_at == now + timedelta(seconds=30)
    poll_due_bridges(now + timedelta(seconds=30))
    assert simulator.requests["/v1/events"] == 2


def test_a_bridge_another_worker_is_polling_is_not_polled_twice(bridge_sim: Sim) -> None:
    simulator = bridge_sim("login")
    bridge = bridge_for(simulator)
    TapiBridgeState.objects.create(bridge=bridge, lease_until=timezone.now() + timedelta(minutes=1))

    assert poll_bridge(bridge).outcome == "busy"
    assert sum(simulator.requests.values()) == 0


# Resilience ----------------------------------------------------------------------------------


def test_a_bridge_that_is_down_is_logged_counted_backed_off_and_then_read(
    bridge_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    simulator = bridge_sim("login")
    bridge = bridge_for(simulator)
    simulator.stop()
    now = timezone.now()

    with caplog.at_level(logging.WARNING, logger="integrations.shoretel"):
        first = poll_bridge(bridge, now)
        second = poll_bridge(bridge, now + timedelta(seconds=5))

    assert (first.outcome, second.outcome) == ("down", "down")
    failing = state(bridge)
    assert (failing.consecutive_failures, failing.last_error_kind) == (2, "down")
    assert "connection refused" in failing.last_error
    # Backing off: the interval (5 s) after one failure, doubled after two.
    assert failing.next_poll_at == now + timedelta(seconds=5 + 10)
    assert "connection refused" in caplog.text and "2 failure(s) in a row" in caplog.text
    assert not Binding.objects.exists()

    simulator.start()
    assert poll_bridge(bridge).outcome == "ok"
    assert state(bridge).consecutive_failures == 0
    assert open_bindings() == [("9007", PHONE_A.ip, "tapi")]


def test_a_slow_bridge_times_out_and_nothing_is_applied(
    bridge_sim: Sim, settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings.QMS_TAPI_TIMEOUT_SECONDS = 1
    simulator = bridge_sim("login", fault="slow", slow_seconds=2.5)
    bridge = bridge_for(simulator)

    with caplog.at_level(logging.WARNING, logger="integrations.shoretel"):
        report = poll_bridge(bridge)

    assert report.outcome == "timeout"
    assert state(bridge).last_error_kind == "timeout"
    assert "no answer within the timeout" in caplog.text
    assert not Binding.objects.exists()


def test_http_500_and_bad_json_apply_nothing_and_keep_the_cursor(
    bridge_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    simulator = bridge_sim("inbound-call", pace="manual", elapsed=0)
    bridge = bridge_for(simulator)
    poll_bridge(bridge)
    cursor = state(bridge).cursor
    simulator.elapsed = 20

    with caplog.at_level(logging.WARNING, logger="integrations.shoretel"):
        simulator.fault = "http-500"
        failed = poll_bridge(bridge)
        simulator.fault = "bad-json"
        garbled = poll_bridge(bridge)

    assert (failed.outcome, garbled.outcome) == ("http-500", "bad-response")
    assert "HTTP 500" in caplog.text and "not JSON" in caplog.text
    assert state(bridge).cursor == cursor
    assert state(bridge).consecutive_failures == 2
    assert not TapiCall.objects.exists()

    simulator.fault = None
    assert poll_bridge(bridge).outcome == "ok"
    assert TapiCall.objects.get().ended_at == at(12)


def test_a_restarted_bridge_is_read_from_the_beginning_without_doubling_anything(
    bridge_sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    gus_at_phone_a()
    simulator = bridge_sim("inbound-call")
    bridge = bridge_for(simulator)
    poll_bridge(bridge)
    bindings = list(Binding.objects.values())
    calls = list(TapiCall.objects.values())
    first_boot = simulator.boot_id

    simulator.restart()
    with caplog.at_level(logging.WARNING, logger="integrations.shoretel"):
        report = poll_bridge(bridge)

    assert (report.outcome, report.restarts, report.events) == ("ok", 1, 6)
    assert "restarted" in caplog.text and first_boot in caplog.text
    restarted = state(bridge)
    assert (restarted.boot_id, restarted.restarts_seen) == (simulator.boot_id, 1)
    assert restarted.cursor == f"{simulator.boot_id}.6"
    # The same facts, reported again under new event ids, changed nothing.
    assert TapiEvent.objects.count() == 12
    assert list(TapiCall.objects.values()) == calls
    assert [row["id"] for row in Binding.objects.values()] == [row["id"] for row in bindings]
    assert open_bindings() == [("9007", PHONE_A.ip, "tapi")]
    assert simulator.requests["/v1/lines"] == 2  # the line list is read again too


def test_duplicated_events_change_nothing_twice(bridge_sim: Sim) -> None:
    simulator = bridge_sim("inbound-call", fault="duplicate")
    bridge = bridge_for(simulator)

    first = poll_bridge(bridge)
    second = poll_bridge(bridge)

    assert (first.events, first.duplicates) == (6, 6)
    assert (second.events, second.duplicates) == (0, 2)
    assert TapiEvent.objects.count() == 6
    assert state(bridge).duplicates_skipped == 8
    assert TapiCall.objects.get().connected_at == at(10)
    assert Binding.objects.count() == 1


@pytest.mark.parametrize(("skew", "word"), [(120.0, "ahead of"), (-90.0, "behind")])
def test_a_bridge_clock_ahead_or_behind_is_measured_and_its_times_corrected(
    bridge_sim: Sim, caplog: pytest.LogCaptureFixture, skew: float, word: str
) -> None:
    bridge = bridge_for(bridge_sim("inbound-call", skew=skew))

    with caplog.at_level(logging.WARNING, logger="integrations.shoretel"):
        poll_bridge(bridge)

    assert state(bridge).clock_offset_seconds == pytest.approx(skew, abs=0.5)
    assert f"{abs(skew):.1f} s {word} QMS's" in caplog.text
    call = TapiCall.objects.get()
    assert abs((call.connected_at - at(10)).total_seconds()) < 0.5
    assert abs((Binding.objects.get().first_seen - at(0)).total_seconds()) < 0.5


# The admin -----------------------------------------------------------------------------------


def test_the_admin_shows_each_bridge_s_state_and_never_its_token(
    bridge_sim: Sim, admin_client: object
) -> None:
    simulator = bridge_sim("login")
    bridge = bridge_for(simulator)
    poll_bridge(bridge)
    simulator.stop()
    poll_bridge(bridge)

    listing = admin_client.get("/admin/shoretel/tapibridge/").content.decode()
    page = admin_client.get(f"/admin/shoretel/tapibridge/{bridge.pk}/change/").content.decode()

    assert "failing (down)" in listing
    assert "connection refused" in page and simulator.boot_id in page
    assert f"{simulator.boot_id}.1" in page  # the cursor
    assert bridge.token not in page
    assert 'name="cursor"' not in page  # state is read-only

    saved = admin_client.post(
        f"/admin/shoretel/tapibridge/{bridge.pk}/change/",
        {"name": "hq", "url": bridge.url, "token": "", "enabled": "on", "poll_seconds": "10"},
    )
    assert saved.status_code == 302
    bridge.refresh_from_db()
    assert (bridge.token, bridge.poll_seconds) == (simulator.token, 10)
    assert state(bridge).cursor == f"{simulator.boot_id}.1"


def test_the_admin_lists_tapi_calls_and_events_read_only(
    bridge_sim: Sim, admin_client: object
) -> None:
    poll_bridge(bridge_for(bridge_sim("inbound-call")))

    calls = admin_client.get("/admin/shoretel/tapicall/")
    events = admin_client.get("/admin/shoretel/tapievent/")
    links = admin_client.get("/admin/shoretel/tapirecording/")

    assert (calls.status_code, events.status_code, links.status_code) == (200, 200, 200)
    assert "6175551212" in calls.content.decode()
    assert "offering" in events.content.decode()
    assert admin_client.get("/admin/shoretel/tapicall/add/").status_code == 403


# A real worker ---------------------------------------------------------------------------------


@pytest.fixture
def redis_worker(postgresql: None, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`celery -A qms worker` on Redis and a queue of its own, writing to the test database."""
    broker = os.environ.get("QMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    probe = redis.Redis.from_url(broker, socket_connect_timeout=1)
    try:
        probe.ping()
    except redis.exceptions.RedisError as error:
        need(False, f"needs Redis at {broker} (QMS_TEST_REDIS_URL): {error}")
    finally:
        probe.close()
    queue = f"qms-tapi-{uuid.uuid4().hex}"
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env |= {"DEBUG": "1", "DATABASE_URL": worker_database_url(), "CELERY_BROKER_URL": broker,
            "QMS_VAR_DIR": str(tmp_path)}  # fmt: skip
    command = [sys.executable, "-m", "celery", "-A", "qms", "worker", "--pool", "solo",
               "--queues", queue, "--hostname", f"{queue}@%h", "--without-gossip",
               "--without-mingle", "--without-heartbeat"]  # fmt: skip
    with (tmp_path / "worker.log").open("w") as output:
        worker = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield broker, queue
    finally:
        worker.terminate()
        worker.wait(timeout=10)
        forget_queue(broker, queue)


def test_a_worker_on_redis_runs_the_beat_s_poll_task_into_bindings_and_calls(
    bridge_sim: Sim, redis_worker: tuple[str, str], tmp_path: Path
) -> None:
    broker, queue = redis_worker
    bridge = bridge_for(bridge_sim("inbound-call"))
    entry = celery_app.conf.beat_schedule["tapi-poll"]
    # Published by name, as celery beat publishes its entries.
    client = Celery("qms-test-beat", broker=broker, set_as_current=False)
    try:
        client.send_task(entry["task"], queue=queue, **entry["options"] | {"expires": 30})
    finally:
        client.close()

    # The page's events commit before the poll ends (its success is saved after the
    # bridge says there is nothing more): wait for both.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        TapiCall.objects.filter(ended_at__isnull=False) and state(bridge).last_success_at
    ):
        time.sleep(0.2)

    log_text = (tmp_path / "worker.log").read_text()
    assert TapiCall.objects.get().ended_at == at(12), log_text
    assert open_bindings() == [("9007", PHONE_A.ip, "tapi")]
    assert state(bridge).last_success_at is not None
