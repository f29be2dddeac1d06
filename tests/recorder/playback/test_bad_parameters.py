"""Query parameters and URLs that look right but are not answer 400 or 404, never 500
(issue 11, finding L1): on PostgreSQL and on SQLite alike."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.recorder.playback.support import PlaybackWorld, build_world

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999999"
# Values each of which once reached a query: NUL (PostgreSQL refuses it in any string), an
# id past 64 bits (OverflowError on SQLite), impossible dates, the last day and year.
HOSTILE = ["\x00", HUGE, "-" + HUGE, "2024-02-30T00:00:00", "9999-12-31", "9999", "1e400"]
PARAMETERS = {
    "/api/recordings/": [
        "extension",
        "agent",
        "team",
        "far_party",
        "since",
        "until",
        "longer_than",
        "shorter_than",
        "direction",
        "status",
        "mos_below",
        "sort",
        "page",
        "page_size",
    ],
    "/api/audit/": ["user", "action", "recording", "since", "until", "page"],
    "/api/agents/": ["team"],
    "/api/teams/": ["page"],
    "/api/extensions/": ["number", "agent"],
    "/api/phones/": ["protocol", "ip"],
    "/api/bindings/": ["extension", "ip", "active"],
    "/api/line-appearances/": ["phone", "extension"],
    "/recordings/": [
        "agent",
        "team",
        "extension",
        "far_party",
        "started_from",
        "started_to",
        "longer_than",
        "shorter_than",
        "direction",
        "status",
        "mos_below",
        "sort",
        "page",
    ],
    # The admin's date drill-down: Django's own ChangeList overflows on these.
    "/admin/extensions/binding/": ["first_seen__year", "extension__agent__id__exact"],
    "/admin/recorder/recording/": ["started_at__year"],
    "/admin/recorder/auditentry/": ["at__year"],
}
DETAILS = [
    "/api/recordings/{}/",
    "/api/recordings/{}/audio/",
    "/api/recordings/{}/waveform/",
    "/api/agents/{}/",
    "/api/bindings/{}/",
    "/api/audit/{}/",
    "/recordings/{}/",
    "/recordings/{}/audio",
]


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


@pytest.fixture
def admin(world: PlaybackWorld) -> Client:
    # A 500 is answered as a response here, as a browser would see it, not raised.
    client = Client(raise_request_exception=False)
    client.force_login(world.admin)
    return client


@pytest.mark.parametrize("suffix", ["audio.json", "audio.api", "waveform.json", "waveform.api"])
def test_a_format_suffix_on_the_audio_or_waveform_is_not_a_url(
    world: PlaybackWorld, admin: Client, suffix: str
) -> None:
    response = admin.get(f"/api/recordings/{world.recording_a.pk}/{suffix}")
    assert response.status_code == 404
    # The list and the details keep their .json form.
    assert admin.get(f"/api/recordings/{world.recording_a.pk}.json").json()["extension"] == "9001"


@pytest.mark.parametrize(
    ("url", "name", "value"),
    [
        ("/api/recordings/", "since", "2024-02-30T00:00:00"),
        ("/api/recordings/", "since", "2024-01-01T25:00:00"),
        ("/api/recordings/", "until", "9999-12-31T23:59:59-12:00"),
        ("/api/audit/", "since", "2024-13-01T00:00:00"),
        ("/api/audit/", "recording", HUGE),
        ("/api/recordings/", "extension", "90\x0001"),
        ("/api/agents/", "team", "Sales\x00"),
    ],
)
def test_an_impossible_value_is_refused_with_the_parameter_named(
    admin: Client, url: str, name: str, value: str
) -> None:
    response = admin.get(url, {name: value})
    assert response.status_code == 400
    assert list(response.json()) == [name]
    assert response.json()[name][0].endswith(".")


def test_the_last_day_of_year_9999_is_refused_on_the_page_with_the_field_named(
    admin: Client,
) -> None:
    response = admin.get("/recordings/", {"started_to": "9999-12-31"})
    # The page shows the form again, with the sentence next to the field.
    assert response.status_code == 200
    assert "less than or equal to 9999-12-30" in response.context["form"].errors["started_to"][0]


def test_no_parameter_of_the_api_pages_or_admin_answers_500(
    world: PlaybackWorld, admin: Client
) -> None:
    failed = []
    for url, names in PARAMETERS.items():
        for name in names:
            for value in HOSTILE:
                status = admin.get(url, {name: value}).status_code
                if status >= 500:
                    failed.append((url, name, value, status))
    for url in DETAILS:
        for value in (HUGE, "0"):
            status = admin.get(url.format(value)).status_code
            if status >= 500:
                failed.append((url, value, status))
    assert failed == []
