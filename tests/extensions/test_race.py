"""Two writers racing to make 9001 line 1 on two phones, on PostgreSQL.

Both writers are held at a barrier just after their validation passed and before either
inserts, so each believes 9001 is free: the database constraint decides, and the loser
must get the same sentence the forms give, never a 500.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.urls import reverse

from extensions.models import LineAppearance, Phone
from extensions.services import assign_line

RIVALS = ["SEP0011223344C1", "SEP0011223344C2"]


@pytest.fixture
def validated_together(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Barrier]:
    """Make both writers finish validating before either may write."""
    barrier = threading.Barrier(2, timeout=20)
    real_full_clean = LineAppearance.full_clean

    def full_clean_then_wait(self: LineAppearance, *args: object, **kwargs: object) -> None:
        real_full_clean(self, *args, **kwargs)
        if self.line_number == 1:
            barrier.wait()

    monkeypatch.setattr(LineAppearance, "full_clean", full_clean_then_wait)
    yield barrier


def race(writers: list[Callable[[], object]]) -> list[object]:
    results: list[object] = [None] * len(writers)

    def run(index: int) -> None:
        try:
            results[index] = writers[index]()
        except Exception as error:  # the outcome under test, whatever it is
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_two_services_racing_for_line_one_give_one_success_and_one_clean_refusal(
    postgresql: None, validated_together: threading.Barrier
) -> None:
    phones = [Phone.objects.create(device_name=name, protocol="sccp") for name in RIVALS]

    results = race([lambda phone=phone: assign_line(phone, 1, "9001") for phone in phones])

    winners = [result for result in results if isinstance(result, LineAppearance)]
    losers = [result for result in results if isinstance(result, ValidationError)]
    assert (len(winners), len(losers)) == (1, 1), results
    winner_phone = winners[0].phone.device_name
    assert losers[0].messages == [
        f"Extension 9001 is already line 1 on phone {winner_phone}. An extension can be line 1 "
        "on one phone only (rule R2); it may be line 2 or higher on any number of phones."
    ]
    assert list(LineAppearance.objects.values_list("phone__device_name", flat=True)) == [
        winner_phone
    ]


def test_two_admins_racing_for_line_one_never_see_a_500(
    postgresql: None, validated_together: threading.Barrier
) -> None:
    User.objects.create_superuser("racer", password="a-long-test-password-1")
    phones = [Phone.objects.create(device_name=name, protocol="sccp") for name in RIVALS]

    def save_line_one(phone: Phone) -> tuple[int, str, str]:
        client = Client()
        client.login(username="racer", password="a-long-test-password-1")
        url = reverse("admin:extensions_phone_change", args=[phone.pk])
        response = client.post(url, admin_phone_form(phone), follow=True)
        # The page itself, not response.context: template signals are shared by threads.
        status, location = response.redirect_chain[0][1], response.redirect_chain[0][0]
        return status, location, response.content.decode()

    results = race([lambda phone=phone: save_line_one(phone) for phone in phones])

    assert all(isinstance(result, tuple) for result in results), results
    assert all(status == 302 for status, _, _ in results)
    saved = LineAppearance.objects.get()
    refused = [page for _, location, page in results if "/change/" in location]
    assert len(refused) == 1, results
    assert (
        f"Extension 9001 is already line 1 on phone {saved.phone.device_name}. An extension "
        "can be line 1 on one phone only (rule R2); it may be line 2 or higher on any number "
        "of phones." in refused[0]
    )


def admin_phone_form(phone: Phone) -> dict[str, str]:
    return {
        "device_name": phone.device_name,
        "protocol": phone.protocol,
        "description": "",
        "configured_ip": "",
        "lines-TOTAL_FORMS": "1",
        "lines-INITIAL_FORMS": "0",
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
        "lines-0-line_number": "1",
        "lines-0-number": "9001",
        "lines-0-id": "",
        "lines-0-phone": str(phone.pk),
        "_save": "Save",
    }
