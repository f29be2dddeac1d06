"""The sink a capture command (sniff, import_pcap) stores its events through."""

from __future__ import annotations

from django.conf import settings
from django.db import connections

from recorder.recordings.finisher import InlineFinisher, finishes_inline
from recorder.sinks.database import DatabaseSink
from recorder.sinks.sink_process import SinkProcess


def sink_for_commands(node: str, recording: bool = True) -> DatabaseSink | SinkProcess:
    """The sink of a capture command (sniff, import_pcap): a DatabaseSink in a process of
    its own, which finishes the recordings in QMS_FINISH_PROCESSES processes of its own and
    is started now, so that its set-up and theirs overlap the capture (unless `recording`
    is off: then no finishing process starts unless a call asks for one). Where recordings
    are finished inline (finishes_inline), the database can take no second process: a
    DatabaseSink in a thread of this one, finishing in that thread. close() applies
    everything and finishes every recording handed over.

    The process is forked from this one, which closes its database connections first (a
    connection both used would break), unless a transaction holds one of them open."""
    if finishes_inline():
        return DatabaseSink(node=node, finisher=InlineFinisher())
    if any(connection.in_atomic_block for connection in connections.all()):
        # A caller inside a transaction (a command called from code that holds one): its
        # connection stays open, and the process starts afresh instead of forking.
        return SinkProcess(
            node, settings.QMS_FINISH_PROCESSES, start_finishers=recording, fork=False
        )
    # The process is forked: it must inherit no connection (both ends would use it).
    connections.close_all()
    return SinkProcess(node, settings.QMS_FINISH_PROCESSES, start_finishers=recording)
