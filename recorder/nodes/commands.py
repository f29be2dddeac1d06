"""What the capture commands (sniff, import_pcap) share as commands."""

from __future__ import annotations

from django.core.checks import Tags

# Django's system checks a capture command runs as it starts: every kind but those of the
# web's URL configuration, its admin, its templates and its compatibility settings (CSRF
# origins, the REST framework's), which import each view, admin page, template tag library
# and API class (0.5 s of a short import's start-up on a two-core VM) and concern neither
# command. The web's own start-up, `migrate` and `manage.py check` still run them.
CAPTURE_CHECKS = [
    tag
    for name, tag in vars(Tags).items()
    if not name.startswith("_")
    and tag not in (Tags.admin, Tags.compatibility, Tags.templates, Tags.urls)
]
