from __future__ import annotations

from django.apps import AppConfig


class CaptureConfig(AppConfig):
    """Capture nodes: the interfaces each node's Celery worker captures on, their live
    state, and the bookkeeping that carries their events to the database in order."""

    name = "recorder.nodes"
    label = "capture"
    verbose_name = "Capture"
