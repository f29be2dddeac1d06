"""Every response carries a Content-Security-Policy that runs script only from QMS's own
static files (issue 11, finding L5). tests/recorder/playback/test_browser.py drives the pages in
Chromium under this policy."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.recorder.playback.support import PlaybackWorld, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> PlaybackWorld:
    return build_world()


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in header.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


def test_every_kind_of_response_carries_a_policy_without_inline_script(
    world: PlaybackWorld,
) -> None:
    admin = Client()
    admin.force_login(world.admin)
    pk = world.recording_a.pk
    responses = {
        "login page": Client().get("/login/"),
        "recordings": admin.get("/recordings/"),
        "recording page": admin.get(f"/recordings/{pk}/"),
        "audio": admin.get(f"/recordings/{pk}/audio"),
        "live calls": admin.get("/calls/live/"),
        "admin": admin.get("/admin/"),
        "API": admin.get("/api/recordings/"),
        "API docs": admin.get("/api/docs/"),
        "refused": Client().get("/api/recordings/"),
    }
    for name, response in responses.items():
        assert response.status_code < 500, name
        policy = directives(response["Content-Security-Policy"])
        assert policy["script-src"] == ["'self'"], name
        assert policy["default-src"] == ["'self'"], name
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
