"""A spool that cannot be finished is set aside, never the start (issue 11 §1; audit C2).

A log whose two packets are decades apart (a damaged capture's record times) cannot become
audio: finishing it raises. Before, `recover_spools` let that escape, so `sniff` and
`import_pcap` died at every start until someone deleted the spool by hand, and the Celery
node's finalisation failed for ever with its recording saying "recording". Now the spool
goes to `_failed`, its call's recording says failed, and a ParkedEvent says why.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from integrations.observations import Side
from recorder.capture import traffic
from recorder.engine.calls import moment
from recorder.media.rtplog import BLOCK_HEADER, MANIFEST_NAME, RtpLog
from recorder.models import Call, Recording
from recorder.nodes.models import ParkedEvent, PendingFinalisation
from recorder.recordings.finalise import finalise_recording
from recorder.recordings.recovery import FAILED, recover_spools
from recorder.sinks.ordered import apply_in_order
from recorder.sinks.outbox import RECOVER
from tests.recorder.media.rtp_build import rtp

STARTED = 1_700_000_100.0
DECADES = 40 * 365 * 86400.0
PCMA = [[8, "PCMA/8000"]]


def call_with_damaged_spool(spool_root: Path, call_id: str) -> tuple[Call, Path]:
    """A Call row and its spool, whose second packet arrived forty years after the first."""
    call = Call.objects.create(
        protocol="sip", call_id=call_id, started_at=moment(STARTED),
        ended_at=moment(STARTED + 1), caller="9001", callee="9002",
        direction=Call.Direction.OUTBOUND,
        media=[{"side": "caller", "ip": "10.0.0.1", "port": 4000, "payload_types": PCMA,
                "mode": "sendrecv", "encrypted": False},
               {"side": "callee", "ip": "10.0.0.2", "port": 5000, "payload_types": PCMA,
                "mode": "sendrecv", "encrypted": False}],
    )  # fmt: skip
    spool = spool_root / f"{int(STARTED)}-{call_id}.rtp"
    log = RtpLog(spool, {"call_id": call_id, "protocol": "sip", "started_at": STARTED})
    log.append(STARTED, Side.CALLER, rtp(0, 0))
    log.append(STARTED + DECADES, Side.CALLER, rtp(1, 160))
    log.close()
    return call, spool


def spool_with_manifest(spool_root: Path, name: str, manifest: str, layout: str) -> Path:
    """A spool whose manifest is `manifest`: a log file, or a folder of the earlier layout."""
    if layout == "folder":
        spool = spool_root / name
        spool.mkdir(parents=True)
        (spool / MANIFEST_NAME).write_text(manifest)
        return spool
    spool = spool_root / f"{name}.rtp"
    text = manifest.encode()
    spool.write_bytes(BLOCK_HEADER.pack(0xFF, 0xB2, 0, len(text)) + text)
    return spool


def ordinary_capture(tmp_path: Path) -> Path:
    path = tmp_path / "ordinary.pcap"
    traffic.write(path, traffic.packets(traffic.make_calls(1), 0.4, use_sccp=False))
    return path


@pytest.fixture
def spool_root(settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    settings.QMS_SPOOL_DIR.mkdir()
    return settings.QMS_SPOOL_DIR


@pytest.mark.django_db(transaction=True)
def test_a_spool_that_cannot_be_finished_is_set_aside_and_its_recording_says_failed(
    spool_root: Path,
) -> None:
    call, spool = call_with_damaged_spool(spool_root, "damaged")

    assert recover_spools(spool_root) == []

    assert not spool.exists()
    assert (spool_root / FAILED / spool.name).is_file()
    recording = Recording.objects.get(signalling=call)
    assert recording.status == Recording.Status.FAILED
    assert recording.status_detail.startswith("could not be finished: ValueError")
    (parked,) = ParkedEvent.objects.all()
    assert (parked.kind, parked.subject) == ("spool", spool.name)
    assert parked.reason.startswith("ValueError")
    assert recover_spools(spool_root) == []  # set aside once: not tried at every start


@pytest.mark.django_db(transaction=True)
def test_import_pcap_still_starts_and_records_after_a_spool_that_cannot_be_finished(
    spool_root: Path, tmp_path: Path
) -> None:
    _call, spool = call_with_damaged_spool(spool_root, "damaged")

    call_command("import_pcap", str(ordinary_capture(tmp_path)), stdout=io.StringIO())

    assert {r.call_id: r.status for r in Recording.objects.all()} == {
        "damaged": Recording.Status.FAILED,
        "bench-0@10.1.0.1": Recording.Status.COMPLETE,
    }
    assert [path.name for path in (spool_root / FAILED).iterdir()] == [spool.name]


@pytest.mark.parametrize("layout", ["file", "folder"])
@pytest.mark.parametrize(
    "manifest",
    ["{not json", "[1, 2, 3]"],
    ids=["not-json", "a-list"],
)
@pytest.mark.django_db(transaction=True)
def test_a_spool_whose_manifest_is_no_json_object_is_set_aside_and_parked(
    spool_root: Path, tmp_path: Path, manifest: str, layout: str
) -> None:
    spool = spool_with_manifest(spool_root, "1700000000-bad-manifest", manifest, layout)

    call_command("import_pcap", str(ordinary_capture(tmp_path)), stdout=io.StringIO())

    assert not spool.exists()
    assert (spool_root / FAILED / spool.name).exists()
    (parked,) = ParkedEvent.objects.all()
    assert (parked.kind, parked.subject) == ("spool", spool.name)
    assert Recording.objects.get().status == Recording.Status.COMPLETE


@pytest.mark.django_db(transaction=True)
def test_a_node_finalisation_that_cannot_succeed_marks_the_recording_failed_and_parks_it(
    spool_root: Path,
) -> None:
    call, spool = call_with_damaged_spool(spool_root, "node-damaged")
    pending = PendingFinalisation.objects.create(call=call, node="node-a", spool=str(spool))

    assert finalise_recording.run(pending.pk) is None

    recording = Recording.objects.get(signalling=call)
    assert recording.status == Recording.Status.FAILED
    assert not PendingFinalisation.objects.exists()
    (parked,) = ParkedEvent.objects.all()
    assert (parked.kind, parked.subject, parked.node) == ("spool", "node-damaged", "node-a")
    assert parked.reason.startswith("ValueError")
    assert not spool.exists() and (spool_root / FAILED / spool.name).is_file()


@pytest.mark.parametrize("layout", ["file", "folder"])
@pytest.mark.django_db(transaction=True)
def test_a_node_recovery_of_a_spool_whose_manifest_is_damaged_sets_it_aside_and_parks_it(
    spool_root: Path, layout: str
) -> None:
    # The sniffer no longer reads manifests at start (it stopped there on a damaged one):
    # the node's task reads it, by the same rules as import_pcap.
    spool = spool_with_manifest(spool_root, "1700000000-bad-manifest", "{not json", layout)

    outcome = apply_in_order("node-a:eth1:run", 1, RECOVER, {"spool": str(spool)}, "node-a")

    assert outcome == "applied"
    assert not spool.exists() and (spool_root / FAILED / spool.name).exists()
    (parked,) = ParkedEvent.objects.all()
    assert (parked.kind, parked.subject, parked.node) == ("spool", spool.name, "node-a")
    assert parked.reason.startswith("JSONDecodeError")
