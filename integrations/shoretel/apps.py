from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_save


class ShoretelConfig(AppConfig):
    name = "integrations.shoretel"
    label = "shoretel"
    verbose_name = "ShoreTel TAPI"

    def ready(self) -> None:
        from integrations.shoretel.calls import recording_saved
        from integrations.shoretel.tasks import poll_tapi_bridges
        from qms.celery import app
        from recorder.models import Recording

        # A finished unsignalled recording looks for the ShoreTel call it was.
        post_save.connect(recording_saved, sender=Recording, dispatch_uid="shoretel-recording")
        # The poll's beat entry lives here, with the app, rather than in qms/celery.py.
        # A poll that could not start within one interval is dropped, not queued up.
        interval = settings.QMS_TAPI_POLL_SECONDS
        app.add_periodic_task(interval, poll_tapi_bridges.s(), name="tapi-poll", expires=interval)
