"""The supervisor's pages (issue 6, section 2): the recordings list, a recording's page and
the live calls, each scoped like the API, with a login of their own."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from extensions.models import Agent, Phone
from recorder.models import AuditEntry, Call, Recording
from recorder.playback.search import DEFAULT_SORT, ordered
from recorder.recordings.waveform import peaks_for_recording
from tests.recorder.playback.support import (
    PASSWORD,
    STARTED,
    WHO_SEES_TEAM_A,
    PlaybackWorld,
    build_world,
    login,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


def pages_as(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def listed(response) -> list[int]:
    """The recordings a list page shows, in its order."""
    assert response.status_code == 200, response.content[:500]
    return [recording.pk for recording in response.context["page"].object_list]


def live_call(agent: Agent | None, extension: str, **fields) -> Call:
    values = {
        "protocol": "sip",
        "call_id": f"live-{extension}-{Call.objects.count()}",
        "started_at": timezone.now() - timedelta(minutes=3),
        "state": Call.State.CONNECTED,
        "caller": extension,
        "callee": "6175551212",
        "extension": extension,
        "agent": agent,
    }
    return Call.objects.create(**{**values, **fields})


# The permission matrix: each role against each page. -----------------------------------------

ALLOWED = {"listed": True, "detail": 200, "live": True}
HIDDEN = {"listed": False, "detail": 404, "live": False}

MATRIX = [(role, own, ALLOWED if sees else HIDDEN) for role, own, sees in WHO_SEES_TEAM_A]


@pytest.mark.parametrize(("role", "agents_hear_own", "expected"), MATRIX)
def test_the_permission_matrix_of_the_pages_for_a_team_a_recording(
    world: PlaybackWorld, role: str, agents_hear_own: bool, expected: dict
) -> None:
    johns_call = live_call(world.john, "9001")
    pk = world.recording_a.pk
    with override_settings(QMS_AGENTS_HEAR_OWN=agents_hear_own):
        client = pages_as(getattr(world, role))
        assert (pk in listed(client.get("/recordings/"))) is expected["listed"]
        assert client.get(f"/recordings/{pk}/").status_code == expected["detail"]
        live = client.get("/calls/live/")
        assert live.status_code == 200
        assert (johns_call in live.context["calls"]) is expected["live"]


def test_a_hidden_recording_page_answers_exactly_as_a_missing_one(world: PlaybackWorld) -> None:
    client = pages_as(world.supervisor_b)
    hidden = client.get(f"/recordings/{world.recording_a.pk}/")
    missing = client.get("/recordings/999999/")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content


@pytest.mark.parametrize("url", ["/recordings/", "/recordings/1/", "/calls/live/"])
def test_anonymous_is_sent_to_the_login_page(world: PlaybackWorld, url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


def test_the_front_page_is_the_recordings_list(world: PlaybackWorld) -> None:
    assert Client().get("/")["Location"] == "/recordings/"
    assert pages_as(world.supervisor_a).get("/", follow=True).redirect_chain[-1][0] == (
        "/recordings/"
    )


# The login page: for every active user, not only staff. ---------------------------------------


def test_a_supervisor_who_is_not_staff_logs_in_through_the_pages_login(
    world: PlaybackWorld,
) -> None:
    assert not world.supervisor_a.is_staff
    client = Client()
    response = client.post(
        "/login/?next=/recordings/", {"username": "sales-lead", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/recordings/"
    assert world.recording_a.pk in listed(client.get("/recordings/"))


def test_a_login_without_next_lands_on_the_list_and_logout_returns_to_login(
    world: PlaybackWorld,
) -> None:
    client = Client()
    response = client.post("/login/", {"username": "sales-lead", "password": PASSWORD})
    assert response["Location"] == "/recordings/"
    out = client.post("/logout/")
    assert out["Location"] == "/login/"
    assert client.get("/recordings/").status_code == 302


def test_the_pages_login_is_throttled_and_says_so(world: PlaybackWorld) -> None:
    cache.clear()
    client = Client(REMOTE_ADDR="198.51.100.9")
    for _ in range(5):
        wrong = client.post("/login/", {"username": "sales-lead", "password": "a-wrong-guess"})
        assert wrong.status_code == 200
    locked = client.post("/login/", {"username": "sales-lead", "password": PASSWORD})
    cache.clear()
    assert locked.status_code == 200
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


# Filters: they narrow, and their choices never name another team's people or numbers. --------


def test_each_filter_narrows_the_list(world: PlaybackWorld) -> None:
    Recording.objects.filter(pk=world.recording_a.pk).update(
        duration_seconds=30, mos_estimate=3.1, remote_party="+15551230001", direction="outbound"
    )
    Recording.objects.filter(pk=world.recording_on_marys_line.pk).update(
        duration_seconds=300, mos_estimate=4.3, status=Recording.Status.PARTIAL
    )
    client = pages_as(world.admin)
    a, b, marys = world.recording_a.pk, world.recording_b.pk, world.recording_on_marys_line.pk
    day = STARTED.date().isoformat()
    cases = [
        ({}, {a, b, marys}),
        ({"agent": world.carl.pk}, {b, marys}),
        ({"team": world.sales.pk}, {a}),
        ({"extension": "9002"}, {marys}),
        ({"far_party": "555123"}, {a}),
        ({"started_from": day, "started_to": day}, {a, b, marys}),
        ({"started_from": "2026-03-03"}, set()),
        ({"started_to": "2026-03-01"}, set()),
        ({"longer_than": 10}, {a, marys}),
        ({"longer_than": 10, "shorter_than": 60}, {a}),
        ({"direction": "outbound"}, {a}),
        ({"status": "partial"}, {marys}),
        ({"mos_below": 3.5}, {a}),
        ({"agent": world.carl.pk, "status": "complete"}, {b}),
    ]
    for query, expected in cases:
        assert set(listed(client.get("/recordings/", query))) == expected, query


def test_a_supervisors_choices_hold_only_their_teams_people_and_numbers(
    world: PlaybackWorld,
) -> None:
    page = pages_as(world.supervisor_a).get("/recordings/")
    form = page.context["form"]
    assert [agent.name for agent in form.fields["agent"].queryset] == ["John", "Mary"]
    assert [team.name for team in form.fields["team"].queryset] == ["Sales"]
    assert form.extension_suggestions == ["9001", "9002"]
    choices = " ".join(
        re.findall(r"<(select|datalist)[^>]*>(.*?)</\1>", page.content.decode(), re.DOTALL)[i][1]
        for i in range(3)
    )
    assert "John" in choices and "Sales" in choices and "9002" in choices
    # Carl's call on Mary's line is listed (it rang on her number), but he is not offered.
    assert "Carl" not in choices and "Support" not in choices and "9003" not in choices
    other = pages_as(world.supervisor_b).get("/recordings/").context["form"]
    assert [agent.name for agent in other.fields["agent"].queryset] == ["Carl"]
    assert other.extension_suggestions == ["9003"]


@override_settings(QMS_AGENTS_HEAR_OWN=True)
def test_an_agents_choices_are_themselves_and_their_own_numbers(world: PlaybackWorld) -> None:
    form = pages_as(world.agent).get("/recordings/").context["form"]
    assert [agent.name for agent in form.fields["agent"].queryset] == ["John"]
    assert [team.name for team in form.fields["team"].queryset] == ["Sales"]  # their own
    assert form.extension_suggestions == ["9001"]
    assert pages_as(world.outsider).get("/recordings/").context["form"].extension_suggestions == []


def test_another_teams_agent_or_team_is_refused_like_one_that_does_not_exist(
    world: PlaybackWorld,
) -> None:
    client = pages_as(world.supervisor_a)
    for name, theirs in (("agent", world.carl.pk), ("team", world.support.pk)):
        on_theirs = client.get("/recordings/", {name: theirs})
        on_nothing = client.get("/recordings/", {name: 999999})
        assert listed(on_theirs) == listed(on_nothing) == []
        assert on_theirs.context["form"].errors == on_nothing.context["form"].errors
        assert name in on_theirs.context["form"].errors
    # Another team's number typed by hand only narrows what one may see: nothing.
    assert listed(client.get("/recordings/", {"extension": "9003"})) == []


def test_impossible_ranges_are_explained(world: PlaybackWorld) -> None:
    client = pages_as(world.admin)
    dates = client.get("/recordings/", {"started_from": "2026-03-05", "started_to": "2026-03-01"})
    assert "before its start" in dates.content.decode()
    lengths = client.get("/recordings/", {"longer_than": 60, "shorter_than": 10})
    assert "below the shortest" in lengths.content.decode()


# Sorting and pages. ---------------------------------------------------------------------------


def test_every_column_sorts_both_ways(world: PlaybackWorld) -> None:
    durations = {world.recording_a: 50, world.recording_b: 5, world.recording_on_marys_line: 500}
    for recording, seconds in durations.items():
        Recording.objects.filter(pk=recording.pk).update(duration_seconds=seconds)
    client = pages_as(world.admin)
    a, b, marys = world.recording_a.pk, world.recording_b.pk, world.recording_on_marys_line.pk
    assert listed(client.get("/recordings/")) == [marys, b, a]  # newest first
    assert listed(client.get("/recordings/", {"sort": "started"})) == [a, b, marys]
    assert listed(client.get("/recordings/", {"sort": "duration"})) == [b, a, marys]
    assert listed(client.get("/recordings/", {"sort": "-duration"})) == [marys, a, b]
    assert listed(client.get("/recordings/", {"sort": "agent"}))[-1] == a  # Carl, Carl, John
    assert listed(client.get("/recordings/", {"sort": "-extension"})) == [b, marys, a]
    Recording.objects.filter(pk=a).update(mos_estimate=3.1)
    Recording.objects.filter(pk=marys).update(mos_estimate=4.3)
    # A recording without an estimate comes last whichever way MOS is sorted.
    assert listed(client.get("/recordings/", {"sort": "mos"})) == [a, marys, b]
    assert listed(client.get("/recordings/", {"sort": "-mos"})) == [marys, a, b]
    page = client.get("/recordings/", {"sort": "duration"})
    links = re.findall(r'href="\?([^"]*sort=[^"]*)"', page.content.decode())
    assert "sort=-duration" in links  # the sorted column's link reverses it
    assert "sort=started" in links


def test_the_newest_first_order_can_be_read_from_the_started_at_index() -> None:
    # ORDER BY started_at DESC NULLS LAST would make PostgreSQL sort the whole archive.
    sql = str(ordered(Recording.objects.all(), DEFAULT_SORT).query)
    assert '"started_at" DESC, "recorder_recording"."id" DESC' in sql
    assert "NULLS LAST" not in sql


def test_pages_of_fifty_with_the_count_of_all_matches(world: PlaybackWorld) -> None:
    Recording.objects.bulk_create(
        Recording(
            call_id=f"bulk-{n}",
            started_at=STARTED - timedelta(minutes=n + 1),
            agent=world.john,
            extension="9001",
            status=Recording.Status.COMPLETE,
        )
        for n in range(120)
    )
    client = pages_as(world.supervisor_a)
    first = client.get("/recordings/", {"extension": "9001"})
    assert first.context["page"].paginator.count == 121
    assert "121 recordings match" in first.content.decode()
    assert len(listed(first)) == 50
    assert 'href="?extension=9001&amp;page=2"' in first.content.decode()
    last = client.get("/recordings/", {"extension": "9001", "page": 3})
    assert len(listed(last)) == 21
    assert "page 3 of 3" in last.content.decode()
    beyond = client.get("/recordings/", {"extension": "9001", "page": 99})
    assert beyond.context["page"].number == 3


def test_the_list_costs_the_same_few_queries_whatever_the_page_holds(
    world: PlaybackWorld,
) -> None:
    client = pages_as(world.supervisor_a)
    client.get("/recordings/")  # the session and permissions are warm
    with CaptureQueriesContext(connection) as few:
        assert len(listed(client.get("/recordings/"))) == 2
    Recording.objects.bulk_create(
        Recording(call_id=f"many-{n}", started_at=STARTED, agent=world.mary, extension="9002")
        for n in range(60)
    )
    with CaptureQueriesContext(connection) as many:
        response = client.get("/recordings/")
    assert len(listed(response)) == 50
    assert "Mary" in response.content.decode()
    # No query per row: the agents come joined to the page's queries (one count and one
    # page query for each of the scope's two parts on PostgreSQL, recorder/playback/listing.py;
    # the search's audit entry three: the chain's head locked, the entry, the head moved on;
    # the flags the search offers one).
    assert len(many.captured_queries) == len(few.captured_queries) <= 17


# Audit: a search is a look at metadata. --------------------------------------------------------


def test_a_list_search_is_audited_with_the_filters_used(world: PlaybackWorld) -> None:
    client = pages_as(world.supervisor_a)
    client.get(
        "/recordings/",
        {"extension": "9001", "far_party": "", "status": "complete", "page": "1", "sort": "mos"},
        REMOTE_ADDR="203.0.113.7",
    )
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.client_ip) == (
        world.supervisor_a,
        AuditEntry.Action.SEARCH,
        "203.0.113.7",
    )
    assert entry.detail == {"filters": {"extension": "9001", "status": "complete"}}


def test_a_refused_search_writes_nothing(world: PlaybackWorld) -> None:
    pages_as(world.supervisor_a).get("/recordings/", {"agent": world.carl.pk})
    assert not AuditEntry.objects.exists()


def test_opening_a_recordings_page_is_audited_and_a_hidden_one_is_not(
    world: PlaybackWorld,
) -> None:
    recording = world.recording_a
    assert pages_as(world.supervisor_b).get(f"/recordings/{recording.pk}/").status_code == 404
    assert not AuditEntry.objects.exists()
    page = pages_as(world.supervisor_a).get(
        f"/recordings/{recording.pk}/", REMOTE_ADDR="198.51.100.4"
    )
    assert page.status_code == 200
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.action, entry.recording_id, entry.client_ip) == (
        world.supervisor_a,
        AuditEntry.Action.VIEW,
        recording.pk,
        "198.51.100.4",
    )


# A recording's page. -----------------------------------------------------------------------


def test_the_page_plays_the_access_checked_audio_and_embeds_the_waveform(
    world: PlaybackWorld,
) -> None:
    recording = world.recording_a
    recording.peaks = peaks_for_recording(recording)
    recording.save()
    page = pages_as(world.supervisor_a).get(f"/recordings/{recording.pk}/")
    html = page.content.decode()
    assert f'src="/recordings/{recording.pk}/audio"' in html
    assert 'preload="metadata"' in html
    assert '<script id="peaks-data" type="application/json">' in html
    assert f'"frames": {recording.peaks["frames"]}' in html
    assert 'id="waveform"' in html and "left channel" in html
    assert "right channel" not in html  # the fixture's WAV is mono: one lane, the agent's
    assert "recorder/player.js" in html
    # Opening the page is a view, not a listen: only the audio itself writes play entries.
    assert list(AuditEntry.objects.values_list("action", flat=True)) == [AuditEntry.Action.VIEW]


def test_a_recording_without_peaks_says_so_and_still_plays(world: PlaybackWorld) -> None:
    html = pages_as(world.admin).get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert 'id="player"' in html
    assert "No waveform has been computed" in html
    assert 'id="peaks-data"' not in html


def test_dtmf_and_quality_figures_are_shown(world: PlaybackWorld) -> None:
    recording = world.recording_a
    recording.duration_seconds = 10.0
    recording.dtmf = [
        {"digit": "4", "at": 2.0, "duration": 0.12, "by": "agent"},
        {"digit": "#", "at": 5.0, "duration": 0.12, "by": "far"},
    ]
    recording.quality = {
        "agent_to_far": {
            "expected": 500,
            "received": 490,
            "lost": 10,
            "duplicated": 0,
            "out_of_order": 1,
            "jitter_ms": 3.24,
        },
        "far_to_agent": {
            "expected": 500,
            "received": 500,
            "lost": 0,
            "duplicated": 2,
            "out_of_order": 0,
            "jitter_ms": 1.0,
        },
    }
    recording.mos_estimate = 3.87
    recording.save()
    page = pages_as(world.supervisor_a).get(f"/recordings/{recording.pk}/")
    html = page.content.decode()
    assert [(mark["digit"], mark["place"]) for mark in page.context["dtmf"]] == [
        ("4", 20.0),
        ("#", 50.0),
    ]
    assert 'data-seek="2.000000"' in html and 'data-seek="5.000000"' in html
    assert "by the agent" in html and "by the far party" in html
    assert "10 (2.0 %)" in html  # lost, with the loss in per cent
    assert "3.2 ms" in html
    assert "<strong>3.9</strong>" in html
    assert "an estimate from the ITU-T G.107 E-model" in html


def test_only_the_segments_of_the_conversation_one_may_see_are_listed(
    world: PlaybackWorld,
) -> None:
    Recording.objects.filter(
        pk__in=[world.recording_a.pk, world.recording_b.pk, world.recording_on_marys_line.pk]
    ).update(conversation_id="transfer-1")
    a, b, marys = world.recording_a.pk, world.recording_b.pk, world.recording_on_marys_line.pk
    page_a = pages_as(world.supervisor_a).get(f"/recordings/{a}/")
    assert [segment.pk for segment in page_a.context["segments"]] == [marys]
    assert f'href="/recordings/{marys}/"' in page_a.content.decode()
    assert f'href="/recordings/{b}/"' not in page_a.content.decode()
    page_b = pages_as(world.supervisor_b).get(f"/recordings/{marys}/")
    assert [segment.pk for segment in page_b.context["segments"]] == [b]
    everything = pages_as(world.admin).get(f"/recordings/{a}/")
    assert [segment.pk for segment in everything.context["segments"]] == [b, marys]


def test_an_intact_file_is_verified(world: PlaybackWorld) -> None:
    page = pages_as(world.supervisor_a).get(f"/recordings/{world.recording_a.pk}/")
    assert page.context["integrity"].state == "verified"
    assert "Verified: the file&#x27;s SHA-256 matches" in page.content.decode()


def test_a_changed_file_is_shown_plainly_as_a_mismatch(world: PlaybackWorld) -> None:
    path = Path(world.recording_a.file.path)
    audio = bytearray(path.read_bytes())
    audio[100] ^= 0xFF  # one flipped byte of audio
    path.write_bytes(bytes(audio))
    page = pages_as(world.supervisor_a).get(f"/recordings/{world.recording_a.pk}/")
    html = page.content.decode()
    assert page.context["integrity"].state == "mismatch"
    assert "MISMATCH" in html and "integrity-mismatch" in html
    assert world.recording_a.sha256 in html
    assert page.context["integrity"].computed in html


def test_a_missing_file_is_shown_as_missing(world: PlaybackWorld) -> None:
    Path(world.recording_a.file.path).unlink()
    page = pages_as(world.supervisor_a).get(f"/recordings/{world.recording_a.pk}/")
    assert page.context["integrity"].state == "missing"
    assert "missing from storage" in page.content.decode()


def test_the_download_link_needs_its_own_permission(world: PlaybackWorld) -> None:
    url = f"/recordings/{world.recording_a.pk}/"
    assert 'id="download"' not in pages_as(world.supervisor_a).get(url).content.decode()
    world.supervisor_a.user_permissions.add(Permission.objects.get(codename="download_recording"))
    html = pages_as(world.supervisor_a).get(url).content.decode()
    assert f'href="/recordings/{world.recording_a.pk}/audio?download=1"' in html


def test_staff_who_may_view_them_get_links_to_the_agent_and_phone_in_the_admin(
    world: PlaybackWorld,
) -> None:
    phone = Phone.objects.create(device_name="SEP001122334455", protocol="sccp")
    Recording.objects.filter(pk=world.recording_a.pk).update(phone=phone)
    url = f"/recordings/{world.recording_a.pk}/"
    agent_link = f'href="/admin/extensions/agent/{world.john.pk}/change/"'
    phone_link = f'href="/admin/extensions/phone/{phone.pk}/change/"'
    plain = pages_as(world.supervisor_a).get(url).content.decode()
    assert "John" in plain and "SEP001122334455" in plain
    assert agent_link not in plain and phone_link not in plain
    world.supervisor_a.is_staff = True
    world.supervisor_a.save()
    world.supervisor_a.user_permissions.add(Permission.objects.get(codename="view_agent"))
    staff = pages_as(world.supervisor_a).get(url).content.decode()
    assert agent_link in staff and phone_link not in staff
    admin = pages_as(world.admin).get(url).content.decode()
    assert agent_link in admin and phone_link in admin


# Live calls. -----------------------------------------------------------------------------


def test_live_calls_lists_calls_in_progress_by_agent_in_scope(world: PlaybackWorld) -> None:
    johns = live_call(world.john, "9001")
    marys = live_call(world.mary, "9002", state=Call.State.HELD)
    carls = live_call(world.carl, "9003")
    live_call(world.john, "9001", ended_at=timezone.now())  # over
    live_call(world.john, "9001", state=Call.State.ENDED)  # over, end time not yet written
    page = pages_as(world.supervisor_a).get("/calls/live/")
    assert list(page.context["calls"]) == [johns, marys]
    html = page.content.decode()
    assert "<h2>John</h2>" in html and "<h2>Mary</h2>" in html and "on hold" in html
    assert "Carl" not in html and "9003" not in html
    assert "2 calls in progress" in html
    admin = pages_as(world.admin).get("/calls/live/")
    assert set(admin.context["calls"]) == {johns, marys, carls}


# The admin leads to the pages. ---------------------------------------------------------------


def test_the_admin_links_to_the_pages(world: PlaybackWorld) -> None:
    client = pages_as(world.admin)
    index = client.get("/admin/").content.decode()
    assert 'href="/recordings/"' in index and 'href="/calls/live/"' in index
    change = client.get(f"/admin/recorder/recording/{world.recording_a.pk}/change/")
    assert f'href="/recordings/{world.recording_a.pk}/"' in change.content.decode()


def test_a_supervisor_with_no_teams_sees_an_empty_list_and_no_choices() -> None:
    nobody = login("new-lead")
    page = pages_as(nobody).get("/recordings/")
    assert listed(page) == []
    assert "0 recordings match" in page.content.decode()
    assert list(page.context["form"].fields["agent"].queryset) == []
