"""Directory health a page at a time: a REGISTER flood's 20,000 numbers seen on the wire
give a page of a hundred rows a section, not a 3 MB page."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from extensions.health import HEALTH_PAGE_ROWS
from extensions.models import SeenExtension

SEEN = 20_000


@pytest.fixture
def flooded() -> None:
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    SeenExtension.objects.bulk_create(
        SeenExtension(
            number=str(5_000_000 + index),
            last_ip="192.0.2.10",
            last_source="sip-register",
            first_seen=at,
            last_seen=at,
        )
        for index in range(SEEN)
    )


def unconfigured_rows(page: str) -> list[str]:
    section = re.search(r'<div class="module" id="unconfigured">(.*?)</table>', page, re.S)
    assert section, "no unconfigured section"
    return re.findall(r"<td>(\d{7})</td>", section.group(1))


@pytest.mark.django_db
def test_directory_health_with_20000_seen_numbers_shows_one_page_of_them(
    admin_client: Client, flooded: None
) -> None:
    first = admin_client.get(reverse("admin:directory_health"))
    second = admin_client.get(reverse("admin:directory_health"), {"page": "2"})

    page = first.content.decode()
    assert first.status_code == 200 and len(first.content) < 100_000
    assert f"Seen on the wire but not configured ({SEEN})" in page
    assert len(unconfigured_rows(page)) == HEALTH_PAGE_ROWS
    assert f"Page 1 of {SEEN // HEALTH_PAGE_ROWS}" in page and "?page=2" in page
    assert set(unconfigured_rows(second.content.decode())).isdisjoint(unconfigured_rows(page))


@pytest.mark.django_db
def test_a_page_past_the_end_or_not_a_number_shows_a_page_not_an_error(
    admin_client: Client, flooded: None
) -> None:
    past = admin_client.get(reverse("admin:directory_health"), {"page": "99999"})
    junk = admin_client.get(reverse("admin:directory_health"), {"page": "x\x00"})

    assert f"Page {SEEN // HEALTH_PAGE_ROWS} of" in past.content.decode()
    assert junk.status_code in (200, 400) and len(junk.content) < 100_000
