"""The capture node's durable outbox on disk: written in order, read back by sequence
number while it grows, whole records only, and nothing lost when the writer is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.observations import (
    BindingSeen,
    BindingSource,
    CallDirection,
    CallEvent,
    CallProtocol,
    CallState,
    EncryptedSignallingSeen,
    Endpoint,
    MediaOffer,
    Side,
)
from recorder.engine.calls import CallSnapshot
from recorder.engine.codec import (
    binding_from_json,
    binding_json,
    encrypted_from_json,
    encrypted_json,
    snapshot_from_json,
    snapshot_json,
)
from recorder.sinks import outbox
from recorder.sinks.outbox import OutboxWriter, RunReader, runs_of, writer_alive

REPO_ROOT = Path(__file__).resolve().parents[3]


def written(tmp_path: Path, count: int) -> OutboxWriter:
    writer = OutboxWriter(tmp_path / "eth1", "node-a", "eth1")
    for number in range(1, count + 1):
        writer.append("binding", {"number": number})
    return writer


def numbers(records: list[outbox.OutboxRecord]) -> list[int]:
    return [record.event["number"] for record in records]


def test_records_are_read_back_in_order_from_any_sequence_number(tmp_path: Path) -> None:
    writer = written(tmp_path, 5)
    reader = RunReader(writer.directory)

    assert [record.seq for record in reader.read(1, 10)] == [1, 2, 3, 4, 5]
    assert numbers(reader.read(3, 2)) == [3, 4]
    assert numbers(reader.read(5, 10)) == [5]
    assert reader.read(6, 10) == []
    assert reader.last_seq() == 5
    assert writer.key == f"node-a:eth1:{writer.directory.name}"


def test_records_appended_while_reading_are_read_on(tmp_path: Path) -> None:
    writer = written(tmp_path, 2)
    reader = RunReader(writer.directory)
    assert numbers(reader.read(1, 10)) == [1, 2]

    writer.append("binding", {"number": 3})

    assert numbers(reader.read(3, 10)) == [3]
    assert reader.last_seq() == 3


def test_a_record_torn_by_a_crash_ends_the_run_there(tmp_path: Path) -> None:
    writer = written(tmp_path, 3)
    writer.close()
    (segment,) = writer.directory.glob("*.events")
    whole = segment.read_bytes()
    torn = outbox.encode_record(4, "binding", {"number": 4})
    segment.write_bytes(whole + torn[:-3])

    reader = RunReader(writer.directory)
    assert numbers(reader.read(1, 10)) == [1, 2, 3]
    assert reader.last_seq() == 3


def test_a_damaged_record_is_not_taken_for_an_event(tmp_path: Path) -> None:
    writer = written(tmp_path, 2)
    writer.close()
    (segment,) = writer.directory.glob("*.events")
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # inside the second record's JSON: its CRC no longer matches
    segment.write_bytes(bytes(data))

    assert numbers(RunReader(writer.directory).read(1, 10)) == [1]


def test_segments_rotate_and_applied_ones_go_but_the_last_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "SEGMENT_BYTES", 200)
    writer = written(tmp_path, 40)
    reader = RunReader(writer.directory)
    segments = reader.segments()
    assert len(segments) > 3

    assert numbers(reader.read(1, 100)) == list(range(1, 41))
    # Going back, as a redelivery does, reads the same records again.
    assert numbers(reader.read(17, 5)) == [17, 18, 19, 20, 21]

    assert numbers(reader.read(22, 100))[-1] == 40

    reader.prune(applied_seq=40)
    assert reader.segments() == [segments[-1]]
    assert RunReader(writer.directory).last_seq() == 40


def test_pruning_keeps_every_segment_with_an_event_not_yet_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "SEGMENT_BYTES", 200)
    writer = written(tmp_path, 40)
    reader = RunReader(writer.directory)

    reader.prune(applied_seq=20)

    fresh = RunReader(writer.directory)
    assert numbers(fresh.read(21, 100)) == list(range(21, 41))


def test_the_writer_lock_tells_a_live_run_from_a_finished_one(tmp_path: Path) -> None:
    writer = written(tmp_path, 1)
    assert writer_alive(writer.directory)
    writer.close()
    assert not writer_alive(writer.directory)


def test_runs_are_listed_oldest_first(tmp_path: Path) -> None:
    first = written(tmp_path, 1)
    second = written(tmp_path, 1)
    assert runs_of(tmp_path / "eth1") == [first.directory, second.directory]


KILLED_WRITER = """
import sys
from pathlib import Path
from recorder.sinks.outbox import OutboxWriter
writer = OutboxWriter(Path(sys.argv[1]), "node-a", "eth1")
for number in range(1, 201):
    writer.append("binding", {"number": number})
print(writer.directory, flush=True)
sys.stdin.read()
"""


def test_a_writer_killed_with_sigkill_loses_no_event_it_appended(tmp_path: Path) -> None:
    # No fsync has run (the sync thread belongs to the sink, not the writer): what the
    # kernel was handed survives the process.
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path / "eth1")],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    run_dir = Path(child.stdout.readline().strip())
    assert writer_alive(run_dir)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)

    assert not writer_alive(run_dir)
    assert numbers(RunReader(run_dir).read(1, 1000)) == list(range(1, 201))


def test_observations_cross_the_outbox_unchanged() -> None:
    seen_at = datetime(2026, 11, 26, 9, 30, 15, 250000, tzinfo=UTC)
    binding = BindingSeen(
        "9001", "10.0.0.11", BindingSource.SCCP, seen_at, 3600, False, "SEP0011", 1, ("+1",)
    )
    snapshot = CallSnapshot(
        call_id="abc@pbx", protocol="sip", event=CallEvent.END, started_at=1795679714.5,
        answered_at=1795679715.25, ended_at=1795679720.0, end_reason="bye", state="ended",
        direction="outbound", caller="9001", caller_name="John", callee="9002",
        callee_name="", caller_ip="10.0.0.11", callee_ip="10.0.0.12", local_ip="10.0.0.11",
        local_number="9001",
        media=(MediaOffer(Side.CALLER, Endpoint("10.0.0.11", 16384), ((0, "PCMU/8000"),)),),
        spool="/var/spool/x", local_side=Side.CALLER, conversation_id="abc@pbx",
    )  # fmt: skip
    encrypted = EncryptedSignallingSeen("10.0.0.13", "sip-tls", seen_at)

    assert binding_from_json(binding_json(binding)) == binding
    assert snapshot_from_json(snapshot_json(snapshot)) == snapshot
    assert encrypted_from_json(encrypted_json(encrypted)) == encrypted


def test_a_snapshot_crosses_the_outbox_file_with_its_words_as_plain_strings(
    tmp_path: Path,
) -> None:
    snapshot = CallSnapshot(
        call_id="lync-call-1", protocol=CallProtocol.LYNC, event=CallEvent.HOLD,
        started_at=1795679714.5, answered_at=1795679715.25, ended_at=None, end_reason="",
        state=CallState.HELD, direction=CallDirection.UNKNOWN, caller="alice", caller_name="",
        callee="9002", callee_name="", caller_ip="10.0.0.31", callee_ip="", local_ip="10.0.0.31",
        local_number="alice", media=(),
    )  # fmt: skip
    writer = OutboxWriter(tmp_path / "eth1", "node-a", "eth1")
    writer.append(outbox.CALL, snapshot_json(snapshot))
    writer.close()

    (record,) = RunReader(writer.directory).read(1, 10)
    on_disk = record.event
    assert (on_disk["protocol"], on_disk["state"], on_disk["direction"]) == ("lync", "held", "")
    back = snapshot_from_json(on_disk)
    assert back == snapshot
    assert (back.protocol, back.state, back.direction) == (
        CallProtocol.LYNC,
        CallState.HELD,
        CallDirection.UNKNOWN,
    )
