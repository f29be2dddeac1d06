"""ScopedListing counts and pages a supervisor's recordings part by part, from the indexes,
and must agree row for row with the plain query it stands in for."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.core.paginator import Paginator
from django.db.models import F

from recorder.models import Recording
from recorder.playback.access import recordings_visible_to
from recorder.playback.listing import ScopedListing
from tests.recorder.playback.support import STARTED, PlaybackWorld, build_world


@pytest.fixture
def world(postgresql: None) -> PlaybackWorld:
    """Forty more recordings for team A's supervisor to page through: John's, Mary's, and
    Carl's on Mary's line (the second part of the scope), with ties and missing MOS."""
    world = build_world()
    rng = random.Random(6)
    people = [
        (world.john, "9001"),
        (world.mary, "9002"),
        (world.carl, "9002"),
        (world.carl, "9003"),
    ]
    Recording.objects.bulk_create(
        Recording(
            call_id=f"extra-{n}",
            started_at=STARTED + timedelta(minutes=rng.choice([5, 10, 15, 20])),
            duration_seconds=rng.choice([10.0, 60.0, 60.0, 300.0]),
            direction=rng.choice(["inbound", "outbound"]),
            extension=extension,
            agent=agent,
            remote_party=f"61755{rng.randrange(100):05d}",
            status=Recording.Status.COMPLETE,
            mos_estimate=rng.choice([None, 2.5, 3.9, 4.1]),
        )
        for n, (agent, extension) in enumerate(rng.choice(people) for _ in range(40))
    )
    return world


ORDERINGS = [
    ["-started_at", "-pk"],
    ["started_at", "pk"],
    ["-duration_seconds", "-pk"],
    ["agent__name", "pk"],
    ["remote_party", "pk"],
    [F("mos_estimate").asc(nulls_last=True), "pk"],
    [F("mos_estimate").desc(nulls_last=True), "-pk"],
    ["-mos_estimate", "-pk"],  # PostgreSQL's own default: a descending NULL comes first
]


@pytest.mark.parametrize("ordering", ORDERINGS, ids=str)
@pytest.mark.parametrize("page_size", [1, 7, 100])
def test_every_page_matches_the_plain_query(
    world: PlaybackWorld, ordering: list, page_size: int
) -> None:
    plain = recordings_visible_to(world.supervisor_a).order_by(*ordering)
    expected = list(plain.values_list("pk", flat=True))
    assert len(expected) > 20  # both parts of the scope are in it

    paginator = Paginator(ScopedListing(world.supervisor_a, plain), page_size)
    paged = [row.pk for n in paginator.page_range for row in paginator.page(n)]

    assert paginator.count == len(expected)
    assert paged == expected


@pytest.mark.parametrize(
    "narrowing",
    [
        {"direction": "inbound"},
        {"duration_seconds__gte": 60, "mos_estimate__lt": 4},
        {"remote_party__contains": "0001"},
        {"agent__teams__name": "Sales"},
        {"extension": "9002"},
        {"agent__name": "Nobody"},
    ],
    ids=str,
)
def test_filtered_searches_count_and_page_like_the_plain_query(
    world: PlaybackWorld, narrowing: dict
) -> None:
    plain = (
        recordings_visible_to(world.supervisor_a).filter(**narrowing).order_by("-started_at", "-pk")
    )
    listing = ScopedListing(world.supervisor_a, plain)
    assert listing.count() == plain.count()
    assert [row.pk for row in listing[0:5]] == list(plain.values_list("pk", flat=True)[:5])


def test_it_never_shows_more_than_the_queryset_it_is_given(world: PlaybackWorld) -> None:
    # Supervisor B's scoped queryset, listed with supervisor A's parts: only B's rows that
    # are A's too (Carl's calls on Mary's line) can come out.
    theirs = recordings_visible_to(world.supervisor_b).order_by("-started_at", "-pk")
    listing = ScopedListing(world.supervisor_a, theirs)
    shown = {row.pk for row in listing[0:1000]}
    assert shown == set(
        theirs.filter(pk__in=recordings_visible_to(world.supervisor_a)).values_list("pk", flat=True)
    )
    assert listing.count() == len(shown)


def test_for_someone_who_sees_everything_it_is_the_plain_query(world: PlaybackWorld) -> None:
    everything = recordings_visible_to(world.admin).order_by("-started_at", "-pk")
    listing = ScopedListing(world.admin, everything)
    assert listing.parts is None
    assert [row.pk for row in listing[0:10]] == list(everything.values_list("pk", flat=True)[:10])


def test_an_empty_search_is_an_empty_page(world: PlaybackWorld) -> None:
    nothing = recordings_visible_to(world.supervisor_a).none()
    listing = ScopedListing(world.supervisor_a, nothing)
    assert (listing.count(), listing[0:50]) == (0, [])
    on_no_line = recordings_visible_to(world.supervisor_a).filter(extension__in=[])
    assert ScopedListing(world.supervisor_a, on_no_line)[0:50] == []
