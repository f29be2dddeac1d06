"""The audit trail (issue 6, section 3; issue 11, section 5): every listen, seek, download,
API fetch, search and look at a call's metadata is written, and nobody can change or delete
an entry: not the admin, not the API, not the ORM, not raw SQL on PostgreSQL. The database
side of append-only (SQLite triggers, PostgreSQL roles) is in test_audit_tamper.py."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from recorder.models import AppendOnlyError, AuditEntry, Call, Recording
from recorder.nodes.models import ParkedEvent
from tests.recorder.playback.support import PlaybackWorld, build_world, login

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


def pages_as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def fetch(client: Client, url: str, **headers: str):
    response = client.get(url, **headers)
    if response.streaming:
        b"".join(response.streaming_content)  # Read to the end, as a player does.
    return response


def only_entry() -> AuditEntry:
    return AuditEntry.objects.get()


# Each action is written. --------------------------------------------------------------------


def test_playing_from_the_start_is_a_play(world: PlaybackWorld) -> None:
    fetch(pages_as(world.supervisor_a), f"/recordings/{world.recording_a.pk}/audio")
    entry = only_entry()
    assert (entry.action, entry.user, entry.username) == ("play", world.supervisor_a, "sales-lead")
    assert (entry.recording_id, entry.client_ip, entry.detail) == (
        world.recording_a.pk,
        "127.0.0.1",
        {},
    )


def test_a_range_from_byte_zero_is_still_a_play(world: PlaybackWorld) -> None:
    url = f"/recordings/{world.recording_a.pk}/audio"
    fetch(pages_as(world.supervisor_a), url, HTTP_RANGE="bytes=0-")
    assert (only_entry().action, only_entry().detail) == ("play", {"range": "bytes=0-"})


def test_a_range_past_the_start_is_a_seek(world: PlaybackWorld) -> None:
    url = f"/recordings/{world.recording_a.pk}/audio"
    fetch(pages_as(world.supervisor_a), url, HTTP_RANGE="bytes=1000-")
    assert (only_entry().action, only_entry().detail) == ("seek", {"range": "bytes=1000-"})


def test_a_download_is_a_download(world: PlaybackWorld) -> None:
    downloader = login("archivist", "download_recording")
    world.sales.supervisors.add(downloader)
    fetch(pages_as(downloader), f"/recordings/{world.recording_a.pk}/audio?download=1")
    assert (only_entry().action, only_entry().user) == ("download", downloader)


def test_an_api_audio_fetch_is_an_api_fetch(world: PlaybackWorld) -> None:
    fetch(api_as(world.admin), f"/api/recordings/{world.recording_a.pk}/audio/")
    assert (only_entry().action, only_entry().recording_id) == ("api_audio", world.recording_a.pk)


@override_settings(QMS_AUDIO_ACCEL_REDIRECT="/protected-recordings/")
def test_a_seek_handed_to_nginx_is_written_too(world: PlaybackWorld) -> None:
    url = f"/recordings/{world.recording_a.pk}/audio"
    fetch(pages_as(world.supervisor_a), url, HTTP_RANGE="bytes=-100")
    assert only_entry().action == "seek"


def test_an_api_search_is_written_with_its_filters(world: PlaybackWorld) -> None:
    api = api_as(world.supervisor_a)
    api.get("/api/recordings/", {"extension": "9001", "status": "complete", "page": "1"})
    entry = only_entry()
    assert entry.action == "search" and entry.recording_id is None
    assert entry.detail == {"filters": {"extension": "9001", "status": "complete"}}


def test_the_admin_recording_list_is_written_as_a_search(world: PlaybackWorld) -> None:
    pages_as(world.admin).get("/admin/recorder/recording/", {"q": "6175551212"})
    assert (only_entry().action, only_entry().detail) == (
        "search",
        {"filters": {"q": "6175551212"}},
    )


@override_settings(QMS_CLIENT_IP_HEADER="X-Real-IP")
def test_behind_nginx_the_client_ip_comes_from_the_configured_header(
    world: PlaybackWorld,
) -> None:
    url = f"/recordings/{world.recording_a.pk}/audio"
    fetch(pages_as(world.supervisor_a), url, HTTP_X_REAL_IP="203.0.113.7")
    assert only_entry().client_ip == "203.0.113.7"


def test_without_the_setting_a_forged_header_is_ignored(world: PlaybackWorld) -> None:
    url = f"/recordings/{world.recording_a.pk}/audio"
    fetch(pages_as(world.supervisor_a), url, HTTP_X_REAL_IP="203.0.113.7")
    assert only_entry().client_ip == "127.0.0.1"


# Every path that shows a call's metadata or content writes one entry (audit finding M3). ---


@pytest.fixture
def calls(world: PlaybackWorld) -> dict[str, Call]:
    """recording_a's signalling, and a call of John's in progress."""
    signalled = Call.objects.create(
        protocol="sip",
        call_id="call-a",
        started_at=world.recording_a.started_at,
        ended_at=world.recording_a.started_at,
        state=Call.State.ENDED,
        caller="6175551212",
        callee="9001",
        extension="9001",
        agent=world.john,
    )
    Recording.objects.filter(pk=world.recording_a.pk).update(
        signalling=signalled, peaks={"version": 1, "frames": 1000, "channels": []}
    )
    live = Call.objects.create(
        protocol="sip",
        call_id="live-9001",
        started_at=timezone.now(),
        state=Call.State.CONNECTED,
        caller="9001",
        callee="6175551299",
        extension="9001",
        agent=world.john,
    )
    return {"signalled": signalled, "live": live}


def entries_written() -> list[tuple[str, int | None, dict]]:
    return list(AuditEntry.objects.values_list("action", "recording_id", "detail"))


# (path, who asks, the entry it must write); {rec} is recording_a, {call} its signalling.
LOOKS = [
    ("/api/recordings/{rec}/", "supervisor_a", ("view", "rec", {})),
    ("/api/recordings/{rec}/waveform/", "supervisor_a", ("view", "rec", {"part": "waveform"})),
    ("/admin/recorder/recording/{rec}/change/", "admin", ("view", "rec", {})),
    ("/admin/recorder/recording/{rec}/history/", "admin", ("view", "rec", {})),
    (
        "/admin/recorder/call/?q=6175551212",
        "admin",
        ("search", None, {"filters": {"q": "6175551212"}, "listing": "calls"}),
    ),
    ("/admin/recorder/call/{call}/change/", "admin", ("view", "rec", {"call": "call"})),
    ("/admin/recorder/call/{call}/history/", "admin", ("view", "rec", {"call": "call"})),
    (
        "/calls/live/",
        "supervisor_a",
        ("search", None, {"filters": {}, "listing": "live calls"}),
    ),
]


@pytest.mark.parametrize(("path", "role", "expected"), LOOKS, ids=[look[0] for look in LOOKS])
def test_each_look_at_a_calls_metadata_writes_one_entry(
    world: PlaybackWorld, calls: dict[str, Call], path: str, role: str, expected: tuple
) -> None:
    rec, call = world.recording_a.pk, calls["signalled"].pk
    response = pages_as(getattr(world, role)).get(path.format(rec=rec, call=call))
    assert response.status_code == 200
    action, recording, detail = expected
    detail = {name: call if value == "call" else value for name, value in detail.items()}
    assert entries_written() == [(action, rec if recording == "rec" else None, detail)]


def test_a_call_without_a_recording_is_audited_by_its_id(
    world: PlaybackWorld, calls: dict[str, Call]
) -> None:
    live = calls["live"]
    assert pages_as(world.admin).get(f"/admin/recorder/call/{live.pk}/change/").status_code == 200
    assert entries_written() == [("view", None, {"call": live.pk})]


def test_only_a_look_that_shows_something_is_written(
    world: PlaybackWorld, calls: dict[str, Call]
) -> None:
    rec = world.recording_a.pk
    assert api_as(world.supervisor_b).get(f"/api/recordings/{rec}/").status_code == 404
    no_peaks_yet = f"/api/recordings/{world.recording_b.pk}/waveform/"
    assert api_as(world.admin).get(no_peaks_yet).status_code == 404
    missing = "/admin/recorder/recording/918273/change/"
    assert pages_as(world.admin).get(missing).status_code == 302
    assert entries_written() == []
    assert api_as(world.supervisor_a).get(f"/api/recordings/{rec}/").status_code == 200
    assert entries_written() == [("view", rec, {})]


def test_a_head_of_the_audio_is_a_view_not_a_fetch(world: PlaybackWorld) -> None:
    # Nothing of the audio is sent, but the headers give the file's name, size and hash.
    for url in ("/api/recordings/{}/audio/", "/api/recordings/{}/audio"):
        response = api_as(world.admin).head(url.format(world.recording_a.pk))
        assert response.status_code == 200 and response["ETag"]
    assert entries_written() == [("view", world.recording_a.pk, {"method": "HEAD"})] * 2


def test_refused_fetches_write_nothing(world: PlaybackWorld) -> None:
    url = f"/recordings/{world.recording_a.pk}/audio"
    assert fetch(pages_as(world.supervisor_b), url).status_code == 404
    assert fetch(pages_as(world.supervisor_a), url + "?download=1").status_code == 403
    assert fetch(pages_as(world.supervisor_a), url, HTTP_RANGE="bytes=9999-").status_code == 416
    assert not AuditEntry.objects.exists()


# Nobody changes or deletes an entry. --------------------------------------------------------


@pytest.fixture
def entry(world: PlaybackWorld) -> AuditEntry:
    fetch(pages_as(world.supervisor_a), f"/recordings/{world.recording_a.pk}/audio")
    return only_entry()


def test_the_model_refuses_to_save_a_change(entry: AuditEntry) -> None:
    entry.action = AuditEntry.Action.DOWNLOAD
    with pytest.raises(AppendOnlyError):
        entry.save()
    assert only_entry().action == "play"


def test_the_model_refuses_to_delete(entry: AuditEntry) -> None:
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.update(username="nobody")
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.bulk_update([entry], ["username"])
    assert AuditEntry.objects.filter(username="sales-lead").count() == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE recorder_auditentry SET username = 'nobody'",
        "UPDATE recorder_auditentry SET at = at - interval '1 day' WHERE id = %s",
        "DELETE FROM recorder_auditentry WHERE id = %s",
        "DELETE FROM recorder_auditentry",
    ],
)
def test_postgresql_refuses_update_and_delete_in_raw_sql(
    postgresql, world: PlaybackWorld, statement: str
) -> None:
    fetch(pages_as(world.supervisor_a), f"/recordings/{world.recording_a.pk}/audio")
    entry = only_entry()
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [entry.pk] if "%s" in statement else None)
    again = only_entry()
    assert (again.username, again.at) == ("sales-lead", entry.at)


def test_a_user_with_audit_entries_cannot_be_deleted(
    world: PlaybackWorld, entry: AuditEntry
) -> None:
    with pytest.raises(ProtectedError):
        world.supervisor_a.delete()


def test_deleting_a_recording_keeps_its_entries(world: PlaybackWorld, entry: AuditEntry) -> None:
    pk = world.recording_a.pk
    Recording.objects.filter(pk=pk).delete()
    assert only_entry().recording_id == pk


# The admin: search and export, never add, change or delete. --------------------------------


def test_a_superuser_can_search_the_trail_in_the_admin(
    world: PlaybackWorld, entry: AuditEntry
) -> None:
    admin = pages_as(world.admin)
    found = admin.get("/admin/recorder/auditentry/", {"q": "sales-lead"})
    assert found.status_code == 200
    assert [row.pk for row in found.context["cl"].result_list] == [entry.pk]
    for query in ("127.0.0.1", "call-a", "9001"):
        found = admin.get("/admin/recorder/auditentry/", {"q": query})
        assert [row.pk for row in found.context["cl"].result_list] == [entry.pk], query
    missed = admin.get("/admin/recorder/auditentry/", {"q": "support-lead"})
    assert list(missed.context["cl"].result_list) == []
    by_action = admin.get("/admin/recorder/auditentry/", {"action__exact": "seek"})
    assert list(by_action.context["cl"].result_list) == []


def test_not_even_a_superuser_can_add_change_or_delete_in_the_admin(
    world: PlaybackWorld, entry: AuditEntry
) -> None:
    admin = pages_as(world.admin)
    base = "/admin/recorder/auditentry/"
    assert admin.get(base + "add/").status_code == 403
    assert admin.post(base + "add/", {"username": "x", "action": "play"}).status_code == 403
    change = admin.post(f"{base}{entry.pk}/change/", {"username": "x", "action": "seek"})
    assert change.status_code == 403
    assert admin.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    actions = admin.get(base).context["action_form"].fields["action"].choices
    assert [name for name, _ in actions if name] == ["export_csv"]
    assert only_entry().username == "sales-lead"


def test_the_admin_exports_the_selected_entries_as_csv(
    world: PlaybackWorld, entry: AuditEntry
) -> None:
    forger = login("=HYPERLINK(1)")
    AuditEntry.objects.create(user=forger, username=forger.username, action="search")
    response = pages_as(world.admin).post(
        "/admin/recorder/auditentry/",
        {
            "action": "export_csv",
            "index": "0",
            "_selected_action": list(AuditEntry.objects.values_list("pk", flat=True)),
        },
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["at", "user", "action", "recording", "client_ip", "detail"]
    assert [row[1:5] for row in rows[1:]] == [
        ["sales-lead", "play", str(world.recording_a.pk), "127.0.0.1"],
        ["'=HYPERLINK(1)", "search", "", ""],
    ]


def test_a_supervisor_without_the_view_permission_has_no_audit_page(
    world: PlaybackWorld,
) -> None:
    world.supervisor_a.is_staff = True
    world.supervisor_a.save()
    assert pages_as(world.supervisor_a).get("/admin/recorder/auditentry/").status_code == 403


# The API: admins list it, nobody writes it. ------------------------------------------------


def test_admins_list_the_trail_through_the_api(world: PlaybackWorld, entry: AuditEntry) -> None:
    api = api_as(world.admin)
    api.get("/api/recordings/", {"agent": "John"})
    listed = api.get("/api/audit/").json()
    assert listed["count"] == 2 and listed["next"] is None
    newest, oldest = listed["results"]
    assert newest["action"] == "search" and newest["detail"] == {"filters": {"agent": "John"}}
    assert oldest == {
        "id": entry.pk,
        "at": oldest["at"],
        "user": "sales-lead",
        "action": "play",
        "recording": world.recording_a.pk,
        "client_ip": "127.0.0.1",
        "detail": {},
    }
    assert api.get("/api/audit/", {"action": "play"}).json()["count"] == 1
    assert api.get("/api/audit/", {"user": "sales-lead"}).json()["count"] == 1


def test_the_api_trail_is_paginated(world: PlaybackWorld) -> None:
    for _ in range(101):
        AuditEntry.objects.create(user=world.admin, username="boss", action="search")
    page = api_as(world.admin).get("/api/audit/").json()
    assert (page["count"], len(page["results"])) == (101, 100)
    assert page["next"].endswith("/api/audit/?page=2")


def test_the_api_trail_is_for_admins_only(world: PlaybackWorld, entry: AuditEntry) -> None:
    assert api_as(world.supervisor_a).get("/api/audit/").status_code == 403
    assert APIClient().get("/api/audit/").status_code == 403
    reader = login("compliance")
    reader.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    assert api_as(reader).get("/api/audit/").json()["count"] == 1


def test_nobody_writes_the_trail_through_the_api(world: PlaybackWorld, entry: AuditEntry) -> None:
    api = api_as(world.admin)
    payload = {"user": "boss", "action": "play"}
    assert api.post("/api/audit/", payload, format="json").status_code == 405
    assert api.put(f"/api/audit/{entry.pk}/", payload, format="json").status_code == 405
    assert api.patch(f"/api/audit/{entry.pk}/", payload, format="json").status_code == 405
    assert api.delete(f"/api/audit/{entry.pk}/").status_code == 405
    assert only_entry().username == "sales-lead"


def test_the_tapi_call_pages_are_audited_like_the_call_pages(world: PlaybackWorld) -> None:
    from integrations.shoretel.models import TapiBridge, TapiCall

    bridge = TapiBridge.objects.create(name="hq", url="http://127.0.0.1:9/", token="t")
    now = timezone.now()
    tapi_call = TapiCall.objects.create(
        bridge=bridge, call_id="st-1", extension="9001", local_side="callee", caller="555",
        callee="9001", state="connected", started_at=now, last_event_at=now,
    )  # fmt: skip
    admin = pages_as(world.admin)
    assert admin.get("/admin/shoretel/tapicall/?q=555").status_code == 200
    assert admin.get(f"/admin/shoretel/tapicall/{tapi_call.pk}/change/").status_code == 200
    assert sorted(entries_written(), key=lambda entry: entry[0]) == [
        ("search", None, {"filters": {"q": "555"}, "listing": "tapi calls"}),
        ("view", None, {"tapi_call": tapi_call.pk}),
    ]


def parked_calls(count: int) -> list[ParkedEvent]:
    return [
        ParkedEvent.objects.create(
            kind=ParkedEvent.Kind.CALL,
            subject=f"call-{n}@10.0.0.41",
            reason="refused",
            event={"caller": "+16175551212", "callee": "9001"},
            node="site-a",
        )
        for n in range(count)
    ]


def test_clearing_parked_events_is_audited_one_or_several(world: PlaybackWorld) -> None:
    first, second, third = parked_calls(3)
    client = pages_as(world.admin)
    # One, from its page; then two by the list's action, confirmed.
    page = f"/admin/capture/parkedevent/{first.pk}/delete/"
    assert client.post(page, {"post": "yes"}).status_code == 302
    chosen = {"action": "delete_selected", "_selected_action": [second.pk, third.pk]}
    assert client.post("/admin/capture/parkedevent/", chosen | {"post": "yes"}).status_code == 302

    assert not ParkedEvent.objects.exists()
    cleared = AuditEntry.objects.filter(action=AuditEntry.Action.CLEAR).order_by("pk")
    assert [(entry.username, entry.detail) for entry in cleared] == [
        (world.admin.username, {"cleared": "parked events", "count": 1, "ids": [first.pk]}),
        (
            world.admin.username,
            {"cleared": "parked events", "count": 2, "ids": [second.pk, third.pk]},
        ),
    ]


def test_a_look_at_parked_events_is_audited_as_a_search_and_a_view(world: PlaybackWorld) -> None:
    """A parked event holds a call's or a binding's fields as the wire gave them."""
    parked = ParkedEvent.objects.create(
        kind=ParkedEvent.Kind.CALL, subject="a1b2@10.0.0.41", reason="a value no column holds",
        event={"caller": "+16175551212", "callee": "9001"}, node="site-a",
    )  # fmt: skip
    client = pages_as(world.admin)
    assert client.get("/admin/capture/parkedevent/?q=a1b2").status_code == 200
    assert client.get(f"/admin/capture/parkedevent/{parked.pk}/change/").status_code == 200
    assert client.get(f"/admin/capture/parkedevent/{parked.pk}/history/").status_code == 200
    in_order = AuditEntry.objects.order_by("pk").values_list("action", "recording_id", "detail")
    assert list(in_order) == [
        ("search", None, {"filters": {"q": "a1b2"}, "listing": "parked events"}),
        ("view", None, {"parked_event": parked.pk}),
        ("view", None, {"parked_event": parked.pk}),
    ]
