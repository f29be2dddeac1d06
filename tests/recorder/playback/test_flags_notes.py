"""Flags and notes on recordings (issue 17, section 2): administrators define the flags,
supervisors put them on the recordings they may see and write notes at a time position;
flags filter the list and the API; every change is an audit entry. On PostgreSQL, through
the pages and the API."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission

from recorder.models import AuditEntry, Flag, Recording, RecordingFlag, RecordingNote
from tests.recorder.playback.support import PlaybackWorld, build_world
from tests.recorder.playback.test_access import api_as, pages_as


@pytest.fixture
def world(postgresql: None) -> PlaybackWorld:
    world = build_world()
    marking = Permission.objects.filter(codename__in=["add_recordingflag", "add_recordingnote"])
    for supervisor in (world.supervisor_a, world.supervisor_b):
        supervisor.user_permissions.add(*marking)
    Recording.objects.filter(pk=world.recording_a.pk).update(duration_seconds=30.0)
    world.recording_a.refresh_from_db()
    return world


@pytest.fixture
def flags(world: PlaybackWorld) -> dict[str, Flag]:
    made = {name: Flag.objects.create(name=name) for name in ("complaint", "training")}
    made["retired"] = Flag.objects.create(name="retired", active=False)
    return made


def entries(action: str) -> list[tuple]:
    return list(
        AuditEntry.objects.filter(action=action)
        .order_by("pk")
        .values_list("username", "recording_id", "detail")
    )


def test_a_supervisor_flags_and_unflags_a_recording_on_its_page_each_change_audited(
    world: PlaybackWorld, flags: dict[str, Flag]
) -> None:
    client = pages_as(world.supervisor_a)
    url = f"/recordings/{world.recording_a.pk}/flags"
    response = client.post(url, {"flag": flags["complaint"].pk})
    assert response.status_code == 302 and response["Location"].endswith("#flags")
    client.post(url, {"flag": flags["complaint"].pk})  # again: nothing new
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert 'id="flag-list"' in page and "complaint" in page and "sales-lead" in page
    client.post(url, {"flag": flags["complaint"].pk, "remove": "1"})

    assert not RecordingFlag.objects.exists()
    recording = world.recording_a.pk
    assert entries("flag") == [("sales-lead", recording, {"flag": "complaint"})]
    assert entries("unflag") == [("sales-lead", recording, {"flag": "complaint"})]


def test_flags_are_refused_without_the_permission_off_scope_and_once_retired(
    world: PlaybackWorld, flags: dict[str, Flag]
) -> None:
    own_url = f"/recordings/{world.recording_a.pk}/flags"
    # Another team's supervisor: the recording does not exist for them.
    response = pages_as(world.supervisor_b).post(own_url, {"flag": flags["training"].pk})
    assert response.status_code == 404
    # John may hear his own calls (with the setting) but may not flag them.
    world.agent.user_permissions.clear()
    assert pages_as(world.agent).post(own_url, {"flag": flags["training"].pk}).status_code == 404
    # A retired flag is said to be, and not put on.
    client = pages_as(world.supervisor_a)
    response = client.post(own_url, {"flag": flags["retired"].pk}, follow=True)
    assert "This flag is retired" in response.content.decode()
    response = api_as(world.supervisor_a).post(
        f"/api/recordings/{world.recording_a.pk}/flags/", {"flag": "retired"}, format="json"
    )
    assert response.status_code == 400
    assert not RecordingFlag.objects.exists() and not entries("flag")


def test_a_supervisor_without_the_permission_is_refused(
    world: PlaybackWorld, flags: dict[str, Flag], settings
) -> None:
    world.supervisor_a.user_permissions.clear()
    client = pages_as(world.supervisor_a)
    response = client.post(f"/recordings/{world.recording_a.pk}/flags",
                           {"flag": flags["training"].pk})  # fmt: skip
    assert response.status_code == 403
    response = api_as(world.supervisor_a).post(
        f"/api/recordings/{world.recording_a.pk}/notes/", {"position_seconds": 1, "text": "x"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 403
    assert "You may not write notes" in response.json()["detail"]
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert 'id="add-flag"' not in page and 'id="add-note"' not in page


def test_notes_at_a_position_are_added_listed_and_deleted_by_their_author(
    world: PlaybackWorld,
) -> None:
    client = pages_as(world.supervisor_a)
    url = f"/recordings/{world.recording_a.pk}/notes"
    client.post(url, {"position": "12.5", "text": "promised a call back"})
    client.post(url, {"position": "3", "text": "greets the customer <b>warmly</b>"})
    page = client.get(f"/recordings/{world.recording_a.pk}/").content.decode()
    assert page.index("greets the customer") < page.index("promised a call back")
    assert "&lt;b&gt;warmly&lt;/b&gt;" in page  # the text as written, never as markup
    assert 'data-seek="12.500000"' in page

    # Out of the recording, empty, too long: each said on the page, nothing stored.
    for position, text, said in (
        ("31", "after the end", "a time in the recording: 0 to 30.0 seconds"),
        ("-1", "before the start", "a time in the recording"),
        ("nan", "not a number", "a time in the recording"),
        ("abc", "not a number", "The position is a number of seconds."),
        ("4", "   ", "A note needs some text."),
        ("4", "x" * 2001, "at most 2000 characters"),
    ):
        response = client.post(url, {"position": position, "text": text}, follow=True)
        assert said in response.content.decode(), position
    assert RecordingNote.objects.count() == 2

    note = RecordingNote.objects.get(text="promised a call back")
    # Only its author deletes it; a colleague of the same team is refused.
    colleague = world.supervisor_b
    world.sales.supervisors.add(colleague)
    assert pages_as(colleague).post(url, {"delete": note.pk}).status_code == 403
    client.post(url, {"delete": note.pk})
    assert list(RecordingNote.objects.values_list("text", flat=True)) == [
        "greets the customer <b>warmly</b>"
    ]
    recording = world.recording_a.pk
    assert [entry[2]["position"] for entry in entries("note")] == [12.5, 3.0]
    assert entries("note_delete") == [
        ("sales-lead", recording,
         {"note": note.pk, "position": 12.5, "text": "promised a call back"}),
    ]  # fmt: skip


def test_the_api_flags_notes_and_edits_under_the_same_rules(
    world: PlaybackWorld, flags: dict[str, Flag]
) -> None:
    client = api_as(world.supervisor_a)
    base = f"/api/recordings/{world.recording_a.pk}"
    assert client.post(f"{base}/flags/", {"flag": "training"}, format="json").status_code == 201
    assert client.post(f"{base}/flags/", {"flag": "training"}, format="json").status_code == 200
    assert [item["flag"] for item in client.get(f"{base}/flags/").json()] == ["training"]
    assert client.post(f"{base}/flags/", {"flag": "nope"}, format="json").status_code == 400

    body = {"position_seconds": 7.25, "text": "hold music too loud"}
    created = client.post(f"{base}/notes/", body, format="json")
    assert created.status_code == 201
    note = created.json()
    assert (note["position_seconds"], note["author"]) == (7.25, "sales-lead")
    edited = client.patch(f"/api/notes/{note['id']}/", {"text": "hold music far too loud"},
                          format="json")  # fmt: skip
    assert edited.status_code == 200 and edited.json()["text"] == "hold music far too loud"
    bad = client.patch(f"/api/notes/{note['id']}/", {"position_seconds": 99}, format="json")
    assert bad.status_code == 400
    # Another team's supervisor sees neither the recording's notes nor the note.
    stranger = api_as(world.supervisor_b)
    assert stranger.get(f"{base}/notes/").status_code == 404
    assert stranger.get(f"/api/notes/{note['id']}/").status_code == 404
    assert stranger.delete(f"/api/notes/{note['id']}/").status_code == 404

    assert client.delete(f"{base}/flags/training/").status_code == 204
    assert client.delete(f"{base}/flags/training/").status_code == 404
    assert client.delete(f"/api/notes/{note['id']}/").status_code == 204
    changes = AuditEntry.objects.filter(recording=world.recording_a).exclude(action="view")
    actions = list(changes.order_by("pk").values_list("action", flat=True))
    assert actions == ["flag", "note", "note_edit", "unflag", "note_delete"]
    edit = AuditEntry.objects.get(action="note_edit")
    assert edit.detail["before"] == {"position": 7.25, "text": "hold music too loud"}


def test_flags_filter_the_list_and_the_api(world: PlaybackWorld, flags: dict[str, Flag]) -> None:
    RecordingFlag.objects.create(recording=world.recording_a, flag=flags["complaint"])
    RecordingFlag.objects.create(recording=world.recording_b, flag=flags["complaint"])
    RecordingFlag.objects.create(recording=world.recording_on_marys_line, flag=flags["training"])
    # Team A's supervisor: recording_b is team B's, so one complaint is theirs to see.
    response = api_as(world.supervisor_a).get("/api/recordings/", {"flag": "complaint"})
    assert [item["id"] for item in response.json()["results"]] == [world.recording_a.pk]
    page = pages_as(world.supervisor_a).get("/recordings/", {"flag": "complaint"})
    assert "1 recording matches" in page.content.decode()
    assert entries("search")[-1][2] == {"filters": {"flag": "complaint"}}
    page = pages_as(world.supervisor_a).get("/recordings/", {"flag": "training"})
    assert "1 recording matches" in page.content.decode()


def test_the_schema_lists_the_flag_and_note_endpoints(world: PlaybackWorld) -> None:
    paths = json.loads(api_as(world.admin).get("/api/schema/").content)["paths"]
    assert {path: set(paths[path]) for path in paths if "flag" in path or "note" in path} == {
        "/api/flags/": {"get"},
        "/api/flags/{id}/": {"get"},
        "/api/notes/{id}/": {"get", "patch", "delete"},
        "/api/recordings/{id}/flags/": {"get", "post"},
        "/api/recordings/{id}/flags/{flag_name}/": {"delete"},
        "/api/recordings/{id}/notes/": {"get", "post"},
    }
