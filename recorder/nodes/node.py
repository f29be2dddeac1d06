"""A capture node inside its Celery worker: the sniffers of the node, for the worker's life.

Started by the worker bootstep (recorder/nodes/worker.py) in a worker that consumes
capture.<QMS_NODE>. Every QMS_CAPTURE_HEARTBEAT_SECONDS one thread:

- reads the node's interfaces, takes the lease of each enabled one (recorder/nodes/
  leases.py) and starts its sniffer, a process of its own (recorder/nodes/sniffer.py);
  stops the sniffers of interfaces disabled, changed or taken over by another worker;
- restarts a sniffer that died, with back-off;
- heartbeats each interface's live state (and renews its lease) from the sniffer's figures;
- delivers each interface's outbox to the broker (recorder/sinks/delivery.py);
- enqueues again the finalisations the broker may have lost (PendingFinalisation).

When the database does not answer, the sniffers keep running (and are restarted if they
die) and the outbox grows; the heartbeat and the leases resume with the database.
On the worker's shutdown each sniffer is stopped with SIGTERM: it ends its calls in
progress ("capture-ended", finished as partial recordings) and writes them to the outbox.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models.functions import Now
from django.utils import timezone

from recorder.nodes import leases
from recorder.nodes.alerts import note_alert
from recorder.nodes.caps import CapAlerts
from recorder.nodes.live_audio import LiveAudioRelay
from recorder.nodes.models import CaptureInterface, PendingFinalisation
from recorder.nodes.sniffer import SnifferPaths
from recorder.recordings.finalise import enqueue_finalisation
from recorder.recordings.live_relay import relay_client
from recorder.sinks.delivery import Deliverer
from recorder.sinks.outbox import STATS_NAME

log = logging.getLogger("qms.capture")

# A sniffer that ran this long before it died is restarted at once; one that keeps dying
# sooner waits 1, 2, 4... seconds, up to RESTART_MAX_SECONDS, between attempts.
RESTART_SETTLED_SECONDS = 60.0
RESTART_MAX_SECONDS = 60.0
# How long a sniffer has, after SIGTERM, to end its calls and close its outbox.
STOP_SECONDS = 20.0
FINALISATIONS_PER_ROUND = 100
# The alert a worker raises when its QMS_NODE is in use on another machine.
NODE_NAME_IN_USE = "node-name-in-use"
# How often a refused worker says so again, in heartbeats.
REFUSAL_REPEAT_HEARTBEATS = 60


def machine_identity() -> str:
    """This machine, as the leases it takes name it: its host name and, where systemd
    keeps one, the start of its machine id (two clones of one image with one host name
    still differ there once each has booted with its own)."""
    name = socket.gethostname()
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()[:12]
    except OSError:
        machine_id = ""
    return f"{name}/{machine_id}"[:80] if machine_id else name[:80]


def machine_of(owner: str) -> str:
    """The machine of a lease owner (`worker:pid:token:machine`); empty for an owner
    written before leases named their machine."""
    parts = owner.split(":", 3)
    return parts[3] if len(parts) == 4 else ""


class SnifferProcess:
    """One interface's sniffer process, restarted with back-off whenever it dies."""

    def __init__(self, row: CaptureInterface, node: str) -> None:
        self.interface_id, self.interface, self.bpf = row.pk, row.interface, row.bpf_filter
        self.kind = row.kind
        self.node = node
        self.paths = SnifferPaths.of(row.interface)
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.failures = 0
        self.restarts = 0
        self.last_error = ""
        self.alerts = CapAlerts(node)

    def command(self) -> list[str]:
        manage = Path(settings.BASE_DIR) / "manage.py"
        if self.kind == CaptureInterface.Kind.HEP:
            source = ["--hep", self.interface]
        else:
            source = ["--interface", self.interface, "--bpf", self.bpf]
        return [
            sys.executable, str(manage), "capture_sniffer", "--node", self.node, *source,
            "--parent", str(os.getpid()),
        ]  # fmt: skip

    def start(self) -> None:
        self.paths.outbox.mkdir(parents=True, exist_ok=True)
        (self.paths.outbox / STATS_NAME).unlink(missing_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)  # noqa: S603
        self.alerts = CapAlerts(self.node)  # a new process counts its caps from zero
        self.started_at = time.monotonic()
        log.info("%s: sniffer started (pid %d)", self.interface, self.process.pid)

    def keep_running(self) -> None:
        """Start the sniffer, or start it again if it died and its back-off has passed."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            self._died(self.process.returncode)
        if time.monotonic() >= self.next_start:
            self.start()

    def _died(self, status: int) -> None:
        stats = self.stats()
        self.last_error = str(stats.get("error") or f"the sniffer exited with status {status}")
        log.error("%s: sniffer died: %s", self.interface, self.last_error)
        lived = time.monotonic() - self.started_at
        self.failures = 0 if lived >= RESTART_SETTLED_SECONDS else self.failures + 1
        delay = min(2.0 ** (self.failures - 1), RESTART_MAX_SECONDS) if self.failures else 0.0
        self.next_start = time.monotonic() + delay
        self.restarts += 1
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stats(self) -> dict:
        """The figures the sniffer writes every second; empty when they are not its own."""
        try:
            found = json.loads((self.paths.outbox / STATS_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return found if self.process is None or found.get("pid") == self.process.pid else {}

    def state(self) -> dict:
        """The interface's live state, as the admin shows it; the caps its engine counted
        since the last heartbeat become the node's alerts."""
        stats = self.stats() if self.running() else {}
        self.alerts.note(Counter(stats.get("caps") or {}))
        started = stats.get("started_at")
        return {
            "running": bool(stats.get("running")),
            "running_since": datetime.fromtimestamp(started, UTC) if started else None,
            "packets_per_second": stats.get("packets_per_second", 0.0),
            "kernel_drops": stats.get("kernel_drops", 0),
            "live_calls": stats.get("live_calls", 0),
            "restarts": self.restarts,
            "last_error": self.last_error[:500],
        }

    def signal_stop(self) -> None:
        if self.running():
            self.process.send_signal(signal.SIGTERM)

    def wait(self, seconds: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            log.error("%s: sniffer did not stop in %.0f s; killed", self.interface, seconds)
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.signal_stop()
        self.wait(STOP_SECONDS)


class CaptureNode:
    """The sniffers, outbox delivery and heartbeat of one node, in its worker."""

    def __init__(self, node: str, app, hostname: str, machine: str | None = None) -> None:
        self.node, self.app, self.hostname = node, app, hostname
        self.machine = machine or machine_identity()
        self.owner = f"{hostname}:{os.getpid()}:{secrets.token_hex(3)}:{self.machine}"
        # Another machine that runs this node now, while it does (see _refused).
        self.refused_by = ""
        self.refused_rounds = 0
        self.sniffers: dict[int, SnifferProcess] = {}
        self.deliverers: dict[Path, Deliverer] = {}
        self.stopping = threading.Event()
        self.database_failures = 0
        self.thread = threading.Thread(target=self._run, name="qms-capture-node", daemon=True)
        self.live_audio = self._live_audio()

    def start(self) -> None:
        log.info("capture node %s: starting (lease owner %s)", self.node, self.owner)
        self.thread.start()
        if self.live_audio is not None:
            self.live_audio.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.live_audio is not None:
            self.live_audio.stop()
        self.thread.join()

    def _live_audio(self) -> LiveAudioRelay | None:
        """Live listening's decoder of this node's calls, when the relay is configured."""
        client = relay_client()
        if client is None:
            return None
        capturing = lambda: bool(self.sniffers) and not self.refused_by  # noqa: E731
        return LiveAudioRelay(self.node, client, Path(settings.QMS_SPOOL_DIR), capturing)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.step()
                self.stopping.wait(settings.QMS_CAPTURE_HEARTBEAT_SECONDS)
        finally:
            self._shut_down()

    def step(self) -> None:
        """One round: configuration and leases, heartbeat, finalisations; then the
        sniffers and the outbox, which need no database."""
        close_old_connections()
        try:
            self._reconcile()
            self._heartbeat()
            self._requeue_finalisations()
            self.database_failures = 0
        except DatabaseError as error:
            connection.close()
            self.database_failures += 1
            if self.database_failures == 1:
                log.warning("capture node %s: database unavailable (%s)", self.node, error)
        for sniffer in self.sniffers.values():
            sniffer.keep_running()
        self._claim_outboxes()

    def _reconcile(self) -> None:
        rows = {row.pk: row for row in CaptureInterface.objects.filter(node=self.node)}
        for pk, sniffer in list(self.sniffers.items()):
            row = rows.get(pk)
            if (
                row is None
                or not row.enabled
                or (row.kind, row.interface, row.bpf_filter)
                != (sniffer.kind, sniffer.interface, sniffer.bpf)
            ):
                log.info("%s: configuration changed; sniffer stopped", sniffer.interface)
                self._drop(sniffer)
        if self._refused():
            return
        for row in rows.values():
            if row.enabled and row.pk not in self.sniffers:
                self._take(row)

    def _refused(self) -> bool:
        """Whether another machine runs this node now: a lease of one of its interfaces
        held, unexpired, by a worker of another machine. Two machines with one QMS_NODE are
        an operator's mistake (they would share the node's queue, and each run the other's
        finalisations without its spools) or a standby: either way this one captures
        nothing while the other runs, takes over once its leases lapse, and says why, in
        its log and as the node's alert in the admin. Of two machines that each took a
        lease at once, the one whose name sorts after the other gives its leases up."""
        holders = CaptureInterface.objects.filter(node=self.node, lease_expires_at__gt=Now())
        others = sorted(
            {(machine_of(owner), owner) for owner in holders.values_list("lease_owner", flat=True)
             if machine_of(owner) and machine_of(owner) != self.machine}
        )  # fmt: skip
        if others and self.sniffers and others[0][0] > self.machine:
            others = []  # this machine keeps the node; the other one gives way
        if not others:
            if self.refused_by:
                log.info("capture node %s: %s no longer runs it; this worker captures",
                         self.node, self.refused_by)  # fmt: skip
            self.refused_by, self.refused_rounds = "", 0
            return False
        machine, owner = others[0]
        for sniffer in list(self.sniffers.values()):
            self._drop(sniffer)
        if self.refused_by != machine or self.refused_rounds % REFUSAL_REPEAT_HEARTBEATS == 0:
            message = (
                f"QMS_NODE={self.node} is already in use on machine {machine} (worker "
                f"{owner.partition(':')[0]}), so this worker on {self.machine} captures "
                f"nothing: give each capture machine a QMS_NODE of its own. A standby "
                f"machine of node {self.node} takes over once {machine} stops."
            )
            log.error("capture node %s: %s", self.node, message)
            note_alert(self.node, NODE_NAME_IN_USE, message)
        self.refused_by = machine
        self.refused_rounds += 1
        return True

    def _take(self, row: CaptureInterface) -> None:
        seconds = settings.QMS_CAPTURE_LEASE_SECONDS
        taken = leases.claim(row.pk, self.owner, seconds) or (
            self._left_by_earlier_life(row.lease_owner)
            and leases.take_back(row.pk, row.lease_owner, self.owner, seconds)
        )
        if taken:
            self.sniffers[row.pk] = SnifferProcess(row, self.node)

    def _left_by_earlier_life(self, owner: str) -> bool:
        """A lease held by this same worker (name and machine) in a process that is gone:
        a worker killed and restarted takes its interfaces back without waiting for the
        lease to lapse."""
        hostname, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if hostname != self.hostname or not pid.isdigit() or int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _drop(self, sniffer: SnifferProcess) -> None:
        sniffer.stop()
        self.sniffers.pop(sniffer.interface_id, None)
        leases.release(sniffer.interface_id, self.owner, restarts=sniffer.restarts)

    def _heartbeat(self) -> None:
        for sniffer in list(self.sniffers.values()):
            state = sniffer.state()
            deliverer = self.deliverers.get(sniffer.paths.outbox)
            if deliverer is not None:
                state["outbox_backlog"] = deliverer.backlog
            seconds = settings.QMS_CAPTURE_LEASE_SECONDS
            if not leases.renew(sniffer.interface_id, self.owner, seconds, **state):
                log.warning("%s: lease taken over by another worker; stopping", sniffer.interface)
                sniffer.stop()
                self.sniffers.pop(sniffer.interface_id, None)
        running = {sniffer.paths.outbox for sniffer in self.sniffers.values()}
        for folder, deliverer in self.deliverers.items():
            if folder not in running:
                CaptureInterface.objects.filter(node=self.node, interface=folder.name).update(
                    outbox_backlog=deliverer.backlog
                )

    def _requeue_finalisations(self) -> None:
        now = timezone.now()
        cutoff = now - timedelta(seconds=settings.QMS_OUTBOX_REDELIVER_SECONDS)
        due = PendingFinalisation.objects.filter(node=self.node, enqueued_at__lt=cutoff)
        for pending in due.order_by("enqueued_at")[:FINALISATIONS_PER_ROUND]:
            PendingFinalisation.objects.filter(pk=pending.pk).update(enqueued_at=now)
            enqueue_finalisation(pending)

    def _claim_outboxes(self) -> None:
        root = Path(settings.QMS_OUTBOX_DIR)
        root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(path for path in root.iterdir() if path.is_dir()):
            if folder not in self.deliverers:
                deliverer = Deliverer.claim(folder, self.app)
                if deliverer is not None:
                    self.deliverers[folder] = deliverer
                    deliverer.start()

    def _shut_down(self) -> None:
        """Stop every sniffer at once and wait for each; then delivery; then the leases."""
        for sniffer in self.sniffers.values():
            sniffer.signal_stop()
        for sniffer in self.sniffers.values():
            sniffer.wait(STOP_SECONDS)
        for deliverer in self.deliverers.values():
            deliverer.stop()
        try:
            for sniffer in self.sniffers.values():
                leases.release(sniffer.interface_id, self.owner, restarts=sniffer.restarts)
        except DatabaseError as error:
            log.warning("capture node %s: leases not released (%s)", self.node, error)
        finally:
            connection.close()
        log.info("capture node %s: stopped", self.node)
