from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class QMSAdminConfig(AdminConfig):
    """Django admin, with the QMS site that adds the directory health page."""

    default_site = "qms.admin.QMSAdminSite"


class QMSConfig(AppConfig):
    name = "qms"
    verbose_name = "QMS"

    def ready(self) -> None:
        # Connects the failed-login counter to django.contrib.auth's signals.
        from qms.lib import login_throttle  # noqa: F401
