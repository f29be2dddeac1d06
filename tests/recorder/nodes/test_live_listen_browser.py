"""Live listening end to end (issue 17, section 1): a SIPp call in progress on loopback, the
capture node's worker capturing it (`celery -A qms worker -Q capture.test`, its own spool
folder), the web tier in this process (the live server, whose spool folder is another),
Redis of the test's own between them, and a supervisor in headless Chromium who opens the
live calls page, presses Listen and hears the call: what the page plays correlates with
what each SIPp phone streams, John's sentence on the left, the caller's on the right.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from extensions.models import Team
from recorder.models import AuditEntry, Call, LiveListen
from tests.conftest import need_tool
from tests.recorder.nodes import test_worker_capture as worker_capture
from tests.recorder.nodes.capture_node import (
    CaptureWorker,
    eventually,
    johns_desk,
    loopback_interface,
    phones,
)
from tests.recorder.playback import test_browser as pages
from tests.recorder.playback.support import login
from tests.recorder.recordings.test_recording_fidelity import (
    AGENT_SENTENCE,
    CUSTOMER_SENTENCE,
    MU_LAW,
    Speech,
    best_correlation,
    speak,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The pages' headless Chromium (tests/recorder/playback/test_browser.py), a fixture here too.
browser = pages.browser
# The capture node's worker of the worker tests (tests/recorder/nodes/test_worker_capture.py).
worker = worker_capture.worker

CALL_SECONDS = 12.0
# Each phone says its sentence this many times over, so that whenever the listener joins
# there is speech to hear.
REPEATS = 3
RATE = 8000
# What the page must have played before the test compares it.
HEARD_SECONDS = 4.0
MIN_CORRELATION = 0.8


@pytest.fixture
def supervisor(postgresql: None):
    """John's team lead, who may listen live."""
    john = johns_desk()
    team = Team.objects.create(name="Support")
    john.teams.add(team)
    lead = login("support-lead")
    team.supervisors.add(lead)
    lead.user_permissions.add(Permission.objects.get(codename="listen_live"))
    return lead


def repeated(speech: Speech) -> Speech:
    """The sentence said REPEATS times, as SIPp will stream it and as PCM."""
    codes = speech.codes.with_suffix(".repeated" + speech.codes.suffix)
    codes.write_bytes(speech.codes.read_bytes() * REPEATS)
    return Speech(codes, np.tile(speech.pcm, REPEATS))


def played(browser: WebDriver) -> dict:
    return browser.execute_script(
        "const l = window.qmsLive;"
        "return {frames: l.frames, rate: l.rate, segments: l.segments, ended: l.ended,"
        " left: [].concat(...l.left), right: [].concat(...l.right)};"
    )


def at_call_rate(samples: list[float], rate: int) -> np.ndarray:
    """What the page played (Web Audio's rate) back at 8 kHz, as PCM16 values."""
    heard = np.asarray(samples, dtype=np.float64) * 32768
    times = np.arange(int(len(heard) * RATE / rate)) / RATE
    return np.interp(times, np.arange(len(heard)) / rate, heard)


def test_a_supervisor_listens_to_a_sipp_call_in_progress_in_the_browser(
    worker: CaptureWorker, supervisor, browser: WebDriver, live_server, settings, tmp_path: Path
) -> None:
    need_tool("espeak-ng")
    need_tool("sox")
    john_says = repeated(speak(tmp_path, "john", AGENT_SENTENCE, MU_LAW, "en"))
    caller_says = repeated(speak(tmp_path, "caller", CUSTOMER_SENTENCE, MU_LAW, "en-us+f3"))
    settings.QMS_LIVE_AUDIO_URL = worker.broker_url  # the web tier's relay: the node's Redis
    loopback_interface()
    pages.log_in(browser, live_server.url, "support-lead")
    with phones(tmp_path, CALL_SECONDS, far_end_audio=caller_says.codes) as phone:
        worker.start()
        phone.register("9001")
        caller = phone.call(CALL_SECONDS, wait=False, audio=john_says.codes)
        eventually(
            lambda: Call.objects.filter(state=Call.State.CONNECTED, node="test").exists(),
            15,
            "the call connected",
            worker.log,
        )
        # The listen page's script and its requests violate nothing of the script policy.
        watch = browser.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": pages.WATCH_VIOLATIONS}
        )
        browser.get(live_server.url + "/calls/live/")
        browser.find_element(By.CSS_SELECTOR, "a.listen").click()
        pages.wait_for(lambda: browser.find_elements(By.ID, "listen-start"), "the listen page")
        browser.execute_script("window.qmsLive.keep = true;")
        browser.find_element(By.ID, "listen-start").click()
        deadline = time.monotonic() + CALL_SECONDS
        while time.monotonic() < deadline and not _heard_enough(browser):
            time.sleep(0.2)
        heard = played(browser)
        assert browser.execute_script("return window.cspViolations") == []
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": watch["identifier"]}
        )
        assert heard["segments"] > 0, browser.find_element(By.ID, "listen-state").text
        assert heard["frames"] >= HEARD_SECONDS * heard["rate"], heard["frames"]
        caller.wait(timeout=CALL_SECONDS + 10)

    left, right = (
        at_call_rate(heard["left"], heard["rate"]),
        at_call_rate(heard["right"], heard["rate"]),
    )
    # The page's stretch of the call against each sentence as SIPp sent it.
    john_score, _at = best_correlation(john_says.pcm, left)
    caller_score, _at = best_correlation(caller_says.pcm, right)
    assert john_score >= MIN_CORRELATION, john_score
    assert caller_score >= MIN_CORRELATION, caller_score
    assert best_correlation(caller_says.pcm, left)[0] < 0.5  # each voice on its own side
    assert best_correlation(john_says.pcm, right)[0] < 0.5
    # The listen ended with the call, and both its ends are in the audit trail.
    pages.wait_for(lambda: "The call ended." in played(browser)["ended"], "the end of the call")
    listen = LiveListen.objects.get()
    assert listen.ended_by == LiveListen.EndedBy.CALL_ENDED
    assert AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_START).count() == 1
    assert AuditEntry.objects.filter(action=AuditEntry.Action.LISTEN_END).count() == 1


def _heard_enough(browser: WebDriver) -> bool:
    heard = browser.execute_script("return [window.qmsLive.frames, window.qmsLive.rate];")
    return bool(heard[1]) and heard[0] >= HEARD_SECONDS * heard[1]
