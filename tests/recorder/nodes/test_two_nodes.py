"""Two capture nodes, one archive (issue 15, section 3).

Two sites, each a network namespace of the test's own with a veth pair to this one: a SIPp
phone in the namespace calls a SIPp far end here, so each site's calls cross its own
interface (qsa0, qsb0). Two capture workers, QMS_NODE site-a and site-b, each sniff their
site's interface, against one PostgreSQL, one Redis and one recordings folder. Every call is
recorded once, on the node that saw it; a node restarted mid-call leaves that call one
partial recording and the other node's calls whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from extensions.models import Agent, Extension, Phone
from extensions.services import assign_line
from recorder.models import Call, Recording
from recorder.nodes.models import CaptureInterface
from tests.conftest import need, need_loopback_capture, need_tool
from tests.recorder.nodes.capture_node import (
    CaptureWorker,
    Phones,
    RedisServer,
    database_url,
    eventually,
)

CALL_SECONDS = 2.0
LONG_CALL_SECONDS = 8.0
LANDING_SECONDS = 40.0


@dataclass(frozen=True)
class Site:
    node: str
    namespace: str
    outside: str  # the capture node's end of the veth pair
    inside: str  # the phone's end, in the namespace
    network: str  # a /24: .1 the far end here, .2 the phone in the namespace
    extension: str
    agent: str

    @property
    def phone_ip(self) -> str:
        return f"{self.network}.2"

    @property
    def far_end_ip(self) -> str:
        return f"{self.network}.1"


SITE_A = Site("site-a", "qms-site-a", "qsa0", "qsa1", "10.91.1", "9001", "John")
SITE_B = Site("site-b", "qms-site-b", "qsb0", "qsb1", "10.91.2", "9101", "Mary")


def ip(*arguments: str) -> None:
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True)
    assert done.returncode == 0, f"ip {' '.join(arguments)}: {done.stderr}"


def make_site(site: Site) -> None:
    remove_site(site)
    ip("netns", "add", site.namespace)
    ip("link", "add", site.outside, "type", "veth", "peer", "name", site.inside,
       "netns", site.namespace)  # fmt: skip
    ip("addr", "add", f"{site.far_end_ip}/24", "dev", site.outside)
    ip("link", "set", site.outside, "up")
    ip("-n", site.namespace, "addr", "add", f"{site.phone_ip}/24", "dev", site.inside)
    ip("-n", site.namespace, "link", "set", site.inside, "up")
    ip("-n", site.namespace, "link", "set", "lo", "up")


def remove_site(site: Site) -> None:
    """The namespace gone, and with it both ends of its pair."""
    subprocess.run(["ip", "netns", "del", site.namespace], capture_output=True, check=False)


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    need(shutil.which("ip") is not None and os.geteuid() == 0,
         "needs iproute2 and root, to make network namespaces and veth pairs")  # fmt: skip
    need_loopback_capture()
    try:
        for site in (SITE_A, SITE_B):
            make_site(site)
        yield SITE_A, SITE_B
    finally:
        for site in (SITE_A, SITE_B):
            remove_site(site)


def configure(site: Site) -> Agent:
    """The site's agent, their phone's line, and the node's interface."""
    agent = Agent.objects.create(name=site.agent)
    phone = Phone.objects.create(device_name=f"{site.agent.lower()}-desk", protocol="sip")
    assign_line(phone, 1, site.extension)
    Extension.objects.filter(number=site.extension).update(agent=agent)
    CaptureInterface.objects.create(node=site.node, interface=site.outside,
                                    bpf_filter=f"udp and host {site.phone_ip}")  # fmt: skip
    return agent


@contextlib.contextmanager
def site_phones(site: Site, workdir: Path, far_end_seconds: float) -> Iterator[Phones]:
    workdir.mkdir(parents=True, exist_ok=True)
    phones = Phones(
        need_tool("sipp"), workdir, agent_ip=site.phone_ip, far_end_ip=site.far_end_ip,
        extension=site.extension, agent_side=["ip", "netns", "exec", site.namespace],
    )  # fmt: skip
    try:
        phones.start_far_end(far_end_seconds)
        yield phones
    finally:
        phones.stop_all()


def node_worker(site: Site, tmp_path: Path, broker_url: str) -> CaptureWorker:
    workdir = tmp_path / site.node
    workdir.mkdir()
    # A node restarted mid-call may catch the rest of that call's audio as an unsignalled
    # call of the phone, or not, by how fast it restarts: off here, so that the count of
    # calls is the signalled calls' (tests/recorder/engine covers unsignalled calls).
    return CaptureWorker(workdir, broker_url, database_url(), node=site.node,
                         interface=site.outside,
                         overrides={"QMS_RECORD_UNSIGNALLED": "0"})  # fmt: skip


def test_two_nodes_record_each_call_once_on_the_node_that_saw_it_through_a_restart(
    postgresql: None, redis_server: RedisServer, sites: tuple[Site, Site], tmp_path: Path
) -> None:
    site_a, site_b = sites
    john, mary = configure(site_a), configure(site_b)
    worker_a = node_worker(site_a, tmp_path, redis_server.url)
    worker_b = node_worker(site_b, tmp_path, redis_server.url)
    try:
        with (
            site_phones(site_a, tmp_path / "phones-a", CALL_SECONDS) as phone_a,
            site_phones(site_b, tmp_path / "phones-b", LONG_CALL_SECONDS) as phone_b,
        ):
            worker_a.start()
            worker_b.start()
            phone_a.register(site_a.extension)
            phone_b.register(site_b.extension)
            # A call at each site at once.
            calls = [phone_a.call(CALL_SECONDS, wait=False), phone_b.call(1.0, wait=False)]
            for phone, call in zip((phone_a, phone_b), calls, strict=True):
                phone._finish(call)
            eventually(lambda: Recording.objects.filter(status="complete").count() == 2,
                       LANDING_SECONDS, "a recording at each site", worker_b.log)  # fmt: skip

            # Site B's node restarts in the middle of a long call; site A calls meanwhile.
            long_call = phone_b.call(LONG_CALL_SECONDS, wait=False)
            eventually(
                lambda: Call.objects.filter(node=site_b.node, state="connected").exists(),
                LANDING_SECONDS, "site B's long call to connect", worker_b.log,
            )  # fmt: skip
            short_call = phone_a.call(CALL_SECONDS, wait=False)
            assert worker_b.stop() == 0
            worker_b.start()
            phone_a._finish(short_call)
            phone_b._finish(long_call)
            eventually(lambda: Recording.objects.count() >= 4, LANDING_SECONDS,
                       "the recordings of the restart", worker_b.log)  # fmt: skip
    finally:
        stops = [worker_a.stop(), worker_b.stop()]
    assert stops == [0, 0]

    by_node = {
        node: list(
            Recording.objects.filter(signalling__node=node).order_by("started_at")
            .values_list("agent", "extension", "status", "local_ip", "signalling__call_id")
        )
        for node in (site_a.node, site_b.node)
    }  # fmt: skip
    a_calls, b_calls = by_node[site_a.node], by_node[site_b.node]
    assert [row[:4] for row in a_calls] == [(john.pk, "9001", "complete", site_a.phone_ip)] * 2
    assert [row[:4] for row in b_calls] == [
        (mary.pk, "9101", "complete", site_b.phone_ip),
        (mary.pk, "9101", "partial", site_b.phone_ip),
    ]
    # Once each: one Call row and one recording per SIP call, none on the other node.
    call_ids = [row[4] for row in a_calls + b_calls]
    assert len(set(call_ids)) == 4
    assert Call.objects.count() == Recording.objects.count() == 4
