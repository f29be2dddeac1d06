"""POST /api/line-appearances/ applies the directory rules with the admin's messages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from extensions.models import Extension, LineAppearance, Phone

URL = "/api/line-appearances/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def john_phone() -> Phone:
    return Phone.objects.create(device_name="SEP001122334455", protocol=Phone.Protocol.SCCP)


@pytest.fixture
def mary_phone() -> Phone:
    return Phone.objects.create(device_name="SEP0011223344AA", protocol=Phone.Protocol.SCCP)


@pytest.fixture
def telephony_admin() -> User:
    user = User.objects.create_user("telephony-admin", password="unused-in-tests")
    user.user_permissions.add(
        Permission.objects.get(codename="add_lineappearance"),
        Permission.objects.get(codename="view_lineappearance"),
    )
    return user


@pytest.fixture
def admin_client(telephony_admin: User) -> APIClient:
    client = APIClient()
    client.force_login(telephony_admin)
    return client


def line_payload(phone: Phone, line_number: int, extension: str) -> dict:
    return {"phone": phone.device_name, "line_number": line_number, "extension": extension}


def test_it_creates_a_line_and_its_new_extension(
    admin_client: APIClient, john_phone: Phone
) -> None:
    response = admin_client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    assert response.status_code == 201, response.json()
    line = LineAppearance.objects.get()
    assert response.json() == {
        "id": line.pk,
        "phone": "SEP001122334455",
        "line_number": 1,
        "extension": "9001",
    }
    assert (line.phone, line.line_number, line.extension.number) == (john_phone, 1, "9001")


def test_it_makes_an_existing_extension_a_higher_line_of_another_phone(
    admin_client: APIClient, john_phone: Phone, mary_phone: Phone
) -> None:
    admin_client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    response = admin_client.post(URL, line_payload(mary_phone, 2, "9001"), format="json")

    assert response.status_code == 201, response.json()
    assert Extension.objects.filter(number="9001").count() == 1
    assert LineAppearance.objects.filter(extension__number="9001").count() == 2


def test_it_refuses_a_second_line_one_for_9001_naming_the_phone_that_has_it(
    admin_client: APIClient, john_phone: Phone, mary_phone: Phone
) -> None:
    admin_client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    response = admin_client.post(URL, line_payload(mary_phone, 1, "9001"), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": [
            "Extension 9001 is already line 1 on phone SEP001122334455. An extension can be "
            "line 1 on one phone only (rule R2); it may be line 2 or higher on any number "
            "of phones."
        ]
    }
    assert not LineAppearance.objects.filter(phone=mary_phone).exists()


def test_it_refuses_a_taken_line_number_naming_the_phone_and_its_extension(
    admin_client: APIClient, john_phone: Phone
) -> None:
    admin_client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    response = admin_client.post(URL, line_payload(john_phone, 1, "9002"), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": [
            "Phone SEP001122334455 already has a line 1 (extension 9001); each line of a "
            "phone rings for one extension."
        ]
    }
    assert not Extension.objects.filter(number="9002").exists()


def test_it_refuses_the_same_extension_twice_on_one_phone(
    admin_client: APIClient, john_phone: Phone
) -> None:
    admin_client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    response = admin_client.post(URL, line_payload(john_phone, 2, "9001"), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": [
            "Extension 9001 is already line 1 on phone SEP001122334455; an extension appears "
            "at most once on a phone."
        ]
    }


def test_it_refuses_line_zero(admin_client: APIClient, john_phone: Phone) -> None:
    response = admin_client.post(URL, line_payload(john_phone, 0, "9001"), format="json")

    assert response.status_code == 400
    assert "Line numbers start at 1." in str(response.json())
    assert not Extension.objects.exists()
    assert not LineAppearance.objects.exists()


@pytest.mark.parametrize("number", ["617-555-1212", "617 555 1212", "(617)5551212"])
def test_it_refuses_a_formatted_number_and_saves_nothing(
    admin_client: APIClient, john_phone: Phone, number: str
) -> None:
    response = admin_client.post(URL, line_payload(john_phone, 1, number), format="json")

    assert response.status_code == 400
    [message] = response.json()["extension"]
    assert message.startswith(f"Extension {number!r} is not valid")
    assert "QMS must match the PBX exactly" in message
    assert not Extension.objects.exists()
    assert not LineAppearance.objects.exists()


def test_it_accepts_a_token_instead_of_a_session(telephony_admin: User, john_phone: Phone) -> None:
    client = APIClient()
    token = Token.objects.create(user=telephony_admin)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    assert response.status_code == 201, response.json()


def test_it_refuses_a_logged_in_user_without_the_add_permission(john_phone: Phone) -> None:
    client = APIClient()
    client.force_login(User.objects.create_user("supervisor", password="unused-in-tests"))

    response = client.post(URL, line_payload(john_phone, 1, "9001"), format="json")

    assert response.status_code == 403
    assert not LineAppearance.objects.exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_it_refuses_anonymous_callers(john_phone: Phone, method: str) -> None:
    response = getattr(APIClient(), method)(URL, line_payload(john_phone, 1, "9001"), format="json")

    assert response.status_code in (401, 403)
    assert not LineAppearance.objects.exists()


def test_it_lists_the_lines_in_order(
    admin_client: APIClient, john_phone: Phone, mary_phone: Phone
) -> None:
    admin_client.post(URL, line_payload(john_phone, 1, "9001"), format="json")
    admin_client.post(URL, line_payload(mary_phone, 1, "9002"), format="json")
    admin_client.post(URL, line_payload(mary_phone, 2, "9001"), format="json")

    response = admin_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [(row["phone"], row["line_number"], row["extension"]) for row in body["results"]] == [
        ("SEP001122334455", 1, "9001"),
        ("SEP0011223344AA", 1, "9002"),
        ("SEP0011223344AA", 2, "9001"),
    ]
