"""The worker bootstep that makes a Celery worker a capture node.

`celery -A qms worker -Q capture.<node>` on the node whose QMS_NODE is <node> hosts that
node's sniffers for as long as the worker lives: started with the worker, stopped with it
(recorder/nodes/node.py). A bootstep rather than a task: a never-ending task message
would be redelivered by Redis after its visibility timeout, and run twice. A worker that
does not consume its node's queue captures nothing.
"""

from __future__ import annotations

from celery import bootsteps
from celery.signals import worker_process_init, worker_ready

from recorder.nodes.queues import queue_for
from recorder.recordings.finishing_process import settle_heap


class CaptureStep(bootsteps.StartStopStep):
    """Runs the sniffers configured for this node while the worker runs."""

    # After the pool: a prefork pool forks its children before the node starts threads.
    requires = {"celery.worker.components:Pool"}

    def include_if(self, worker) -> bool:
        from django.conf import settings

        return queue_for(settings.QMS_NODE) in worker.app.amqp.queues.consume_from

    def create(self, worker):
        from django.conf import settings

        from recorder.nodes.node import CaptureNode

        return CaptureNode(settings.QMS_NODE, worker.app, worker.hostname)


@worker_ready.connect
def settle_worker_heap(**_: object) -> None:
    """A worker that finishes recordings in its own process (the solo pool a capture node
    runs, or threads) takes the finishing processes' collector settings once it is ready:
    what its set-up made stays out of every later collection."""
    settle_heap()


@worker_process_init.connect
def settle_child_heap(**_: object) -> None:
    """The same in each child of a prefork pool, where the tasks run."""
    settle_heap()
