"""The Celery app. With no CELERY_BROKER_URL, tasks run eagerly in the calling process."""

from __future__ import annotations

import os
import sys

from celery import Celery

from qms.lib.env import report_plainly

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
# `celery -A qms worker|beat` reads the settings inside celery's own command line: a bad
# environment value reaches the interpreter's top, where it is printed as its sentence.
sys.excepthook = report_plainly

app = Celery("qms")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The TAPI poll's beat entry ("tapi-poll") is added by integrations/shoretel/apps.py with
# app.add_periodic_task; a beat_schedule set here or in settings is merged with it.

# On a capture node, `celery -A qms worker -Q capture.<QMS_NODE>` also hosts the node's
# sniffers for the worker's life (recorder/nodes/worker.py, docs/deployment.md).
app.steps["worker"].add("recorder.nodes.worker:CaptureStep")
