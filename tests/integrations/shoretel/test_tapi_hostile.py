"""The TAPI poller against a hostile bridge over real HTTP, on PostgreSQL (audit M6): no
answer crashes the poll unrecorded or stalls the feed, each failure is in the bridge's
state with back-off and shown in the admin, and the token goes to the bridge only."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.utils import timezone

from extensions.models import Binding, Extension, SeenExtension
from integrations.shoretel import poller
from integrations.shoretel.models import TapiBridge, TapiEvent
from integrations.shoretel.poller import MAX_NEW_EXTENSIONS, poll_bridge
from tests.integrations.hostile_bridge import HostileBridge, events_page, line_event
from tests.integrations.tapi_bridge import TOKEN, state

pytestmark = pytest.mark.usefixtures("postgresql")


@pytest.fixture
def hostile() -> Iterator[Callable[[], HostileBridge]]:
    started: list[HostileBridge] = []

    def start() -> HostileBridge:
        started.append(HostileBridge())
        return started[-1]

    yield start
    for bridge in started:
        bridge.stop()


def configured(bridge: HostileBridge) -> TapiBridge:
    return TapiBridge.objects.create(name="hq", url=bridge.url, token=TOKEN)


def assert_failure_recorded(configured_bridge: TapiBridge, kind: str, words: str) -> None:
    failing = state(configured_bridge)
    assert (failing.last_error_kind, failing.consecutive_failures) == (kind, 1)
    assert words in failing.last_error
    assert failing.next_poll_at is not None and failing.next_poll_at > failing.last_poll_at


def call_event(index: int, time: str, **fields: object) -> dict:
    return {"id": f"call-{index}", "time": time, "kind": "call", "call_id": f"c{index}",
            "extension": "9007", "state": "offering", "caller": "6175551212",
            "callee": "9007", "origin": "external"} | fields  # fmt: skip


# Answers that are not the protocol --------------------------------------------------------


def test_deeply_nested_json_is_a_bad_response_recorded_with_back_off(
    hostile: Callable[[], HostileBridge], admin_client: object
) -> None:
    bridge = hostile()
    bridge.answers_bytes(b"[" * 100_000 + b"]" * 100_000)
    hq = configured(bridge)

    assert poll_bridge(hq).outcome == "bad-response"

    assert_failure_recorded(hq, "bad-response", "too deeply")
    listing = admin_client.get("/admin/shoretel/tapibridge/").content.decode()
    assert "failing (bad-response)" in listing and "too deeply" in listing


@pytest.mark.parametrize(
    ("field", "words"),
    [("next_cursor", "next_cursor is 300 characters"), ("boot_id", "boot_id is 300 characters")],
)
def test_a_cursor_or_boot_id_longer_than_qms_stores_is_refused_and_recorded(
    hostile: Callable[[], HostileBridge], admin_client: object, field: str, words: str
) -> None:
    bridge = hostile()
    bridge.answers_json(events_page([line_event(1, "9007", "10.20.0.50")], **{field: "c" * 300}))
    hq = configured(bridge)

    assert poll_bridge(hq).outcome == "bad-response"

    assert_failure_recorded(hq, "bad-response", words)
    assert (state(hq).cursor, state(hq).boot_id) == ("", "")
    assert not TapiEvent.objects.exists()
    page = admin_client.get(f"/admin/shoretel/tapibridge/{hq.pk}/change/").content.decode()
    assert words in page


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
def test_an_event_time_out_of_range_is_rejected_alone_and_the_rest_of_the_page_applied(
    hostile: Callable[[], HostileBridge], moment: str
) -> None:
    bridge = hostile()
    good = line_event(1, "9007", "10.20.0.50")
    late = good | {"id": "4", "time": moment}
    events = [good, call_event(2, moment), call_event(3, good["time"]), late]
    bridge.answers_json(events_page(events, next_cursor="hostile-boot-1.4"))
    hq = configured(bridge)

    report = poll_bridge(hq)

    assert (report.outcome, report.events, report.rejected) == ("ok", 2, 2)
    polled = state(hq)
    assert (polled.cursor, polled.events_rejected, polled.consecutive_failures) == (
        "hostile-boot-1.4", 2, 0,
    )  # fmt: skip
    assert sorted(TapiEvent.objects.values_list("event_id", flat=True)) == ["call-3", "line-1"]
    assert Binding.objects.get().ip == "10.20.0.50"


def test_a_server_time_out_of_range_only_loses_the_clock_reading(
    hostile: Callable[[], HostileBridge],
) -> None:
    bridge = hostile()
    page = events_page([line_event(1, "9007", "10.20.0.50")])
    bridge.answers_json(page | {"server_time": "0001-01-01T00:00:00+14:00"})
    hq = configured(bridge)

    report = poll_bridge(hq)

    assert (report.outcome, report.events, report.rejected) == ("ok", 1, 1)
    assert state(hq).cursor == page["next_cursor"]
    assert Binding.objects.get().extension_number == "9007"


# Answers that would hold the poll or move the token ---------------------------------------


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_request_s_deadline(
    hostile: Callable[[], HostileBridge], settings: object, headers_too: bool
) -> None:
    # A byte every 0.1 s never trips a 1 s read timeout; the whole answer would take 15 s.
    settings.QMS_TAPI_TIMEOUT_SECONDS = 1
    bridge = hostile()
    body = events_page([line_event(1, "9007", "10.20.0.50")])
    bridge.drips(body, interval=0.1, headers_too=headers_too)
    hq = configured(bridge)

    assert poll_bridge(hq).outcome == "timeout"

    assert_failure_recorded(hq, "timeout", "1 s for the whole request")
    assert bridge.hung_up.wait(10), "the poller never hung up"
    assert bridge.sent_before_hang_up < len(str(body))
    assert not Binding.objects.exists()


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(
    hostile: Callable[[], HostileBridge],
) -> None:
    bridge, elsewhere = hostile(), hostile()
    elsewhere.answers_json(events_page([line_event(1, "9007", "10.20.0.50")]))
    bridge.redirects_to(f"{elsewhere.url}v1/events")
    hq = configured(bridge)

    assert poll_bridge(hq).outcome == "redirect"

    assert_failure_recorded(hq, "redirect", f"HTTP 302 to '{elsewhere.url}v1/events'")
    assert elsewhere.requests == []
    assert bridge.requests == [("/v1/events", f"Bearer {TOKEN}")]
    assert not Binding.objects.exists()


# Floods and the unforeseen -------------------------------------------------------------------


def test_a_poll_learns_at_most_its_cap_of_new_extensions_and_counts_the_rest(
    hostile: Callable[[], HostileBridge], admin_client: object
) -> None:
    Extension.objects.create(number="9007")
    bridge = hostile()
    flood = [line_event(i, f"55{i:04d}", f"10.40.{i // 250}.{i % 250 + 1}") for i in range(250)]
    known = line_event(250, "9007", "10.20.0.50")
    bridge.answers_json(events_page([*flood, known]))
    hq = configured(bridge)

    report = poll_bridge(hq)

    assert (report.outcome, report.events, report.held) == ("ok", 251, 250 - MAX_NEW_EXTENSIONS)
    assert SeenExtension.objects.exclude(number="9007").count() == MAX_NEW_EXTENSIONS
    assert Binding.objects.filter(extension_number="9007", ip="10.20.0.50").exists()
    assert state(hq).new_extensions_held == 250 - MAX_NEW_EXTENSIONS
    assert state(hq).cursor == "hostile-boot-1.251"
    page = admin_client.get(f"/admin/shoretel/tapibridge/{hq.pk}/change/").content.decode()
    assert "new extensions held back" in page.lower()


def test_an_unforeseen_error_is_recorded_shown_and_backed_off_like_a_bridge_failure(
    hostile: Callable[[], HostileBridge], monkeypatch: pytest.MonkeyPatch, admin_client: object
) -> None:
    bridge = hostile()
    bridge.answers_json(events_page([line_event(1, "9007", "10.20.0.50")]))
    hq = configured(bridge)

    def breaks(self: poller.Poll, page: object) -> None:
        raise RuntimeError("a bug no answer should reach")

    monkeypatch.setattr(poller.Poll, "apply_page", breaks)
    now = timezone.now()
    assert poll_bridge(hq, now).outcome == "internal-error"
    assert poll_bridge(hq, now).outcome == "internal-error"

    failing = state(hq)
    assert (failing.last_error_kind, failing.consecutive_failures) == ("internal-error", 2)
    assert "RuntimeError: a bug no answer should reach" in failing.last_error
    assert failing.next_poll_at > now
    listing = admin_client.get("/admin/shoretel/tapibridge/").content.decode()
    assert "failing (internal-error)" in listing


def test_a_line_whose_extension_breaks_r4_is_refused_like_any_wire_binding(
    bridge_sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integrations.shoretel.bridge import simulator as reference
    from tests.integrations.tapi_bridge import bridge_for

    steps = (
        reference.line(0, "<b>9007</b>", reference.PHONE_A),
        reference.line(1, "9008", reference.PHONE_B),
    )
    monkeypatch.setitem(reference.SCENARIOS, "hostile-line", steps)
    report = poll_bridge(bridge_for(bridge_sim("hostile-line")))

    assert report.outcome == "ok"
    assert list(SeenExtension.objects.values_list("number", flat=True)) == ["9008"]
    assert report.rejected >= 1
