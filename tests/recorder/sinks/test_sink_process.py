"""A capture command's database sink in a process of its own (recorder/sinks/sink_process.py):
the same DatabaseSink, its events sent down a pipe in order, nothing lost when the command
closes it, and a process that dies replaced."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.db import connections, transaction

from extensions.models import Binding
from integrations.observations import CallEvent
from recorder.models import Call
from recorder.sinks.commands import sink_for_commands
from recorder.sinks.database import DatabaseSink
from recorder.sinks.sink_process import SinkProcess
from tests.qms.test_settings import run_manage
from tests.recorder.recordings.test_finisher import needs_shared_database
from tests.recorder.sinks.dying_process import dies_at_start
from tests.recorder.sinks.test_sink_isolation import sighting, snapshot

pytestmark = [needs_shared_database, pytest.mark.django_db(transaction=True)]


def a_call(call_id: str) -> list:
    return [snapshot(call_id, CallEvent.START), snapshot(call_id, CallEvent.END)]


def sink_process(start_finishers: bool = False) -> SinkProcess:
    connections.close_all()  # as sink_for_commands does before it forks
    return SinkProcess("proc", 1, start_finishers=start_finishers)


def stored_within(seconds: float, call_ids: set[str]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if call_ids <= set(Call.objects.values_list("call_id", flat=True)):
            return True
        time.sleep(0.05)
    return False


def replaced_within(seconds: float, sink: SinkProcess, dead: object) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sink.process is not dead:
            return True
        time.sleep(0.01)
    return False


def test_the_events_are_stored_in_order_by_another_process() -> None:
    sink = sink_process()
    assert sink.process.pid != os.getpid()
    sink.binding(sighting("9001", "10.80.0.11"))
    for event in a_call("first") + a_call("second"):
        sink.call(event)
    sink.close()

    assert sink.process.exitcode == 0
    ended = dict(Call.objects.values_list("call_id", "state"))
    assert ended == {"first": "ended", "second": "ended"}
    assert Binding.objects.filter(extension_number="9001", ip="10.80.0.11").exists()
    assert set(Call.objects.values_list("extension", flat=True)) == {"9001"}
    assert (sink.bindings_applied, sum(sink.outcomes.values())) == (1, 1)
    assert not sink.failures
    assert sink.cpu_seconds > 0


def test_a_dead_process_is_replaced_and_what_follows_is_stored() -> None:
    # With its finishing process, forked from it, which may outlive it for a while.
    sink = sink_process(start_finishers=True)
    for event in a_call("before"):
        sink.call(event)
    assert stored_within(30, {"before"})
    first = sink.process
    os.kill(first.pid, signal.SIGKILL)
    first.join(timeout=30)
    for event in a_call("after"):
        sink.call(event)
    assert replaced_within(30, sink, first)
    sink.close()

    assert first.exitcode == -signal.SIGKILL and sink.process is not first
    assert sink.restarts == 1 and sink.failures == {"database process ended": 1}
    assert dict(Call.objects.values_list("call_id", "state")) == {
        "before": "ended",
        "after": "ended",
    }


def test_a_process_whose_command_is_gone_ends() -> None:
    sink = sink_process(start_finishers=True)
    for event in a_call("sent"):
        sink.call(event)
    assert stored_within(30, {"sent"})
    # The command's end of the pipe closes without a word, as at the command's death.
    sink.pipe.close()
    sink.process.join(timeout=60)

    assert sink.process.exitcode == 0
    assert dict(Call.objects.values_list("call_id", "state")) == {"sent": "ended"}


def test_commands_store_in_a_process_unless_recordings_are_finished_inline(settings) -> None:
    settings.QMS_FINISH_PROCESSES = 0
    inline = sink_for_commands("proc")
    assert isinstance(inline, DatabaseSink)
    inline.close()
    settings.QMS_FINISH_PROCESSES = 1
    apart = sink_for_commands("proc", recording=False)
    assert isinstance(apart, SinkProcess)
    apart.close()
    assert apart.process.exitcode == 0


def test_a_command_called_inside_a_transaction_keeps_it_and_stores_apart(settings) -> None:
    settings.QMS_FINISH_PROCESSES = 1
    with transaction.atomic():
        Binding.objects.exists()  # the caller's connection, in its transaction
        sink = sink_for_commands("proc", recording=False)
        for event in a_call("inside"):
            sink.call(event)
        sink.close()
        assert not sink.forked and sink.process.exitcode == 0
        # The caller's transaction is intact, and sees what the process committed.
        assert dict(Call.objects.values_list("call_id", "state")) == {"inside": "ended"}


def test_a_command_that_fails_before_closing_its_sink_still_ends(tmp_path: Path) -> None:
    assert run_manage(tmp_path, "migrate", "-v0", DEBUG="1").returncode == 0
    script = (
        "from recorder.sinks.commands import sink_for_commands\n"
        "sink = sink_for_commands('failing')\n"
        "print(type(sink).__name__, flush=True)\n"
        "raise SystemExit(3)\n"
    )
    # On the var folder's SQLite file a second process may open: a sink process. Should
    # the interpreter's exit wait on it forever, run_manage's timeout fails the test.
    done = run_manage(tmp_path, "shell", "-c", script, DEBUG="1", QMS_FINISH_PROCESSES="1")
    assert done.stdout.splitlines()[-1] == "SinkProcess", done.stderr[-2000:]
    assert done.returncode == 3


class Doomed(SinkProcess):
    """A sink whose every process ends at once, with the pauses made short."""

    work = staticmethod(dies_at_start)
    FIRST_PAUSE = 0.2
    LONGEST_PAUSE = 0.8

    def _start_process(self, forked: bool = False) -> None:
        self.starts = [*getattr(self, "starts", []), time.monotonic()]
        super()._start_process(forked)


def test_a_process_that_cannot_stay_up_is_retried_ever_more_slowly_then_given_up(
    caplog,
) -> None:
    connections.close_all()
    sink = Doomed("proc", 1, start_finishers=False)
    # Each batch finds the process dead at its send (the first may slip into the pipe
    # before the process ends; the next cannot).
    deadline = time.monotonic() + 30
    while len(sink.starts) < 6 and time.monotonic() < deadline:
        for event in a_call(f"call-{len(sink.starts)}"):
            sink.call(event)
        time.sleep(0.05)
    assert len(sink.starts) >= 6, sink.starts
    gaps = [later - earlier for earlier, later in zip(sink.starts, sink.starts[1:])]
    # The first death is replaced at once; then 0.2, 0.4, 0.8 s and no longer.
    assert gaps[1] >= 0.2 and gaps[2] >= 0.4 and gaps[3] >= 0.8 and gaps[4] >= 0.8, gaps
    assert gaps[4] < 0.8 + 10, gaps
    # Closing once the last process is dead and no start is pending: the STOP finds no
    # reader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sink.process.exitcode is None:
        time.sleep(0.05)
    last = sink.process
    time.sleep(Doomed.LONGEST_PAUSE + 1)
    assert sink.process is last and last.exitcode == 3
    started = time.monotonic()
    sink.close()

    assert time.monotonic() - started < 30  # given up, not retried for ever
    assert not sink.sender.is_alive() and sink.process.exitcode == 3
    assert sink.failures["database process ended"] >= len(sink.starts) - 1
    assert "times in a row within 30 s of its start: stopping without it" in caplog.text
    assert not Call.objects.exists()
