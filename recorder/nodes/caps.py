"""The flood caps that tripped in an engine (EngineStats.caps), as alerts in the admin
(CaptureAlert) and as a stats line: what import_pcap, sniff and the capture node show."""

from __future__ import annotations

import logging
from collections import Counter

from django.db import DatabaseError

from recorder.engine.floods import cap_message
from recorder.nodes.alerts import note_alert

log = logging.getLogger(__name__)


def caps_line(caps: Counter) -> str:
    """The stats line of the caps that tripped; empty when none did."""
    if not caps:
        return ""
    tripped = ", ".join(f"{kind} {count}" for kind, count in caps.most_common())
    return f"flood caps tripped (see the capture alerts): {tripped}"


class CapAlerts:
    """Adds to the alerts of `node` what each cap counted since the last call: an engine's
    counters only grow, so the difference is what tripped meanwhile."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.noted: Counter[str] = Counter()

    def note(self, caps: Counter) -> None:
        """Counted and written; with the database out of reach, tried again next time."""
        try:
            for kind, count in caps.items():
                new = count - self.noted[kind]
                if new > 0:
                    note_alert(self.node, kind, cap_message(kind, count), new)
                    self.noted[kind] = count
        except DatabaseError as error:
            log.warning("capture alerts of %s not written yet: %s", self.node or "this host", error)
