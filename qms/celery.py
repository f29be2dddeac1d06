"""The Celery app. With no CELERY_BROKER_URL, tasks run eagerly in the calling process."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

app = Celery("qms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The TAPI poll's beat entry ("tapi-poll") is added by integrations/shoretel/apps.py with
# app.add_periodic_task; a beat_schedule set here or in settings is merged with it.

# On a capture node, `celery -A qms worker -Q capture.<QMS_NODE>` also hosts the node's
# sniffers for the worker's life (recorder/capture/worker.py, docs/deployment.md).
app.steps["worker"].add("recorder.capture.worker:CaptureStep")
