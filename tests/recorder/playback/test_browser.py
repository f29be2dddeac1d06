"""The pages in a real browser (issue 6, section 6): headless Chromium, driven by Selenium,
against the live server. A supervisor logs in, filters, opens a recording, presses play
and hears it advance, seeks by clicking the waveform and downloads; a supervisor of
another team cannot reach it. Screenshots of both pages go to var/screenshots/."""

from __future__ import annotations

import hashlib
import io
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from recorder.models import AuditEntry, Evaluation, Flag, Recording, RecordingNote
from recorder.recordings.waveform import compute_peaks
from tests.conftest import need_tool
from tests.recorder.playback.evaluation_ground import VERIFIES, make_scorecard, question
from tests.recorder.playback.support import PASSWORD, STARTED, PlaybackWorld, build_world, file_name

SECONDS = 12
RATE = 8000
WAIT_SECONDS = 10
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"

pytestmark = pytest.mark.django_db(transaction=True)  # the live server reads what we wrote


def call_wav() -> bytes:
    """Twelve seconds of stereo: the agent's 440 Hz on the left, the far party's 660 Hz on
    the right, each talking in turns of two seconds."""
    t = np.arange(SECONDS * RATE) / RATE
    turns = (t // 2).astype(int) % 2
    left = 9000 * np.sin(2 * np.pi * 440 * t) * (turns == 0)
    right = 9000 * np.sin(2 * np.pi * 660 * t) * (turns == 1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(2)
        audio.setsampwidth(2)
        audio.setframerate(RATE)
        audio.writeframes(np.column_stack([left, right]).astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


def call_recording(
    world: PlaybackWorld, call_id: str, stored: bytes | None = None, **fields: object
) -> Recording:
    """John's twelve-second call (call_wav) as a complete recording; its file holds
    `stored` (the WAV itself unless given: a sealed copy, say)."""
    audio = call_wav()
    recording = Recording.objects.create(
        call_id=call_id,
        started_at=STARTED,
        duration_seconds=SECONDS,
        direction="inbound",
        extension="9001",
        agent=world.john,
        codec="PCMU",
        status=Recording.Status.COMPLETE,
        size=len(audio),
        sha256=hashlib.sha256(audio).hexdigest(),
        peaks=compute_peaks(io.BytesIO(audio), "wav"),
        **fields,
    )
    content = ContentFile(audio if stored is None else stored)
    recording.file.save(f"2026/03/02/{call_id}.wav", content, save=True)
    return recording


@pytest.fixture
def long_call(world: PlaybackWorld) -> Recording:
    dtmf = [{"digit": "5", "at": 3.0, "duration": 0.12, "by": "far"}]
    recording = call_recording(world, "browser-1", remote_party="+15551230001", dtmf=dtmf)
    world.supervisor_a.user_permissions.add(Permission.objects.get(codename="download_recording"))
    return recording


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium = need_tool("chromium")
    driver_path = need_tool("chromedriver")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            result = None  # the next page is still loading
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_in(browser: WebDriver, base_url: str, username: str) -> None:
    browser.delete_all_cookies()
    browser.get(base_url + "/")
    wait_for(lambda: "/login/" in browser.current_url, "the login page")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(
        lambda: (
            browser.current_url.endswith("/recordings/")
            and browser.find_elements(By.ID, "match-count")
        ),
        "the recordings list",
    )


def audio_state(browser: WebDriver) -> dict:
    return browser.execute_script(
        "const a = document.getElementById('player');"
        "return {time: a.currentTime, paused: a.paused, duration: a.duration,"
        " ready: a.readyState};"
    )


def test_a_supervisor_finds_plays_seeks_and_downloads_a_recording(
    browser: WebDriver, live_server, world: PlaybackWorld, long_call: Recording
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    log_in(browser, live_server.url, "sales-lead")
    assert "3 recordings match" in browser.find_element(By.ID, "match-count").text
    browser.save_screenshot(str(SCREENSHOTS / "recordings-list.png"))

    # Filter: John's calls of at least five seconds.
    Select(browser.find_element(By.NAME, "agent")).select_by_visible_text("John")
    browser.find_element(By.NAME, "longer_than").send_keys("5")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(
        lambda: (
            "longer_than=5" in browser.current_url
            and browser.find_element(By.ID, "match-count").text.startswith("1 recording matches")
        ),
        "the filtered list",
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "table.recordings tbody tr a")
    assert len(rows) == 1
    rows[0].click()

    wait_for(lambda: browser.current_url.endswith(f"/recordings/{long_call.pk}/"), "the page")
    wait_for(lambda: audio_state(browser)["ready"] >= 1, "the audio's metadata")
    assert audio_state(browser)["duration"] == pytest.approx(SECONDS, abs=0.05)
    assert "Verified" in browser.find_element(By.ID, "integrity").text
    labels = browser.find_element(By.CSS_SELECTOR, ".waveform .lanes").text
    assert labels.index("Agent") < labels.index("Far party")  # agent on top: the left channel

    # Press play (space on the waveform) and hear the time advance.
    canvas = browser.find_element(By.ID, "waveform")
    canvas.send_keys(Keys.SPACE)
    wait_for(lambda: audio_state(browser)["time"] > 0.5, "playback to advance")
    assert not audio_state(browser)["paused"]
    canvas.send_keys(Keys.SPACE)
    wait_for(lambda: audio_state(browser)["paused"], "the pause")

    # Click three quarters of the way along the waveform: the player jumps there.
    width = canvas.size["width"]
    ActionChains(browser).move_to_element_with_offset(canvas, width // 4, 0).click().perform()
    wait_for(lambda: audio_state(browser)["time"] > 5, "the seek")
    assert audio_state(browser)["time"] == pytest.approx(0.75 * SECONDS, abs=0.1)
    browser.save_screenshot(str(SCREENSHOTS / "recording-page.png"))
    assert AuditEntry.objects.filter(
        recording=long_call, action__in=[AuditEntry.Action.PLAY, AuditEntry.Action.SEEK]
    ).exists()

    # Download: the file arrives whole, and the download is in the audit trail.
    browser.find_element(By.ID, "download").click()
    downloaded = browser.downloads / file_name(long_call)
    wait_for(downloaded.exists, "the downloaded file")
    wait_for(lambda: downloaded.stat().st_size == long_call.size, "the whole file")
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == long_call.sha256
    assert AuditEntry.objects.filter(
        recording=long_call, action=AuditEntry.Action.DOWNLOAD, user=world.supervisor_a
    ).exists()


def test_a_supervisor_of_another_team_cannot_reach_it(
    browser: WebDriver, live_server, world: PlaybackWorld, long_call: Recording
) -> None:
    log_in(browser, live_server.url, "support-lead")
    listed = browser.find_elements(By.CSS_SELECTOR, "table.recordings tbody tr a")
    assert f"/recordings/{long_call.pk}/" not in [row.get_attribute("href") for row in listed]
    for url in (f"/recordings/{long_call.pk}/", f"/recordings/{long_call.pk}/audio"):
        browser.get(live_server.url + url)
        wait_for(lambda: "Not Found" in browser.title, f"the 404 of {url}")
        assert browser.current_url == live_server.url + url
        assert not browser.find_elements(By.ID, "player")
    assert not AuditEntry.objects.filter(recording=long_call).exists()


# Records every Content-Security-Policy violation of a page, from before its first script.
WATCH_VIOLATIONS = (
    "window.cspViolations = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (event) => window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI));"
)


def test_the_pages_work_under_the_policy_that_refuses_inline_script(
    browser: WebDriver, live_server, world: PlaybackWorld, long_call: Recording
) -> None:
    watch = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_VIOLATIONS}
    )
    try:
        log_in(browser, live_server.url, "sales-lead")
        pages = ("/recordings/", f"/recordings/{long_call.pk}/", "/calls/live/",
                 "/evaluations/report/", "/evaluations/mine/")  # fmt: skip
        for url in pages:
            browser.get(live_server.url + url)
            wait_for(lambda: browser.find_elements(By.TAG_NAME, "main"), f"the page {url}")
            # QMS's own pages, styles and script violate nothing.
            assert browser.execute_script("return window.cspViolations") == [], url
        # A script injected into the page (as a failed escape would) does not run.
        ran = browser.execute_script(
            "const injected = document.createElement('script');"
            "injected.textContent = 'window.injectedRan = true';"
            "document.body.append(injected);"
            "return window.injectedRan === true;"
        )
        assert ran is False
        wait_for(lambda: browser.execute_script("return window.cspViolations"), "the report")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": watch["identifier"]}
        )


def test_a_supervisor_notes_a_moment_flags_the_call_and_finds_it_by_its_flag(
    browser: WebDriver, live_server, world: PlaybackWorld, long_call: Recording
) -> None:
    """Issue 17, section 2: a note at the player's position, a flag, and the list by flag."""
    Flag.objects.create(name="complaint", description="The customer complained.")
    marking = Permission.objects.filter(codename__in=["add_recordingflag", "add_recordingnote"])
    world.supervisor_a.user_permissions.add(*marking)
    log_in(browser, live_server.url, "sales-lead")
    browser.get(f"{live_server.url}/recordings/{long_call.pk}/")
    wait_for(lambda: audio_state(browser)["ready"] >= 1, "the audio's metadata")

    # Seek half-way: the note's position follows the player.
    canvas = browser.find_element(By.ID, "waveform")
    ActionChains(browser).move_to_element(canvas).click().perform()
    position = browser.find_element(By.ID, "note-position")
    wait_for(lambda: position.get_attribute("value") == "6.0", "the note at the player's time")
    browser.find_element(By.ID, "note-text").send_keys("Customer asks for a refund")
    browser.find_element(By.CSS_SELECTOR, "#add-note button[type=submit]").click()
    wait_for(lambda: "Customer asks for a refund" in browser.find_element(By.ID, "note-list").text,
             "the note on the page")  # fmt: skip
    note = RecordingNote.objects.get()
    assert (note.position_seconds, note.author_name) == (pytest.approx(6.0, abs=0.05), "sales-lead")

    # Its time seeks the player there.
    wait_for(lambda: audio_state(browser)["ready"] >= 1, "the audio again")
    browser.find_element(By.CSS_SELECTOR, "#note-list [data-seek]").click()
    wait_for(lambda: abs(audio_state(browser)["time"] - 6.0) < 0.1, "the seek to the note")

    Select(browser.find_element(By.ID, "flag-choice")).select_by_visible_text("complaint")
    browser.find_element(By.CSS_SELECTOR, "#add-flag button[type=submit]").click()
    wait_for(lambda: "complaint" in browser.find_element(By.ID, "flag-list").text, "the flag")
    browser.save_screenshot(str(SCREENSHOTS / "recording-flags-notes.png"))

    # The list, by flag: this call alone of the three the supervisor may see.
    browser.get(f"{live_server.url}/recordings/")
    Select(browser.find_element(By.NAME, "flag")).select_by_visible_text("complaint")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(lambda: browser.find_element(By.ID, "match-count").text.startswith(
        "1 recording matches"), "the list by flag")  # fmt: skip
    (row,) = browser.find_elements(By.CSS_SELECTOR, "table.recordings tbody tr a")
    assert row.get_attribute("href").endswith(f"/recordings/{long_call.pk}/")
    actions = set(AuditEntry.objects.filter(recording=long_call).values_list("action", flat=True))
    assert {"flag", "note"} <= actions


def test_a_supervisor_evaluates_a_call_while_listening_and_sees_its_score(
    browser: WebDriver, live_server, world: PlaybackWorld, long_call: Recording
) -> None:
    """Issue 17, section 3: the evaluate panel of the recording page, scored by the server."""
    form = make_scorecard()
    world.supervisor_a.user_permissions.add(Permission.objects.get(codename="add_evaluation"))
    log_in(browser, live_server.url, "sales-lead")
    browser.get(f"{live_server.url}/recordings/{long_call.pk}/")
    wait_for(lambda: audio_state(browser)["ready"] >= 1, "the audio's metadata")
    browser.find_element(By.ID, "waveform").send_keys(Keys.SPACE)
    wait_for(lambda: audio_state(browser)["time"] > 0.3, "playback to advance")

    panel = browser.find_element(By.ID, f"evaluate-{form.pk}")
    for name, word in (
        (f"answer-{question('Greets the customer by name').pk}", "yes"),
        (f"answer-{question('Shows empathy').pk}", "4"),
        (f"answer-{question(VERIFIES).pk}", "yes"),
    ):
        panel.find_element(By.CSS_SELECTOR, f"input[name='{name}'][value='{word}']").click()
    browser.find_element(By.ID, f"evaluation-comment-{form.pk}").send_keys("Warm and clear")
    panel.find_element(By.CSS_SELECTOR, "button[value=submitted]").click()

    listed = wait_for(
        lambda: (
            "83.3 %" in browser.find_element(By.ID, "evaluation-list").text
            and browser.find_element(By.ID, "evaluation-list")
        ),
        "the score on the page",
    )
    assert "submitted" in listed.text and "sales-lead" in listed.text
    listed.find_element(By.TAG_NAME, "summary").click()
    wait_for(lambda: "Warm and clear" in listed.text, "the evaluation's details")
    browser.save_screenshot(str(SCREENSHOTS / "recording-evaluation.png"))
    evaluation = Evaluation.objects.get()
    assert (evaluation.score, evaluation.status) == (83.33, "submitted")
    assert AuditEntry.objects.filter(recording=long_call, action="evaluation").exists()


def test_the_report_page_shows_the_averages_as_a_table_and_a_chart(
    browser: WebDriver, live_server, world: PlaybackWorld, long_call: Recording
) -> None:
    form = make_scorecard()
    for recording, score in ((long_call, 90.0), (world.recording_a, 70.0)):
        Evaluation.objects.create(recording=recording, form=form, agent=recording.agent,
                                  evaluator_name="boss", status="submitted", score=score,
                                  submitted_at=STARTED)  # fmt: skip
    log_in(browser, live_server.url, "sales-lead")
    browser.find_element(By.LINK_TEXT, "Evaluations").click()
    wait_for(lambda: browser.find_elements(By.ID, "report-filters"), "the report page")
    for name, day in (("started_from", "03/01/2026"), ("started_to", "03/31/2026")):
        browser.find_element(By.NAME, name).send_keys(day)
    browser.find_element(By.CSS_SELECTOR, "#report-filters button[type=submit]").click()
    table = wait_for(lambda: browser.find_element(By.ID, "report-agents"), "the agents' table")
    assert table.text.splitlines()[1:] == ["John 2 80.0"]
    assert browser.find_element(By.ID, "report-teams").text.splitlines()[1:] == ["Sales 2 80.0"]
    bar = browser.find_element(By.CSS_SELECTOR, "#chart-agents rect")
    assert bar.size["width"] == pytest.approx(0.8 * 400, abs=2)  # 80 out of 100
    assert "80.0" in browser.find_element(By.ID, "chart-agents").text
    assert "started_from=2026-03-01" in browser.find_element(By.ID, "report-csv").get_attribute(
        "href"
    )
    browser.save_screenshot(str(SCREENSHOTS / "evaluation-report.png"))
