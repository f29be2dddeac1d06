"""Bindings come from the call system, not from callers (issue 11 §2, audit H2 and M2).

Each case is a capture written here and imported with `import_pcap` on PostgreSQL: an
outside caller claiming a do-not-record extension, a phone's user spoofing a colleague's
number, a forged REGISTER and 200 OK, a gateway relaying many numbers.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from extensions.directory_view import known_phone_ips
from extensions.models import Agent, Binding, CallServer, DisputedClaim, Extension, Phone
from extensions.services import apply_binding, assign_line
from integrations.observations import BindingSeen, BindingSource
from recorder.capture.synthesis import rtp, sdp, sip, udp, write_pcap
from recorder.models import Call, Recording

JOHN_PHONE = "10.20.0.11"
DANA_PHONE = "10.20.0.14"
REGISTRAR = "10.20.0.2"
GATEWAY = "10.20.9.1"
ATTACKER = "10.66.6.6"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()

pytestmark = pytest.mark.usefixtures("postgresql")


def call_frames(
    call_id: str, caller: tuple[str, str], callee: tuple[str, str], start: float
) -> list[tuple[float, bytes]]:
    """An answered one-second call with RTP both ways: caller (number, ip) to callee."""
    (caller_number, caller_ip), (callee_number, callee_ip) = caller, callee
    via = [f"Via: SIP/2.0/UDP {caller_ip}:5060;branch=z9hG4bK{call_id}"]
    ends = [
        f"From: <sip:{caller_number}@pbx>;tag=a",
        f"To: <sip:{callee_number}@pbx>",
        f"Call-ID: {call_id}",
    ]
    answered = [ends[0], f"To: <sip:{callee_number}@pbx>;tag=b", ends[2]]
    invite = sip(f"INVITE sip:{callee_number}@{callee_ip} SIP/2.0",
                 via + ends + ["CSeq: 1 INVITE", f"Contact: <sip:{caller_number}@{caller_ip}>"],
                 sdp(caller_ip, 16384))  # fmt: skip
    contact = f"Contact: <sip:{callee_number}@{callee_ip}>"
    ok = sip("SIP/2.0 200 OK", [*via, *answered, "CSeq: 1 INVITE", contact], sdp(callee_ip, 30000))
    bye = sip(f"BYE sip:{callee_number}@{callee_ip} SIP/2.0", via + answered + ["CSeq: 2 BYE"])
    frames = [(start, udp(caller_ip, 5060, callee_ip, 5060, invite)),
              (start + 0.01, udp(callee_ip, 5060, caller_ip, 5060, ok))]  # fmt: skip
    for tick in range(50):
        voice = rtp(tick, tick * 160, 0x7, b"\x00\x7f" * 80)
        at = start + 0.1 + tick * 0.02
        frames.append((at, udp(caller_ip, 16384, callee_ip, 30000, voice)))
        frames.append((at, udp(callee_ip, 30000, caller_ip, 16384, voice)))
    frames.append((start + 1.2, udp(caller_ip, 5060, callee_ip, 5060, bye)))
    return frames


def register_frames(
    number: str, phone_ip: str, answered_by: str, at: float
) -> list[tuple[float, bytes]]:
    """A REGISTER from `phone_ip` and a 200 OK sent from `answered_by`."""
    headers = [
        f"Via: SIP/2.0/UDP {phone_ip}:5060;branch=z9hG4bKreg{number}",
        f"From: <sip:{number}@pbx>;tag=r",
        f"To: <sip:{number}@pbx>",
        f"Call-ID: reg-{number}-{phone_ip}",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:{number}@{phone_ip}>",
        "Expires: 3600",
    ]
    register = sip("REGISTER sip:pbx SIP/2.0", headers)
    ok = sip("SIP/2.0 200 OK", headers)
    return [
        (at, udp(phone_ip, 5060, REGISTRAR, 5060, register)),
        (at + 0.01, udp(answered_by, 5060, phone_ip, 5060, ok)),
    ]


def imported(tmp_path: Path, frames: list[tuple[float, bytes]]) -> str:
    capture = tmp_path / "capture.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    output = io.StringIO()
    call_command("import_pcap", str(capture), stdout=output)
    return output.getvalue()


def person(name: str, number: str, device: str, do_not_record: bool = False) -> Agent:
    agent = Agent.objects.create(name=name)
    assign_line(Phone.objects.create(device_name=device, protocol="sip"), 1, number)
    Extension.objects.filter(number=number).update(agent=agent, do_not_record=do_not_record)
    return agent


def registered(number: str, ip: str, at: float) -> None:
    seen_at = datetime.fromtimestamp(at, UTC)
    apply_binding(
        BindingSeen(number, ip, BindingSource.SIP_REGISTER, seen_at, 3600, authority=REGISTRAR)
    )


@pytest.fixture
def office() -> dict[str, Agent]:
    """John (9001) and Dana (9004, do-not-record), each registered at their own phone."""
    people = {
        "john": person("John", "9001", "SEP-JOHN"),
        "dana": person("Dana", "9004", "SEP-DANA", do_not_record=True),
    }
    registered("9001", JOHN_PHONE, START - 60)
    registered("9004", DANA_PHONE, START - 60)
    return people


def open_binding(number: str) -> Binding:
    return Binding.objects.get(extension_number=number, ended_at__isnull=True)


def test_an_outside_caller_claiming_a_do_not_record_number_is_recorded_for_who_took_it(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    imported(tmp_path, call_frames("spoof-1", ("9004", GATEWAY), ("9001", JOHN_PHONE), START))
    recording = Recording.objects.get(call_id="spoof-1")
    assert (recording.agent, recording.extension) == (office["john"], "9001")
    assert recording.status == Recording.Status.COMPLETE
    # Dana's binding stayed at her phone, and the gateway did not become a phone.
    assert open_binding("9004").ip == DANA_PHONE
    assert GATEWAY not in known_phone_ips()
    dispute = DisputedClaim.objects.get(extension_number="9004", ip=GATEWAY)
    assert (dispute.reason, dispute.held_at) == (DisputedClaim.Reason.STRONGER_HELD, DANA_PHONE)


def test_a_phone_whose_user_spoofs_a_do_not_record_number_is_recorded_as_itself(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    imported(tmp_path, call_frames("spoof-2", ("9004", JOHN_PHONE), ("+15550100", GATEWAY), START))
    recording = Recording.objects.get(call_id="spoof-2")
    assert (recording.agent, recording.extension) == (office["john"], "9001")
    assert open_binding("9004").ip == DANA_PHONE


def test_a_do_not_record_phone_is_not_recorded_whoever_it_calls(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    imported(tmp_path, call_frames("dana-out", ("9004", DANA_PHONE), ("+15550100", GATEWAY), START))
    assert Call.objects.filter(call_id="dana-out").exists()
    assert not Recording.objects.filter(call_id="dana-out").exists()


def test_a_call_to_a_do_not_record_number_is_not_recorded(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    imported(tmp_path, call_frames("to-dana", ("+15550100", GATEWAY), ("9004", DANA_PHONE), START))
    assert Call.objects.filter(call_id="to-dana").exists()
    assert not Recording.objects.filter(call_id="to-dana").exists()


def test_a_register_answered_by_no_call_server_moves_nobody(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    CallServer.objects.create(network=REGISTRAR, kind=CallServer.Kind.REGISTRAR)
    frames = register_frames("9001", ATTACKER, ATTACKER, START)
    frames += call_frames("after", ("9001", ATTACKER), ("+15550100", GATEWAY), START + 5)
    imported(tmp_path, frames)
    assert open_binding("9001").ip == JOHN_PHONE
    office["john"].refresh_from_db()
    assert office["john"].current_ip == JOHN_PHONE
    claim = DisputedClaim.objects.get(extension_number="9001", ip=ATTACKER, source="sip-register")
    assert (claim.reason, claim.vouched_by) == (DisputedClaim.Reason.UNTRUSTED_SERVER, ATTACKER)
    # The attacker's own call is not filed under John.
    assert not Recording.objects.filter(call_id="after", agent=office["john"]).exists()


def test_a_register_answered_by_the_configured_registrar_still_moves_the_extension(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    CallServer.objects.create(network="10.20.0.0/28", kind=CallServer.Kind.REGISTRAR)
    imported(tmp_path, register_frames("9001", "10.20.0.31", REGISTRAR, START))
    assert open_binding("9001").ip == "10.20.0.31"  # R5: mobility from the call system
    assert not DisputedClaim.objects.exists()


def test_while_nothing_is_configured_the_registrar_is_learned(
    office: dict[str, Agent], tmp_path: Path
) -> None:
    imported(tmp_path, register_frames("9001", "10.20.0.31", REGISTRAR, START))
    assert open_binding("9001").ip == "10.20.0.31"
    learned = CallServer.objects.get()
    assert (learned.network, learned.kind, learned.learned) == (
        f"{REGISTRAR}/32",
        CallServer.Kind.REGISTRAR,
        True,
    )


def test_a_register_never_moves_an_extension_that_sccp_holds_at_its_desk_phone(
    tmp_path: Path,
) -> None:
    john = person("John", "9001", "SEP-JOHN")
    at = datetime.fromtimestamp(START - 60, UTC)
    apply_binding(
        BindingSeen("9001", JOHN_PHONE, BindingSource.SCCP, at, 3600, device="SEP-JOHN",
                    line_number=1, authority="10.20.0.3")
    )  # fmt: skip
    imported(tmp_path, register_frames("9001", ATTACKER, ATTACKER, START))
    assert open_binding("9001").ip == JOHN_PHONE
    john.refresh_from_db()
    assert john.current_ip == JOHN_PHONE
    assert Phone.objects.get(device_name="SEP-JOHN").current_ip == JOHN_PHONE
    claim = DisputedClaim.objects.get(extension_number="9001", ip=ATTACKER)
    assert claim.reason == DisputedClaim.Reason.STRONGER_HELD


def test_an_address_whose_calls_claim_many_extensions_is_a_gateway_and_teaches_nothing(
    tmp_path: Path,
) -> None:
    for number, name in (("9101", "Ann"), ("9102", "Bob"), ("9103", "Cy")):
        person(name, number, f"SEP-{name}")
    frames = []
    for offset, number in enumerate(("9101", "9102", "9103")):
        frames += call_frames(f"relay-{number}", (number, GATEWAY), ("+15550100", "10.30.0.9"),
                              START + offset * 5)  # fmt: skip
    imported(tmp_path, frames)
    gateway = CallServer.objects.get(network=f"{GATEWAY}/32")
    assert (gateway.kind, gateway.learned) == (CallServer.Kind.GATEWAY, True)
    assert not Binding.objects.filter(ip=GATEWAY, ended_at__isnull=True).exists()
    assert set(Binding.objects.filter(ip=GATEWAY).values_list("end_reason", flat=True)) == {
        Binding.EndReason.DISPUTED
    }
    assert DisputedClaim.objects.get(extension_number="9103").reason == "gateway"
    assert GATEWAY not in known_phone_ips()


def test_a_configured_gateway_teaches_no_binding_at_all(tmp_path: Path) -> None:
    person("Ann", "9101", "SEP-Ann")
    CallServer.objects.create(network=GATEWAY, kind=CallServer.Kind.GATEWAY)
    imported(tmp_path, call_frames("gw", ("9101", GATEWAY), ("+15550100", "10.30.0.9"), START))
    assert not Binding.objects.filter(ip=GATEWAY).exists()
    assert DisputedClaim.objects.get(extension_number="9101").reason == "gateway"


def test_directory_health_shows_the_claims_not_applied_and_that_qms_is_learning(
    office: dict[str, Agent], tmp_path: Path, admin_client
) -> None:
    imported(tmp_path, call_frames("spoof-3", ("9004", GATEWAY), ("9001", JOHN_PHONE), START))
    page = admin_client.get(reverse("admin:directory_health")).content.decode()
    assert "Claims not applied (1)" in page
    assert GATEWAY in page and "a stronger source holds the extension elsewhere" in page
    assert "No call server is configured" in page
    CallServer.objects.create(network=REGISTRAR, kind=CallServer.Kind.REGISTRAR)
    page = admin_client.get(reverse("admin:directory_health")).content.decode()
    assert "No call server is configured" not in page
    changelist = admin_client.get(reverse("admin:extensions_disputedclaim_changelist"))
    assert changelist.status_code == 200 and "9004" in changelist.content.decode()


def test_a_call_on_a_phones_line_two_still_teaches_its_binding(tmp_path: Path) -> None:
    # R3: Mary's phone has John's 9001 as its line 2; Mary picks it up and calls out. The
    # claim moves nobody (a line 2+ binding never does), so the strength rule lets it be.
    mary_phone_ip = "10.20.0.21"
    person("John", "9001", "SEP-JOHN")
    person("Mary", "9002", "SEP-MARY")
    assign_line(Phone.objects.get(device_name="SEP-MARY"), 2, "9001")
    registered("9001", JOHN_PHONE, START - 60)
    registered("9002", mary_phone_ip, START - 60)
    frames = call_frames("line-2", ("9001", mary_phone_ip), ("+15550100", GATEWAY), START)
    imported(tmp_path, frames)
    bound = Binding.objects.filter(extension_number="9001", ended_at__isnull=True)
    assert sorted((row.ip, row.line_number) for row in bound) == [
        (JOHN_PHONE, 1),
        (mary_phone_ip, 2),
    ]
    assert not DisputedClaim.objects.exists()
