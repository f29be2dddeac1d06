"""The Celery queue of a capture node, named once.

Everything a node's sniffers produce is applied by that node's worker: the outbox's events
(recorder/sinks/delivery.py), the finalisation of its spools and their waveforms
(recorder/tasks.py). The worker consumes the queue (recorder/nodes/worker.py), so the name
is written here only. Imports nothing: the sinks and the tasks read it without Django.
"""

from __future__ import annotations


def queue_for(node: str) -> str:
    """`celery -A qms worker -Q capture.<node>` is the worker of node <node>."""
    return f"capture.{node}"
