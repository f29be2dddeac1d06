"""`make demo` loads the demo directory and prints logins that work."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from extensions.models import Binding, LineAppearance, Phone
from recorder.models import EvaluationForm, Question, Recording
from recorder.playback.evaluations import sheets_for


def load_demo() -> dict[str, str]:
    output = io.StringIO()
    call_command("load_demo", stdout=output)
    return dict(re.findall(r"^\s+(\w+)\s+password (\S+)", output.getvalue(), re.MULTILINE))


@pytest.mark.django_db(transaction=True)  # load_demo records through a thread of its own
def test_the_demo_holds_the_john_mary_carl_example_and_live_bindings() -> None:
    load_demo()
    mary = Phone.objects.get(device_name="SEP0011223344AA")
    assert [(line.line_number, line.extension.number) for line in mary.lines.all()] == [
        (1, "9002"),
        (2, "9001"),
        (3, "9003"),
    ]
    assert mary.holder.name == "Mary"
    assert LineAppearance.objects.filter(line_number=1, extension__number="9001").count() == 1
    assert Binding.objects.filter(ended_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)  # load_demo records through a thread of its own
@pytest.mark.parametrize("username", ["admin", "supervisor"])
def test_the_printed_logins_open_the_admin(username: str) -> None:
    logins = load_demo()
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": logins[username]},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    # Directory health is the whole directory: the administrator's, not a supervisor's.
    health = client.get("/admin/directory-health/").status_code
    assert health == (200 if username == "admin" else 403)


@pytest.mark.django_db(transaction=True)  # load_demo records through a thread of its own
def test_running_the_demo_again_issues_new_passwords_and_no_duplicates() -> None:
    first = load_demo()
    phones = Phone.objects.count()
    second = load_demo()
    assert first["admin"] != second["admin"]
    assert Phone.objects.count() == phones
    client = Client()
    assert not client.login(username="admin", password=first["admin"])
    assert client.login(username="admin", password=second["admin"])


@pytest.mark.django_db(transaction=True)
def test_the_demo_records_three_calls_with_audio_under_the_right_names() -> None:
    from recorder.models import Recording

    load_demo()
    found = {
        (recording.agent.name, recording.extension, recording.direction, recording.status)
        for recording in Recording.objects.select_related("agent")
    }
    assert found == {
        ("John", "9001", "outbound", "complete"),
        ("Mary", "9002", "inbound", "complete"),
        ("Carl", "9003", "internal", "complete"),
    }
    john = Recording.objects.get(extension="9001")
    assert [event["digit"] for event in john.dtmf] == ["4", "2"]
    assert john.file.size == john.size and john.file.open("rb").read(4) == b"RIFF"
    load_demo()
    assert Recording.objects.count() == 3


@pytest.mark.django_db(transaction=True)  # load_demo records through a thread of its own
def test_the_demo_supervisor_lands_on_the_three_demo_recordings_and_one_plays() -> None:
    from recorder.models import Recording

    output = io.StringIO()
    call_command("load_demo", stdout=output)
    printed = output.getvalue()
    password = re.search(r"^\s+supervisor\s+password (\S+)", printed, re.MULTILINE).group(1)
    assert "Open http://127.0.0.1:8000/ and log in as supervisor" in printed
    assert "(supervisor of Sales, Support)" in printed
    client = Client()
    landing = client.get("/", follow=True)
    assert landing.redirect_chain[-1][0] == "/login/?next=/recordings/"
    response = client.post(
        "/login/?next=/recordings/", {"username": "supervisor", "password": password}
    )
    assert response["Location"] == "/recordings/"
    listing = client.get("/recordings/")
    demo = set(Recording.objects.filter(call_id__startswith="demo-").values_list("pk", flat=True))
    assert len(demo) == 3
    assert {recording.pk for recording in listing.context["page"]} == demo
    john = Recording.objects.get(extension="9001")
    page = client.get(f"/recordings/{john.pk}/")
    assert page.status_code == 200
    assert page.context["integrity"].state == "verified"
    assert john.peaks is not None and len(john.peaks["channels"]) == 2
    assert 'id="download"' in page.content.decode()
    audio = client.get(f"/recordings/{john.pk}/audio", HTTP_RANGE="bytes=0-")
    assert audio.status_code in (200, 206)
    assert audio["Content-Type"] == "audio/wav"
    body = b"".join(audio.streaming_content)
    assert body[:4] == b"RIFF" and len(body) == john.size


@pytest.mark.django_db(transaction=True)  # load_demo records through a thread of its own
def test_the_demo_supervisor_may_evaluate_the_demo_calls_with_the_demo_form() -> None:
    load_demo()
    load_demo()  # again: still one form
    form = EvaluationForm.objects.get()
    assert Question.objects.filter(section__form=form, fail_all=True).count() == 1
    supervisor = User.objects.get(username="supervisor")
    assert supervisor.has_perm("recorder.add_evaluation")
    recording = Recording.objects.filter(call_id__startswith="demo-").first()
    assert [sheet.form for sheet in sheets_for(supervisor, recording)] == [form]
