"""The directory's rules through the service functions every non-form writer uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from extensions.health import suggest
from extensions.models import Agent, Binding, BindingConflict, Extension, LineAppearance, Phone
from extensions.services import (
    apply_binding,
    assign_line,
    expire_bindings,
    where_was,
    who_was_at,
)
from integrations.observations import BindingSeen, BindingSource

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

JOHN_MARY_CARL = {
    "SEP001122334455": ("John", ["9001", "9002", "9003"]),
    "SEP0011223344AA": ("Mary", ["9002", "9001", "9003"]),
    "SEP0011223344BB": ("Carl", ["9003", "9002"]),
}


def make_phone(device: str, protocol: str = "sccp", **fields: object) -> Phone:
    return Phone.objects.create(device_name=device, protocol=protocol, **fields)


def build_example() -> dict[str, Phone]:
    """The example that comes with the rules, built line by line through the service."""
    phones = {}
    for device, (person, numbers) in JOHN_MARY_CARL.items():
        phone = make_phone(device)
        for line_number, number in enumerate(numbers, start=1):
            assign_line(phone, line_number, number)
        agent = Agent.objects.create(name=person)
        Extension.objects.filter(number=numbers[0]).update(agent=agent)
        phones[person] = phone
    return phones


def seen(
    number: str,
    ip: str,
    minutes: float = 0,
    source: BindingSource = BindingSource.SIP_REGISTER,
    **fields: object,
) -> BindingSeen:
    return BindingSeen(
        extension=number,
        ip=ip,
        source=source,
        seen_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


@pytest.mark.django_db
class TestLineRules:
    def test_the_john_mary_carl_example_validates(self) -> None:
        phones = build_example()
        lines = {
            (line.phone.device_name, line.line_number, line.extension.number)
            for line in LineAppearance.objects.select_related("phone", "extension")
        }
        assert len(lines) == 8
        assert ("SEP0011223344AA", 2, "9001") in lines
        assert phones["Mary"].holder.name == "Mary"
        assert Extension.objects.count() == 3

    @pytest.mark.parametrize(("number", "holder"), [("9001", "John"), ("9002", "Mary")])
    def test_it_refuses_a_further_line_one_and_names_the_phone(
        self, number: str, holder: str
    ) -> None:
        build_example()
        fourth = make_phone("SEP0011223344DD")
        with pytest.raises(ValidationError) as refusal:
            assign_line(fourth, 1, number)
        device = {"John": "SEP001122334455", "Mary": "SEP0011223344AA"}[holder]
        assert refusal.value.messages == [
            f"Extension {number} is already line 1 on phone {device} ({holder}). An extension "
            "can be line 1 on one phone only (rule R2); it may be line 2 or higher on any "
            "number of phones."
        ]
        assert not fourth.lines.exists()

    def test_line_two_and_up_is_allowed_on_any_number_of_phones(self) -> None:
        build_example()
        for index in range(5):
            phone = make_phone(f"SEP00112233450{index}")
            assign_line(phone, 2, "9001")
        assert LineAppearance.objects.filter(extension__number="9001", line_number=2).count() == 6

    def test_it_refuses_one_extension_twice_on_a_phone(self) -> None:
        phone = make_phone("SEP001122334455")
        assign_line(phone, 1, "9001")
        with pytest.raises(ValidationError) as refusal:
            assign_line(phone, 2, "9001")
        assert "already line 1 on phone SEP001122334455" in refusal.value.messages[0]
        assert "at most once on a phone" in refusal.value.messages[0]

    def test_it_refuses_a_second_extension_on_a_taken_line(self) -> None:
        phone = make_phone("SEP001122334455")
        assign_line(phone, 2, "9002")
        with pytest.raises(ValidationError) as refusal:
            assign_line(phone, 2, "9005")
        assert refusal.value.messages == [
            "Phone SEP001122334455 already has a line 2 (extension 9002); each line of a "
            "phone rings for one extension."
        ]

    def test_the_database_refuses_line_one_twice_even_without_validation(self) -> None:
        # The constraint is the contract; validation only words it.
        from django.db import IntegrityError, transaction

        build_example()
        fourth = make_phone("SEP0011223344DD")
        with pytest.raises(IntegrityError), transaction.atomic():
            LineAppearance.objects.create(
                phone=fourth, line_number=1, extension=Extension.objects.get(number="9001")
            )

    def test_a_duplicate_extension_names_where_it_is_used(self) -> None:
        build_example()
        with pytest.raises(ValidationError) as refusal:
            Extension(number="9001").full_clean()
        assert refusal.value.message_dict["number"] == [
            "Extension 9001 already exists (line 1 on phone SEP001122334455, line 2 on phone "
            "SEP0011223344AA). Every extension in QMS is unique (rule R1)."
        ]


@pytest.mark.django_db
class TestExactNumbers:
    def test_01234_and_1234_are_two_extensions(self) -> None:
        phone = make_phone("SEP001122334455")
        assign_line(phone, 1, "01234")
        assign_line(phone, 2, "1234")
        assert sorted(Extension.objects.values_list("number", flat=True)) == ["01234", "1234"]

    @pytest.mark.parametrize("number", ["+4930123456", "*67", "#31#", "6175551212"])
    def test_it_keeps_numbers_exactly_as_given(self, number: str) -> None:
        assign_line(make_phone("SEP001122334455"), 1, number)
        assert Extension.objects.get().number == number

    @pytest.mark.parametrize(
        ("number", "reason"),
        [
            ("617-555-1212", "formatting characters (-)"),
            ("(617)5551212", "formatting characters (( ))"),
            ("617.555.1212", "formatting characters (.)"),
            ("90 01", "white space"),
            (" 9001", "white space"),
            ("9001\t", "white space"),
            ("", "cannot be empty"),
            ("1+2", "digits, * and # with an optional leading +"),
        ],
    )
    def test_it_refuses_what_the_pbx_would_not_write(self, number: str, reason: str) -> None:
        with pytest.raises(ValidationError) as refusal:
            assign_line(make_phone("SEP001122334455"), 1, number)
        message = refusal.value.messages[0]
        assert reason in message
        assert not Extension.objects.exists()

    def test_formatting_refusals_say_qms_must_match_the_pbx(self) -> None:
        with pytest.raises(ValidationError) as refusal:
            assign_line(make_phone("SEP001122334455"), 1, "617-555-1212")
        assert "QMS must match the PBX exactly" in refusal.value.messages[0]

    def test_a_sip_user_name_is_a_line_only_on_sip_and_lync_phones(self) -> None:
        assign_line(make_phone("sip-reception", protocol="sip"), 1, "reception")
        assign_line(make_phone("lync-desk", protocol="lync"), 2, "reception")
        with pytest.raises(ValidationError) as refusal:
            assign_line(make_phone("SEP001122334455"), 2, "reception")
        assert refusal.value.messages == [
            "Extension reception is a SIP user name; it can only be a line on a SIP or Lync "
            "phone, and SEP001122334455 is Cisco SCCP."
        ]


@pytest.mark.django_db
class TestBindings:
    def test_an_observation_moves_the_agents_ip(self) -> None:
        build_example()
        outcome = apply_binding(seen("9001", "10.0.0.11"))
        assert outcome.action == "opened"
        john = Agent.objects.get(name="John")
        assert john.current_ip == "10.0.0.11"
        assert john.ip_updated_at == T0
        binding = outcome.binding
        assert binding.phone.device_name == "SEP001122334455"
        assert binding.line_number == 1
        assert Phone.objects.get(device_name="SEP001122334455").current_ip == "10.0.0.11"

    def test_the_same_observation_twice_only_bumps_last_seen(self) -> None:
        build_example()
        apply_binding(seen("9001", "10.0.0.11"))
        again = apply_binding(seen("9001", "10.0.0.11"))
        later = apply_binding(seen("9001", "10.0.0.11", minutes=5, expires_in=600))
        assert (again.action, later.action) == ("refreshed", "refreshed")
        binding = Binding.objects.get()
        assert binding.first_seen == T0
        assert binding.last_seen == T0 + timedelta(minutes=5)
        assert binding.expires_at == T0 + timedelta(minutes=15)

    def test_mobility_closes_the_old_binding_and_keeps_history(self) -> None:
        build_example()
        desk = make_phone("hot-desk", protocol="sip", current_ip="10.0.0.13")
        apply_binding(seen("9001", "10.0.0.11"))
        outcome = apply_binding(seen("9001", "10.0.0.13", minutes=60))
        assert outcome.action == "moved"
        assert Agent.objects.get(name="John").current_ip == "10.0.0.13"
        old, new = Binding.objects.order_by("first_seen")
        assert (old.ip, old.end_reason, old.ended_at) == (
            "10.0.0.11",
            "moved",
            T0 + timedelta(minutes=60),
        )
        assert (new.ip, new.phone, new.ended_at) == ("10.0.0.13", desk, None)

    def test_history_resolves_last_weeks_call_to_who_was_there_then(self) -> None:
        build_example()
        week = 60 * 24 * 7
        apply_binding(seen("9001", "10.0.0.11", expires_in=86400 * 30))
        # A week later DHCP has handed John's phone a new address and his old one to Carl's.
        apply_binding(seen("9001", "10.0.0.13", minutes=week, expires_in=86400))
        apply_binding(seen("9003", "10.0.0.11", minutes=week + 1, expires_in=86400))
        monday = who_was_at("10.0.0.11", T0 + timedelta(hours=1))
        next_week = who_was_at("10.0.0.11", T0 + timedelta(days=7, hours=1))
        assert (monday.extension_number, monday.agent.name) == ("9001", "John")
        assert (next_week.extension_number, next_week.agent.name) == ("9003", "Carl")
        assert next_week.phone.device_name == "SEP0011223344BB"
        assert who_was_at("10.0.0.11", T0 - timedelta(hours=1)) is None

    def test_a_line_two_sighting_does_not_move_the_owner(self) -> None:
        phones = build_example()
        Phone.objects.filter(pk=phones["Mary"].pk).update(current_ip="10.0.0.12")
        apply_binding(seen("9001", "10.0.0.11"))
        outcome = apply_binding(seen("9001", "10.0.0.12", minutes=1))
        assert outcome.action == "opened"
        assert outcome.binding.line_number == 2
        assert Agent.objects.get(name="John").current_ip == "10.0.0.11"
        assert Binding.objects.filter(ended_at__isnull=True).count() == 2
        # A call at Mary's phone on its line 2 is Mary's: she is the person at the phone.
        assert who_was_at("10.0.0.12", T0 + timedelta(minutes=2)).agent.name == "Mary"

    def test_where_an_extension_was_prefers_its_line_one_and_follows_history(self) -> None:
        phones = build_example()
        Phone.objects.filter(pk=phones["Mary"].pk).update(current_ip="10.0.0.12")
        apply_binding(seen("9001", "10.0.0.11", expires_in=86400 * 30))
        # Later 9001 also shows as Mary's line 2: newer, but line 1 still says where it is.
        apply_binding(seen("9001", "10.0.0.12", minutes=1, expires_in=86400))
        assert where_was("9001", T0 + timedelta(minutes=2)) == "10.0.0.11"
        assert where_was("9001", T0 - timedelta(minutes=1)) is None
        assert where_was("9009", T0 + timedelta(minutes=2)) is None

    def test_a_late_observation_never_overrides_a_newer_one(self) -> None:
        build_example()
        apply_binding(seen("9001", "10.0.0.13", minutes=10))
        late = apply_binding(seen("9001", "10.0.0.11", minutes=5))
        assert late.action == "stale"
        assert Agent.objects.get(name="John").current_ip == "10.0.0.13"
        assert list(Binding.objects.values_list("ip", "ended_at")) == [("10.0.0.13", None)]

    def test_unregistration_ends_the_binding_and_clears_the_agent(self) -> None:
        build_example()
        apply_binding(seen("9001", "10.0.0.11"))
        outcome = apply_binding(seen("9001", "10.0.0.11", minutes=3, unregister=True))
        assert outcome.action == "unregistered"
        binding = Binding.objects.get()
        assert (binding.end_reason, binding.ended_at) == (
            "unregistered",
            T0 + timedelta(minutes=3),
        )
        assert Agent.objects.get(name="John").current_ip is None

    def test_an_unregistration_for_an_unknown_binding_is_ignored(self) -> None:
        outcome = apply_binding(seen("9001", "10.0.0.11", unregister=True))
        assert outcome.action == "ignored"
        assert not Binding.objects.exists()

    def test_expiry_closes_bindings_at_their_expiry_time(self) -> None:
        build_example()
        apply_binding(seen("9001", "10.0.0.11", expires_in=60))
        apply_binding(seen("9002", "10.0.0.12", expires_in=3600))
        assert expire_bindings(T0 + timedelta(minutes=10)) == 1
        closed = Binding.objects.get(extension_number="9001")
        assert (closed.end_reason, closed.ended_at) == ("expired", T0 + timedelta(seconds=60))
        assert Agent.objects.get(name="John").current_ip is None
        assert Agent.objects.get(name="Mary").current_ip == "10.0.0.12"

    def test_two_phones_announcing_line_one_raise_a_conflict_not_an_exception(self) -> None:
        build_example()
        first = apply_binding(
            seen(
                "9001",
                "10.0.0.11",
                source=BindingSource.SCCP,
                device="SEP001122334455",
                line_number=1,
            )
        )
        second = apply_binding(
            seen(
                "9001",
                "10.0.0.99",
                minutes=1,
                source=BindingSource.SCCP,
                device="SEP00112233EEEE",
                line_number=1,
            )
        )
        assert second.action == "conflict"
        conflict = BindingConflict.objects.get()
        assert conflict.resolved_at is None
        assert {conflict.first_binding.ip, conflict.second_binding.ip} == {
            "10.0.0.11",
            "10.0.0.99",
        }
        assert Binding.objects.filter(ended_at__isnull=True).count() == 2
        # When one phone lets go, the conflict resolves by itself.
        apply_binding(
            seen(
                "9001",
                "10.0.0.99",
                minutes=2,
                source=BindingSource.SCCP,
                device="SEP00112233EEEE",
                unregister=True,
            )
        )
        conflict.refresh_from_db()
        assert conflict.resolved_at == T0 + timedelta(minutes=2)
        assert first.binding.pk in Binding.objects.filter(ended_at__isnull=True).values_list(
            "pk", flat=True
        )

    def test_two_ips_taking_turns_with_one_extension_is_a_conflict(self) -> None:
        build_example()
        apply_binding(seen("9001", "10.0.0.11", expires_in=3600))
        assert apply_binding(seen("9001", "10.0.0.50", minutes=1)).action == "moved"
        assert apply_binding(seen("9001", "10.0.0.11", minutes=2)).action == "conflict"
        assert BindingConflict.objects.filter(resolved_at__isnull=True).count() == 1

    def test_moving_back_after_the_old_claim_expired_is_plain_mobility(self) -> None:
        build_example()
        apply_binding(seen("9001", "10.0.0.11", expires_in=60))
        apply_binding(seen("9001", "10.0.0.50", minutes=5, expires_in=3600))
        assert apply_binding(seen("9001", "10.0.0.11", minutes=30)).action == "moved"
        assert not BindingConflict.objects.exists()

    def test_an_unknown_number_is_kept_as_seen_but_not_configured(self) -> None:
        build_example()
        outcome = apply_binding(seen("6175551234", "10.0.0.77"))
        assert outcome.binding.extension is None
        assert Binding.objects.filter(extension_number="6175551234").exists()
        assert Agent.objects.count() == 3
        assert not Extension.objects.filter(number="6175551234").exists()

    def test_a_static_ip_phone_is_identified_by_its_address(self) -> None:
        phone = make_phone("tapi-lobby", protocol="tapi", static_ip=True, configured_ip="10.0.0.50")
        assign_line(phone, 1, "9007")
        Extension.objects.filter(number="9007").update(agent=Agent.objects.create(name="Gus"))
        found = who_was_at("10.0.0.50", T0)
        assert (found.phone, found.agent.name, found.source) == (phone, "Gus", "static")

    def test_a_static_phone_keeps_its_configured_ip_when_seen_elsewhere(self) -> None:
        phone = make_phone(
            "tapi-lobby",
            protocol="tapi",
            static_ip=True,
            configured_ip="10.0.0.50",
            current_ip="10.0.0.50",
        )
        assign_line(phone, 1, "9007")
        apply_binding(seen("9007", "10.0.0.51", device="tapi-lobby", line_number=1))
        phone.refresh_from_db()
        assert phone.current_ip == "10.0.0.50"
        assert phone.last_heard_at == T0


class TestSuggestions:
    def test_a_configured_suffix_or_prefix_is_suggested_longest_first(self) -> None:
        configured = {"1234", "51234", "6175", "9001", "4"}
        assert suggest("6175551234", configured) == ["51234", "1234", "6175"]

    def test_nothing_is_suggested_for_an_unrelated_number(self) -> None:
        assert suggest("6175551234", {"9001", "55512"}) == []


@pytest.mark.django_db
class TestEncryptedSignalling:
    def test_a_tls_phone_is_listed_until_something_else_teaches_its_address(self) -> None:
        from extensions.health import directory_health
        from extensions.services import note_encrypted_signalling
        from integrations.observations import EncryptedSignallingSeen

        note_encrypted_signalling(EncryptedSignallingSeen("10.0.0.21", "sip-tls", T0))
        note_encrypted_signalling(
            EncryptedSignallingSeen("10.0.0.21", "sip-tls", T0 + timedelta(minutes=5))
        )
        listed = directory_health().encrypted
        assert [(item.seen.ip, item.seen.last_seen) for item in listed] == [
            ("10.0.0.21", T0 + timedelta(minutes=5))
        ]
        phone = make_phone("lobby", protocol="sip", static_ip=True, configured_ip="10.0.0.21")
        assert directory_health().encrypted == []
        phone.delete()
        apply_binding(seen("9001", "10.0.0.21"))
        assert directory_health().encrypted == []


@pytest.mark.django_db
class TestLyncForms:
    """A Lync user written three ways in one INVITE lands on the form the directory has."""

    @pytest.mark.parametrize("configured", ["+14255550100", "100", "alice"])
    def test_the_configured_form_of_the_user_is_used(self, configured: str) -> None:
        phone = make_phone("lync-alice", protocol="lync")
        assign_line(phone, 1, configured)
        observed = seen(
            "alice", "10.0.0.31", source=BindingSource.LYNC, aliases=("100", "+14255550100")
        )
        outcome = apply_binding(observed)
        assert outcome.binding.extension_number == configured
        assert outcome.binding.extension.number == configured

    def test_with_no_form_configured_the_primary_form_is_kept(self) -> None:
        outcome = apply_binding(seen("alice", "10.0.0.31", aliases=("100", "+14255550100")))
        assert outcome.binding.extension_number == "alice"
        assert outcome.binding.extension is None
