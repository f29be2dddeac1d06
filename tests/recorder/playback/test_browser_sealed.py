"""An encrypted recording in a real browser (issue 16, section 4): headless Chromium plays
a sealed recording, the audio view decrypting the ranges the player asks for, and seeks
by clicking the waveform."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from recorder.models import AuditEntry, Recording
from tests.recorder.playback import test_browser
from tests.recorder.playback.sealed_support import seal
from tests.recorder.playback.support import PlaybackWorld, build_world
from tests.recorder.playback.test_browser import (
    SECONDS,
    audio_state,
    call_recording,
    call_wav,
    log_in,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)  # the live server reads what we wrote

# The same headless Chromium as the other browser tests.
browser = test_browser.browser


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


@pytest.fixture
def sealed_call(world: PlaybackWorld) -> Recording:
    return call_recording(
        world, "browser-sealed", seal(call_wav()), remote_party="+15551230002",
        encryption_key_id="test-2025",
    )  # fmt: skip


def test_a_supervisor_plays_and_seeks_an_encrypted_recording(
    browser, live_server, world: PlaybackWorld, sealed_call: Recording
) -> None:
    assert Path(sealed_call.file.path).read_bytes().startswith(b"QMSSEA")
    log_in(browser, live_server.url, "sales-lead")
    browser.get(f"{live_server.url}/recordings/{sealed_call.pk}/")
    wait_for(lambda: audio_state(browser)["ready"] >= 1, "the audio's metadata")
    assert audio_state(browser)["duration"] == pytest.approx(SECONDS, abs=0.05)
    assert "Verified" in browser.find_element(By.ID, "integrity").text
    assert "Encrypted at rest" in browser.find_element(By.ID, "integrity").text

    canvas = browser.find_element(By.ID, "waveform")
    canvas.send_keys(Keys.SPACE)
    wait_for(lambda: audio_state(browser)["time"] > 0.5, "playback to advance")
    canvas.send_keys(Keys.SPACE)
    wait_for(lambda: audio_state(browser)["paused"], "the pause")

    width = canvas.size["width"]
    ActionChains(browser).move_to_element_with_offset(canvas, width // 4, 0).click().perform()
    wait_for(lambda: audio_state(browser)["time"] > 5, "the seek")
    assert audio_state(browser)["time"] == pytest.approx(0.75 * SECONDS, abs=0.1)
    # Playing on from the seek: the decrypted ranges after it are audio too.
    canvas.send_keys(Keys.SPACE)
    wait_for(lambda: audio_state(browser)["time"] > 0.75 * SECONDS + 0.5, "playback after it")
    assert not AuditEntry.objects.filter(recording=sealed_call, action="integrity").exists()
    assert AuditEntry.objects.filter(
        recording=sealed_call, action__in=[AuditEntry.Action.PLAY, AuditEntry.Action.SEEK]
    ).exists()
