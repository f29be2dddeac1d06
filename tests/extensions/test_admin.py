"""The admin console, driven the way a telephony admin drives it: real admin pages, real
form posts (inline line appearances included), and the database checked afterwards."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from extensions.models import (
    Agent,
    Binding,
    BindingConflict,
    Extension,
    LineAppearance,
    Phone,
    SeenExtension,
)
from extensions.services import apply_binding
from integrations.observations import BindingSeen, BindingSource

pytestmark = pytest.mark.django_db

JOHN_PHONE = "SEP001122334455"
MARY_PHONE = "SEP0011223344AA"
CARL_PHONE = "SEP0011223344BB"
FOURTH_PHONE = "SEP0011223344CC"

# The example that comes with rules R1-R3 (DESIGN.md): device, then (line, extension).
EXAMPLE = [
    (JOHN_PHONE, [(1, "9001"), (2, "9002"), (3, "9003")]),
    (MARY_PHONE, [(1, "9002"), (2, "9001"), (3, "9003")]),
    (CARL_PHONE, [(1, "9003"), (2, "9002")]),
]
PBX_EXACTLY = "QMS must match the PBX exactly"
NOON = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)

Lines = Sequence[tuple[int, str]]


# Reading and posting admin forms -------------------------------------------------------------


class AdminFormReader(HTMLParser):
    """Collects what a browser would submit from one form of an admin page: its inputs,
    selects and textareas with their current values, without the inline formset's empty
    template (`__prefix__`) and without submit buttons."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, str] = {}
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.inside = attributes.get("id") == self.form_id
            return
        name = attributes.get("name")
        if not self.inside or (name and "__prefix__" in name):
            return
        if tag == "input" and name:
            self.read_input(name, attributes)
        elif tag == "select" and "multiple" not in attributes:
            self.select = name
        elif tag == "option" and self.select:
            # A browser sends the selected option, or the first one when none is selected.
            if self.select not in self.fields or "selected" in attributes:
                self.fields[self.select] = attributes.get("value") or ""
        elif tag == "textarea" and name:
            self.textarea = name
            self.fields[name] = ""

    def read_input(self, name: str, attributes: dict[str, str | None]) -> None:
        kind = attributes.get("type", "text")
        if kind in ("submit", "button", "image", "reset", "file"):
            return
        if kind in ("checkbox", "radio") and "checked" not in attributes:
            return
        default = "on" if kind in ("checkbox", "radio") else ""
        self.fields[name] = attributes.get("value") or default

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data: str) -> None:
        if self.inside and self.textarea:
            self.fields[self.textarea] += data


def read_form(client: Client, url: str, form_id: str) -> dict[str, str]:
    response = client.get(url)
    assert response.status_code == 200
    reader = AdminFormReader(form_id)
    reader.feed(response.content.decode())
    assert reader.fields, f"no form {form_id} on {url}"
    return reader.fields


def page_text(response: HttpResponse) -> str:
    """The page as a person reads it: entities decoded, so quotes compare as typed."""
    return html.unescape(response.content.decode())


def fill_row(form: dict[str, str], prefix: str, row: int, values: dict[str, str]) -> None:
    """Type into one row of an inline, adding the row as the admin's "Add another" link
    does when the blank ones run out."""
    if row >= int(form[f"{prefix}-TOTAL_FORMS"]):
        form[f"{prefix}-TOTAL_FORMS"] = str(row + 1)
    form.update({f"{prefix}-{row}-{field}": value for field, value in values.items()})


def fill_lines(form: dict[str, str], lines: Lines, start: int = 0) -> None:
    """Type lines into the phone's inline rows from row `start` on."""
    for offset, (line_number, number) in enumerate(lines):
        values = {"line_number": str(line_number), "number": number}
        fill_row(form, "lines", start + offset, values)


def add_phone(
    client: Client,
    device: str,
    lines: Lines = (),
    protocol: str = "sccp",
    static_ip: bool = False,
    configured_ip: str = "",
) -> HttpResponse:
    form = read_form(client, reverse("admin:extensions_phone_add"), "phone_form")
    form.update(device_name=device, protocol=protocol, configured_ip=configured_ip)
    if static_ip:
        form["static_ip"] = "on"
    fill_lines(form, lines)
    return client.post(reverse("admin:extensions_phone_add"), form)


def change_url(phone: Phone) -> str:
    return reverse("admin:extensions_phone_change", args=[phone.pk])


def lines_of(device: str) -> list[tuple[int, str]]:
    return list(
        LineAppearance.objects.filter(phone__device_name=device)
        .order_by("line_number")
        .values_list("line_number", "extension__number")
    )


def assert_saved(response: HttpResponse) -> None:
    """A saved admin form redirects; a refused one comes back with its errors."""
    assert response.status_code == 302, page_text(response)


def assert_refused(response: HttpResponse, *sentences: str) -> str:
    assert response.status_code == 200
    text = page_text(response)
    assert "Please correct the error" in text
    for sentence in sentences:
        assert sentence in text
    return text


def directory_counts() -> tuple[int, int, int]:
    return Phone.objects.count(), LineAppearance.objects.count(), Extension.objects.count()


@pytest.fixture
def example(admin_client: Client) -> Client:
    """John, Mary and Carl's phones, entered through the phone admin."""
    for device, lines in EXAMPLE:
        assert_saved(add_phone(admin_client, device, lines))
    return admin_client


def observe(number: str, ip: str, at: datetime = NOON, **details: object) -> None:
    source = details.pop("source", BindingSource.SIP_REGISTER)
    apply_binding(BindingSeen(extension=number, ip=ip, source=source, seen_at=at, **details))


# The phone admin and the line-appearance rules -----------------------------------------------


def test_the_phone_add_page_has_the_lines_inline(admin_client: Client) -> None:
    form = read_form(admin_client, reverse("admin:extensions_phone_add"), "phone_form")

    assert {"device_name", "protocol", "description", "configured_ip"} <= form.keys()
    assert form["lines-TOTAL_FORMS"] == "3"
    assert form["lines-INITIAL_FORMS"] == "0"
    assert {"lines-0-line_number", "lines-0-number", "lines-2-number"} <= form.keys()


def test_the_john_mary_carl_example_validates_through_the_phone_admin(example: Client) -> None:
    for device, lines in EXAMPLE:
        assert lines_of(device) == lines
    assert sorted(Extension.objects.values_list("number", flat=True)) == ["9001", "9002", "9003"]


@pytest.mark.parametrize("number", ["9001", "9002", "9003"])
def test_it_refuses_a_line_one_already_held_by_another_phone_and_names_that_phone(
    example: Client, number: str
) -> None:
    holder = next(device for device, lines in EXAMPLE if lines[0] == (1, number))
    before = directory_counts()

    response = add_phone(example, FOURTH_PHONE, [(1, number), (2, "9004")])

    text = assert_refused(response, f"Extension {number} is already line 1 on phone {holder}")
    assert "line 1 on one phone only (rule R2)" in text
    assert directory_counts() == before
    assert not Phone.objects.filter(device_name=FOURTH_PHONE).exists()
    assert not Extension.objects.filter(number="9004").exists()


def test_the_line_one_refusal_names_the_person_at_the_holding_phone(example: Client) -> None:
    Extension.objects.filter(number="9001").update(agent=Agent.objects.create(name="John"))

    response = add_phone(example, FOURTH_PHONE, [(1, "9001")])

    assert_refused(response, f"Extension 9001 is already line 1 on phone {JOHN_PHONE} (John)")


def test_it_refuses_taking_line_one_on_an_existing_phone_when_another_holds_it(
    example: Client,
) -> None:
    assert_saved(add_phone(example, FOURTH_PHONE, [(1, "9004")]))
    phone = Phone.objects.get(device_name=FOURTH_PHONE)
    form = read_form(example, change_url(phone), "phone_form")
    form["lines-0-number"] = "9002"

    response = example.post(change_url(phone), form)

    assert_refused(response, f"Extension 9002 is already line 1 on phone {MARY_PHONE}")
    assert lines_of(FOURTH_PHONE) == [(1, "9004")]


def test_it_accepts_9001_as_line_two_or_higher_on_any_number_of_phones(example: Client) -> None:
    for index in range(4):
        device = f"SEP00112233440{index}"
        response = add_phone(example, device, [(1, f"910{index}"), (2 + index, "9001")])
        assert_saved(response)
        assert lines_of(device) == [(1, f"910{index}"), (2 + index, "9001")]

    assert LineAppearance.objects.filter(extension__number="9001").count() == 6
    assert LineAppearance.objects.filter(extension__number="9001", line_number=1).count() == 1
    assert Extension.objects.filter(number="9001").count() == 1


def test_it_refuses_the_same_line_number_twice_on_one_phone(admin_client: Client) -> None:
    response = add_phone(admin_client, FOURTH_PHONE, [(1, "9001"), (1, "9002")])

    assert_refused(
        response,
        "Line 1 is given twice (9001 and 9002); each line of a phone rings for one extension.",
    )
    assert directory_counts() == (0, 0, 0)


def test_it_refuses_the_same_extension_twice_on_one_phone(admin_client: Client) -> None:
    response = add_phone(admin_client, FOURTH_PHONE, [(1, "9001"), (2, "9001")])

    assert_refused(
        response,
        "Extension 9001 is given as both line 1 and line 2; "
        "an extension appears at most once on a phone.",
    )
    assert directory_counts() == (0, 0, 0)


def test_it_refuses_a_new_line_that_repeats_an_extension_already_on_the_phone(
    example: Client,
) -> None:
    phone = Phone.objects.get(device_name=CARL_PHONE)
    form = read_form(example, change_url(phone), "phone_form")
    fill_lines(form, [(3, "9003")], start=2)

    response = example.post(change_url(phone), form)

    assert_refused(response, "Extension 9003 is given as both line 1 and line 3")
    assert lines_of(CARL_PHONE) == [(1, "9003"), (2, "9002")]


def test_it_swaps_the_extensions_of_line_one_and_line_two_in_one_save(
    admin_client: Client,
) -> None:
    assert_saved(add_phone(admin_client, FOURTH_PHONE, [(1, "9201"), (2, "9202")]))
    phone = Phone.objects.get(device_name=FOURTH_PHONE)
    form = read_form(admin_client, change_url(phone), "phone_form")
    assert (form["lines-0-number"], form["lines-1-number"]) == ("9201", "9202")
    form["lines-0-number"], form["lines-1-number"] = "9202", "9201"

    assert_saved(admin_client.post(change_url(phone), form))

    assert lines_of(FOURTH_PHONE) == [(1, "9202"), (2, "9201")]
    assert Extension.objects.count() == 2


def test_it_swaps_the_line_numbers_of_two_lines_in_one_save(admin_client: Client) -> None:
    assert_saved(add_phone(admin_client, FOURTH_PHONE, [(1, "9201"), (2, "9202")]))
    phone = Phone.objects.get(device_name=FOURTH_PHONE)
    form = read_form(admin_client, change_url(phone), "phone_form")
    form["lines-0-line_number"], form["lines-1-line_number"] = "2", "1"

    assert_saved(admin_client.post(change_url(phone), form))

    assert lines_of(FOURTH_PHONE) == [(1, "9202"), (2, "9201")]


def test_it_moves_line_one_between_phones_when_the_old_one_is_deleted_in_the_same_save(
    example: Client,
) -> None:
    phone = Phone.objects.get(device_name=JOHN_PHONE)
    form = read_form(example, change_url(phone), "phone_form")
    form["lines-0-DELETE"] = "on"
    fill_lines(form, [(1, "9004")], start=3)

    assert_saved(example.post(change_url(phone), form))
    assert lines_of(JOHN_PHONE) == [(1, "9004"), (2, "9002"), (3, "9003")]
    assert_saved(add_phone(example, FOURTH_PHONE, [(1, "9001")]))
    assert lines_of(FOURTH_PHONE) == [(1, "9001")]


# Rule R4: extensions exactly as the PBX writes them ------------------------------------------


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("617-555-1212", "formatting characters (-)"),
        ("90 01", "white space"),
        ("(617)5551212", "formatting characters (( ))"),
        ("9001 ", "white space"),
    ],
)
def test_it_refuses_a_formatted_extension_on_a_phone_line(
    admin_client: Client, typed: str, reason: str
) -> None:
    response = add_phone(admin_client, FOURTH_PHONE, [(1, typed)])

    text = assert_refused(response, f"Extension {typed!r} is not valid: it contains {reason}")
    assert PBX_EXACTLY in text
    assert directory_counts() == (0, 0, 0)


@pytest.mark.parametrize("typed", ["617-555-1212", "90 01", " 9001", "9001 ", "617.555.1212"])
def test_it_refuses_a_formatted_extension_in_the_extension_admin(
    admin_client: Client, typed: str
) -> None:
    url = reverse("admin:extensions_extension_add")
    form = read_form(admin_client, url, "extension_form")
    form["number"] = typed

    response = admin_client.post(url, form)

    assert_refused(response, f"Extension {typed!r} is not valid", PBX_EXACTLY)
    assert not Extension.objects.exists()


def test_01234_and_1234_are_two_extensions_kept_as_typed(admin_client: Client) -> None:
    assert_saved(add_phone(admin_client, FOURTH_PHONE, [(1, "01234"), (2, "1234")]))

    assert lines_of(FOURTH_PHONE) == [(1, "01234"), (2, "1234")]
    assert sorted(Extension.objects.values_list("number", flat=True)) == ["01234", "1234"]


def test_1234_as_line_one_elsewhere_does_not_collide_with_01234(admin_client: Client) -> None:
    assert_saved(add_phone(admin_client, JOHN_PHONE, [(1, "01234")]))

    assert_saved(add_phone(admin_client, MARY_PHONE, [(1, "1234")]))

    assert lines_of(MARY_PHONE) == [(1, "1234")]


def test_a_leading_plus_and_feature_characters_are_kept_as_typed(admin_client: Client) -> None:
    assert_saved(add_phone(admin_client, FOURTH_PHONE, [(1, "+16175551212"), (2, "*86#")]))

    assert lines_of(FOURTH_PHONE) == [(1, "+16175551212"), (2, "*86#")]


def test_it_refuses_a_sip_user_name_as_a_line_of_an_sccp_phone(admin_client: Client) -> None:
    response = add_phone(admin_client, FOURTH_PHONE, [(1, "reception")], protocol="sccp")

    assert_refused(
        response,
        "Extension reception is a SIP user name; it can only be a line on a SIP or Lync "
        f"phone, and {FOURTH_PHONE} is Cisco SCCP.",
    )
    assert directory_counts() == (0, 0, 0)


@pytest.mark.parametrize("protocol", ["sip", "lync"])
def test_it_accepts_a_sip_user_name_as_a_line_of_a_sip_or_lync_phone(
    admin_client: Client, protocol: str
) -> None:
    assert_saved(add_phone(admin_client, "reception-desk", [(1, "reception")], protocol=protocol))

    assert lines_of("reception-desk") == [(1, "reception")]


def test_it_refuses_turning_a_sip_phone_with_a_user_name_line_into_sccp(
    admin_client: Client,
) -> None:
    assert_saved(add_phone(admin_client, "reception-desk", [(1, "reception")], protocol="sip"))
    phone = Phone.objects.get(device_name="reception-desk")
    form = read_form(admin_client, change_url(phone), "phone_form")
    form["protocol"] = "sccp"

    response = admin_client.post(change_url(phone), form)

    assert_refused(response, "Extension reception is a SIP user name")
    assert Phone.objects.get(pk=phone.pk).protocol == "sip"


def test_a_line_one_lost_to_a_concurrent_writer_comes_back_as_the_rule_message(
    example: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation passes as if the other writer had not committed yet; the database's
    # conditional unique constraint (R2) then refuses the insert.
    monkeypatch.setattr(LineAppearance, "clean", lambda line: None)
    before = directory_counts()

    response = add_phone(example, FOURTH_PHONE, [(1, "9001"), (2, "9004")])

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:extensions_phone_add")
    assert directory_counts() == before
    text = page_text(example.get(response["Location"]))
    assert f"Extension 9001 is already line 1 on phone {JOHN_PHONE}" in text


# Static IPs ----------------------------------------------------------------------------------


def test_it_refuses_a_static_ip_phone_without_its_configured_ip(admin_client: Client) -> None:
    response = add_phone(admin_client, FOURTH_PHONE, [(1, "9001")], static_ip=True)

    assert_refused(response, "A static-IP phone needs its configured IP address.")
    assert directory_counts() == (0, 0, 0)


def test_it_refuses_two_static_phones_on_one_ip_and_names_the_other(admin_client: Client) -> None:
    first = add_phone(
        admin_client, JOHN_PHONE, [(1, "9001")], static_ip=True, configured_ip="10.1.2.3"
    )
    assert_saved(first)

    response = add_phone(
        admin_client, MARY_PHONE, [(1, "9002")], static_ip=True, configured_ip="10.1.2.3"
    )

    assert_refused(response, f"10.1.2.3 is already the static IP of phone {JOHN_PHONE}")
    assert list(Phone.objects.values_list("device_name", flat=True)) == [JOHN_PHONE]
    assert not Extension.objects.filter(number="9002").exists()


def test_a_dynamic_phone_may_share_a_configured_ip_with_a_static_one(admin_client: Client) -> None:
    assert_saved(add_phone(admin_client, JOHN_PHONE, static_ip=True, configured_ip="10.1.2.3"))

    assert_saved(add_phone(admin_client, MARY_PHONE, configured_ip="10.1.2.3"))


# Rule R1 in the extension admin --------------------------------------------------------------


def test_it_refuses_a_second_extension_with_an_existing_number_naming_where_it_is_used(
    example: Client,
) -> None:
    url = reverse("admin:extensions_extension_add")
    form = read_form(example, url, "extension_form")
    form["number"] = "9001"

    response = example.post(url, form)

    assert_refused(
        response,
        f"Extension 9001 already exists (line 1 on phone {JOHN_PHONE}, "
        f"line 2 on phone {MARY_PHONE}). Every extension in QMS is unique (rule R1).",
    )
    assert Extension.objects.filter(number="9001").count() == 1


def test_renaming_an_extension_onto_an_existing_number_is_refused(example: Client) -> None:
    extension = Extension.objects.get(number="9003")
    url = reverse("admin:extensions_extension_change", args=[extension.pk])
    form = read_form(example, url, "extension_form")
    form["number"] = "9002"

    response = example.post(url, form)

    assert_refused(response, "Extension 9002 already exists (line 1 on phone")
    assert Extension.objects.get(pk=extension.pk).number == "9003"


def test_the_extension_admin_lists_where_an_extension_is_a_line(example: Client) -> None:
    extension = Extension.objects.get(number="9003")

    response = example.get(reverse("admin:extensions_extension_change", args=[extension.pk]))

    text = page_text(response)
    for device in (JOHN_PHONE, MARY_PHONE):
        phone = Phone.objects.get(device_name=device)
        assert f'<a href="{change_url(phone)}">{device}</a>' in text


def test_the_agent_page_refuses_white_space_around_an_extension(admin_client: Client) -> None:
    url = reverse("admin:extensions_agent_add")
    form = read_form(admin_client, url, "agent_form")
    form["name"] = "John"
    fill_row(form, "extensions", 0, {"number": "9001 "})

    response = admin_client.post(url, form)

    assert_refused(response, "Extension '9001 ' is not valid: it contains white space", PBX_EXACTLY)
    assert not Agent.objects.exists()
    assert not Extension.objects.exists()


def test_the_agent_page_gives_a_new_extension_to_the_agent(admin_client: Client) -> None:
    url = reverse("admin:extensions_agent_add")
    form = read_form(admin_client, url, "agent_form")
    form["name"] = "John"
    fill_row(form, "extensions", 0, {"number": "09001"})

    assert_saved(admin_client.post(url, form))

    assert Extension.objects.get(number="09001").agent == Agent.objects.get(name="John")


def test_the_agent_page_refuses_an_existing_extension_naming_where_it_is_used(
    example: Client,
) -> None:
    url = reverse("admin:extensions_agent_add")
    form = read_form(example, url, "agent_form")
    form["name"] = "John"
    fill_row(form, "extensions", 0, {"number": "9003"})

    response = example.post(url, form)

    assert_refused(response, f"Extension 9003 already exists (line 1 on phone {CARL_PHONE}")
    assert not Agent.objects.exists()


# Read-only history ---------------------------------------------------------------------------


@pytest.fixture
def observed(example: Client) -> Client:
    observe("9001", "10.0.0.11")
    observe("6175551234", "10.0.0.12")
    return example


@pytest.mark.parametrize("model", [Binding, SeenExtension])
def test_wire_facts_cannot_be_added_in_the_admin(observed: Client, model: type) -> None:
    name = model._meta.model_name

    assert observed.get(reverse(f"admin:extensions_{name}_add")).status_code == 403
    assert observed.post(reverse(f"admin:extensions_{name}_add"), {}).status_code == 403


@pytest.mark.parametrize("model", [Binding, SeenExtension])
def test_wire_facts_are_viewable_but_not_changeable_or_deletable(
    observed: Client, model: type
) -> None:
    name = model._meta.model_name
    row = model.objects.order_by("pk").first()
    changelist = observed.get(reverse(f"admin:extensions_{name}_changelist"))
    change = observed.get(reverse(f"admin:extensions_{name}_change", args=[row.pk]))

    assert changelist.status_code == 200
    assert 'name="action"' not in page_text(changelist)  # no "delete selected"
    assert reverse(f"admin:extensions_{name}_add") not in page_text(changelist)
    assert change.status_code == 200
    assert "9001" in page_text(change)
    assert 'name="_save"' not in page_text(change)
    assert reverse(f"admin:extensions_{name}_delete", args=[row.pk]) not in page_text(change)
    delete_url = reverse(f"admin:extensions_{name}_delete", args=[row.pk])
    assert observed.get(delete_url).status_code == 403
    assert observed.post(delete_url, {"post": "yes"}).status_code == 403
    row_url = reverse(f"admin:extensions_{name}_change", args=[row.pk])
    assert observed.post(row_url, {}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()


def test_posting_a_change_to_a_binding_changes_nothing(observed: Client) -> None:
    binding = Binding.objects.get(extension_number="9001")
    url = reverse("admin:extensions_binding_change", args=[binding.pk])

    response = observed.post(url, {"extension_number": "9999", "ip": "10.9.9.9"})

    assert response.status_code == 403
    binding.refresh_from_db()
    assert (binding.extension_number, binding.ip) == ("9001", "10.0.0.11")


# Directory health ----------------------------------------------------------------------------


def health_section(response: HttpResponse, section_id: str) -> str:
    text = page_text(response)
    match = re.search(rf'<div class="module" id="{section_id}">(.*?)</table>', text, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def test_the_admin_index_links_to_directory_health(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert f'href="{reverse("admin:directory_health")}"' in page_text(response)


def test_directory_health_needs_a_staff_login(client: Client, django_user_model: type) -> None:
    url = reverse("admin:directory_health")

    anonymous = client.get(url)
    django_user_model.objects.create_user("agent", password="not-staff-7Yq")
    assert client.login(username="agent", password="not-staff-7Yq")
    not_staff = client.get(url)

    for response in (anonymous, not_staff):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
        assert "next=" in response["Location"]


def test_directory_health_of_an_empty_directory_says_all_agree(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:directory_health"))

    assert response.status_code == 200
    assert "The directory and the wire agree" in page_text(response)


def test_directory_health_lists_configured_extensions_never_seen(example: Client) -> None:
    observe("9002", "10.0.0.12")

    response = example.get(reverse("admin:directory_health"))

    never_seen = health_section(response, "never-seen")
    assert "Configured but never seen on the wire (2)" in never_seen
    assert ">9001</a>" in never_seen
    assert ">9003</a>" in never_seen
    assert ">9002</a>" not in never_seen
    assert f"line 1 on {JOHN_PHONE}" in never_seen
    assert "The directory and the wire agree" not in page_text(response)


def test_directory_health_leaves_out_extensions_only_on_static_phones(
    admin_client: Client,
) -> None:
    assert_saved(
        add_phone(admin_client, JOHN_PHONE, [(1, "9001")], static_ip=True, configured_ip="10.1.1.1")
    )
    assert_saved(add_phone(admin_client, MARY_PHONE, [(1, "9002")]))

    never_seen = health_section(admin_client.get(reverse("admin:directory_health")), "never-seen")

    assert ">9002</a>" in never_seen
    assert ">9001</a>" not in never_seen


def test_directory_health_suggests_the_configured_suffix_of_a_number_seen_on_the_wire(
    admin_client: Client,
) -> None:
    assert_saved(add_phone(admin_client, FOURTH_PHONE, [(1, "1234")]))
    observe("6175551234", "10.0.0.12")

    response = admin_client.get(reverse("admin:directory_health"))

    unconfigured = health_section(response, "unconfigured")
    assert "Seen on the wire but not configured (1)" in unconfigured
    assert "<td>6175551234</td>" in unconfigured
    assert "<td>10.0.0.12</td>" in unconfigured
    assert "configured 1234" in unconfigured
    assert SeenExtension.objects.filter(number="6175551234").exists()
    assert not Extension.objects.filter(number="6175551234").exists()


def test_directory_health_suggests_a_configured_prefix_and_nothing_for_a_stranger(
    admin_client: Client,
) -> None:
    assert_saved(add_phone(admin_client, FOURTH_PHONE, [(1, "6175")]))
    observe("61751234", "10.0.0.12")
    observe("5550000", "10.0.0.13")

    unconfigured = health_section(
        admin_client.get(reverse("admin:directory_health")), "unconfigured"
    )

    rows = dict(re.findall(r"<td>(\d+)</td>.*?<td>([^<]*)</td>\s*</tr>", unconfigured, re.S))
    assert rows == {"61751234": "configured 6175", "5550000": ""}


def test_directory_health_lists_open_line_one_conflicts(example: Client) -> None:
    john, mary = (Phone.objects.get(device_name=name) for name in (JOHN_PHONE, MARY_PHONE))
    for device, ip, minute in ((JOHN_PHONE, "10.0.0.11", 0), (MARY_PHONE, "10.0.0.12", 1)):
        observe(
            "9001",
            ip,
            NOON + timedelta(minutes=minute),
            source=BindingSource.SCCP,
            device=device,
            line_number=1,
        )
    conflict = BindingConflict.objects.get(resolved_at__isnull=True)

    response = example.get(reverse("admin:directory_health"))

    conflicts = health_section(response, "open-conflicts")
    assert "Open conflicts (1)" in conflicts
    conflict_url = reverse("admin:extensions_bindingconflict_change", args=[conflict.pk])
    assert f'<a href="{conflict_url}">9001</a>' in conflicts
    assert f"10.0.0.11 ({john.label})" in conflicts
    assert f"10.0.0.12 ({mary.label})" in conflicts


def test_a_resolved_conflict_leaves_directory_health(example: Client) -> None:
    for device, ip, minute in ((JOHN_PHONE, "10.0.0.11", 0), (MARY_PHONE, "10.0.0.12", 1)):
        observe(
            "9001",
            ip,
            NOON + timedelta(minutes=minute),
            source=BindingSource.SCCP,
            device=device,
            line_number=1,
        )
    conflict = BindingConflict.objects.get()
    changelist = reverse("admin:extensions_bindingconflict_changelist")

    response = example.post(
        changelist, {"action": "mark_resolved", "_selected_action": [conflict.pk]}
    )

    assert response.status_code == 302
    conflict.refresh_from_db()
    assert conflict.resolution == "resolved by admin"
    conflicts = health_section(example.get(reverse("admin:directory_health")), "open-conflicts")
    assert "Open conflicts (0)" in conflicts


# Agents --------------------------------------------------------------------------------------


@pytest.fixture
def john(example: Client) -> Agent:
    john = Agent.objects.create(name="John")
    Extension.objects.filter(number="9001").update(agent=john)
    mary = Agent.objects.create(name="Mary")
    Extension.objects.filter(number="9002").update(agent=mary)
    observe("9001", "10.0.0.11", source=BindingSource.SCCP, device=JOHN_PHONE, line_number=1)
    observe("9002", "10.0.0.12", source=BindingSource.SCCP, device=MARY_PHONE, line_number=1)
    return john


def test_the_agent_page_links_to_their_phone_and_their_bindings(
    example: Client, john: Agent
) -> None:
    phone = Phone.objects.get(device_name=JOHN_PHONE)

    response = example.get(reverse("admin:extensions_agent_change", args=[john.pk]))

    assert response.status_code == 200
    text = page_text(response)
    assert f'<a href="{change_url(phone)}">{JOHN_PHONE}</a>' in text
    assert MARY_PHONE not in text
    history = f"{reverse('admin:extensions_binding_changelist')}?extension__agent__id__exact="
    assert f'href="{history}{john.pk}"' in text


def test_the_agent_bindings_link_shows_that_agents_history_only(
    example: Client, john: Agent
) -> None:
    page = page_text(example.get(reverse("admin:extensions_agent_change", args=[john.pk])))
    history_url = re.search(r'href="([^"]*extension__agent__id__exact=[^"]*)"', page).group(1)

    response = example.get(history_url)

    assert response.status_code == 200
    text = page_text(response)
    assert "10.0.0.11" in text
    assert "10.0.0.12" not in text


def test_the_phone_bindings_link_shows_that_phones_history_only(
    example: Client, john: Agent
) -> None:
    phone = Phone.objects.get(device_name=JOHN_PHONE)
    page = page_text(example.get(change_url(phone)))
    history_url = re.search(r'href="([^"]*phone__id__exact=[^"]*)"', page).group(1)

    response = example.get(history_url)

    assert response.status_code == 200
    text = page_text(response)
    assert "10.0.0.11" in text
    assert "10.0.0.12" not in text


def test_the_agent_ip_is_read_only_in_the_admin(example: Client, john: Agent) -> None:
    url = reverse("admin:extensions_agent_change", args=[john.pk])
    form = read_form(example, url, "agent_form")
    assert "current_ip" not in form
    form["current_ip"] = "10.9.9.9"

    assert_saved(example.post(url, form))

    john.refresh_from_db()
    assert john.current_ip == "10.0.0.11"


# Search and filters --------------------------------------------------------------------------


def listed_phones(client: Client, query: dict[str, str]) -> list[str]:
    response = client.get(reverse("admin:extensions_phone_changelist"), query)
    assert response.status_code == 200
    results = re.search(r'<table id="result_list">(.*?)</table>', page_text(response), re.S)
    return re.findall(r'<th class="field-device_name"><a [^>]*>([^<]+)</a>', results.group(1))


def test_the_phone_list_finds_a_phone_by_any_of_its_extensions(example: Client) -> None:
    assert listed_phones(example, {"q": "9003"}) == [JOHN_PHONE, MARY_PHONE, CARL_PHONE]
    assert listed_phones(example, {"q": "9001"}) == [JOHN_PHONE, MARY_PHONE]


def test_the_phone_list_filters_phones_never_heard_from(example: Client) -> None:
    observe("9002", "10.0.0.12", source=BindingSource.SCCP, device=MARY_PHONE, line_number=1)

    never_heard = listed_phones(example, {"last_heard_at__isnull": "True"})

    assert never_heard == [JOHN_PHONE, CARL_PHONE]


# No default credentials ----------------------------------------------------------------------


def test_there_is_no_admin_admin_login_after_migrations(client: Client) -> None:
    user_model = get_user_model()

    assert not user_model.objects.filter(username="admin").exists()
    assert not user_model.objects.filter(is_superuser=True).exists()
    assert authenticate(username="admin", password="admin") is None
    response = client.post(reverse("admin:login"), {"username": "admin", "password": "admin"})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
