from __future__ import annotations

from django.apps import AppConfig


class ExtensionsConfig(AppConfig):
    name = "extensions"
    verbose_name = "Directory"
