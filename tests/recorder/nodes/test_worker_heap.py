"""A process that finishes recordings keeps what its set-up made out of the collector's way
(recordings/finishing_process.py settle_heap): a finishing process of sniff and import_pcap
after Django's set-up, and a Celery worker (a capture node's, which finishes the node's
calls) once it is ready or, in a prefork pool, in each child."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery.signals import worker_process_init, worker_ready

import recorder.nodes.worker  # noqa: F401  (connects the worker's signals, as the worker does)
from recorder.recordings.finishing_process import YOUNG_COLLECTION_EVERY, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    """This process's collector as it was, whatever the test did to it."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_settling_freezes_what_is_there_and_collects_the_young_less_often(collector) -> None:
    assert gc.get_freeze_count() == 0
    older = gc.get_threshold()[1:]
    settle_heap()
    assert gc.get_freeze_count() > 10_000  # Django and the project, imported
    assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *older)


@pytest.mark.parametrize("signal", [worker_ready, worker_process_init], ids=["ready", "child"])
def test_a_celery_worker_settles_its_heap(collector, signal) -> None:
    signal.send(sender=None)
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY
