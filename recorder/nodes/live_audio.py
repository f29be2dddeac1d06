"""A capture node's live audio: the calls supervisors listen to, decoded from their logs
into the relay (recorder/recordings/live_relay.py), in a thread of the node's worker.

The sniffers are processes of their own, so this decoding never takes the capture's core:
it reads the logs they write, as finishing does. A call nobody listens to costs nothing;
one listened to costs a read of its log and the decoding of its new packets a
quarter-second, shared by all its listeners.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import redis
from django.db import DatabaseError, close_old_connections, connection

from recorder.media.live import LiveDecoder
from recorder.models import Call
from recorder.recordings.live_relay import (
    ENDED,
    RELAY_ERRORS,
    UNAVAILABLE,
    ended_reason,
    live_decoder,
    publish,
    publish_state,
    wanted_calls,
    wanted_key,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# A call whose log is not there this long after it was asked for is said to be unavailable.
NO_LOG_SECONDS = 10.0
NO_LOG = "no audio of the call has been captured (it is not recorded, or has no RTP yet)"


class LiveAudioRelay:
    """Serves the live audio of node `node`'s calls, from the logs under `spool_root`."""

    def __init__(
        self, node: str, client: redis.Redis, spool_root: Path, capturing: Callable[[], bool]
    ) -> None:
        self.node, self.client, self.spool_root = node, client, spool_root
        # Only the machine that captures for the node serves its calls: a standby of the
        # same name (recorder/nodes/node.py, _refused) has no logs to read.
        self.capturing = capturing
        self.decoders: dict[int, LiveDecoder] = {}
        # Calls asked for whose log is not there yet: how many rounds they have waited.
        self.waiting: dict[int, int] = {}
        self.stopping = threading.Event()
        self.failing = False
        self.thread = threading.Thread(target=self._run, name="qms-live-audio", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.step()
                    self._recovered()
                except (*RELAY_ERRORS, DatabaseError) as error:
                    self._failed(error)
                self.stopping.wait(POLL_SECONDS)
        finally:
            connection.close()

    def step(self) -> None:
        """One round: the calls wanted now, each one's new audio published."""
        if not self.capturing():
            self.decoders.clear()
            return
        wanted = wanted_calls(self.client, self.node)
        for call_pk in set(self.decoders) - wanted:
            del self.decoders[call_pk]
        for call_pk in set(self.waiting) - wanted:
            del self.waiting[call_pk]
        for call_pk in wanted:
            decoder = self.decoders.get(call_pk) or self._open(call_pk)
            if decoder is not None:
                self._serve(call_pk, decoder)

    def _open(self, call_pk: int) -> LiveDecoder | None:
        close_old_connections()
        call = Call.objects.filter(pk=call_pk, node=self.node).first()
        if call is None:
            return self._unavailable(call_pk, f"the call is not captured by node {self.node}")
        if call.ended_at is not None:
            publish_state(self.client, call_pk, ENDED, ended_reason(call))
            return None
        decoder = live_decoder(call, self.spool_root)
        if decoder is None:
            rounds = self.waiting[call_pk] = self.waiting.get(call_pk, 0) + 1
            if rounds * POLL_SECONDS >= NO_LOG_SECONDS:
                return self._unavailable(call_pk, NO_LOG)
            return None
        self.waiting.pop(call_pk, None)
        self.decoders[call_pk] = decoder
        return decoder

    def _serve(self, call_pk: int, decoder: LiveDecoder) -> None:
        # A log that does not parse, or a decoder that trips on it, costs that call's live
        # audio alone: the other calls and the node go on.
        try:
            audio = decoder.read()
        except FileNotFoundError:
            del self.decoders[call_pk]
            publish_state(self.client, call_pk, ENDED, "the call ended")
            return
        except Exception as error:
            log.exception("live audio of call %s: %s", call_pk, error)
            del self.decoders[call_pk]
            self._unavailable(call_pk, "its audio could not be decoded")
            return
        if audio is not None:
            publish(self.client, call_pk, audio)

    def _unavailable(self, call_pk: int, why: str) -> None:
        self.waiting.pop(call_pk, None)
        publish_state(self.client, call_pk, UNAVAILABLE, why)
        # Asked again, it is answered again: not before the listener asks once more.
        self.client.zrem(wanted_key(self.node), str(call_pk))

    def _failed(self, error: Exception) -> None:
        if not self.failing:
            log.warning("live audio of node %s: %s (retrying)", self.node, error)
        self.failing = True

    def _recovered(self) -> None:
        if self.failing:
            log.info("live audio of node %s: working again", self.node)
        self.failing = False
