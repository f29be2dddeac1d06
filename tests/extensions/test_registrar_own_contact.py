"""A registrar whose 200 to a REGISTER lists only its own Contact (issue 14, item 10).

Some registrars answer a REGISTER with their own Contact in the 200 instead of the bindings
of the address-of-record (RFC 3261 §10.3 step 8 asks for the latter). The binding is then
the REGISTER's Contact, matched to its 200 by Call-ID and CSeq, with the lifetime the 200
granted. Who may teach a binding does not change: only a trusted registrar's 200 does, and
the number is taken exactly as written (R4). Captures are written here and imported with
`import_pcap` on PostgreSQL.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command

from extensions.models import Agent, Binding, CallServer, DisputedClaim, Extension, Phone
from extensions.services import assign_line
from recorder.capture.synthesis import sip, udp, write_pcap

PHONE = "10.73.0.31"
REGISTRAR = "10.73.0.2"
ATTACKER = "10.73.6.6"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()

pytestmark = pytest.mark.usefixtures("postgresql")

# How the 200 states the lifetime it granted, and the lifetime that makes.
GRANTS = {
    "contact-parameter": ([], ";expires=600", 600),
    "expires-header": (["Expires: 900"], "", 900),
    "none": ([], "", 1800),  # the REGISTER's own Expires
}


def register_frames(
    number: str, grant: str, answered_by: str = REGISTRAR, at: float = START
) -> list[tuple[float, bytes]]:
    """The phone's REGISTER (Contact at its own address, Expires: 1800) and a 200 from
    `answered_by` that lists only the registrar's own Contact."""
    extra, contact_parameter, _ = GRANTS[grant]
    common = [
        f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bKreg{number}",
        f"From: <sip:{number}@{REGISTRAR}>;tag=r{number}",
        f"To: <sip:{number}@{REGISTRAR}>",
        f"Call-ID: reg-{number}@{PHONE}",
        "CSeq: 7 REGISTER",
    ]
    register = sip(
        f"REGISTER sip:{REGISTRAR} SIP/2.0",
        [*common, f"Contact: <sip:{number}@{PHONE}:5060>", "Expires: 1800"],
    )
    ok = sip(
        "SIP/2.0 200 OK",
        [*common, f"Contact: <sip:{REGISTRAR}:5060>{contact_parameter}", *extra],
    )
    return [
        (at, udp(PHONE, 5060, REGISTRAR, 5060, register)),
        (at + 0.01, udp(answered_by, 5060, PHONE, 5060, ok)),
    ]


def imported(tmp_path: Path, frames: list[tuple[float, bytes]]) -> None:
    capture = tmp_path / "capture.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    call_command("import_pcap", str(capture), stdout=io.StringIO())


@pytest.fixture
def john() -> Agent:
    """John, whose phone has 9001 on line 1 (the directory's; no binding yet)."""
    agent = Agent.objects.create(name="John")
    assign_line(Phone.objects.create(device_name="SEP-JOHN", protocol="sip"), 1, "9001")
    Extension.objects.filter(number="9001").update(agent=agent)
    return agent


@pytest.mark.parametrize("grant", list(GRANTS))
def test_the_register_contact_is_bound_for_the_lifetime_the_200_granted(
    john: Agent, tmp_path: Path, grant: str
) -> None:
    CallServer.objects.create(network=REGISTRAR, kind=CallServer.Kind.REGISTRAR)
    imported(tmp_path, register_frames("9001", grant))

    binding = Binding.objects.get(extension_number="9001", ended_at__isnull=True)
    assert (binding.ip, binding.source) == (PHONE, "sip-register")
    granted = timedelta(seconds=GRANTS[grant][2])
    assert binding.expires_at - binding.last_seen == granted
    # The registrar's own Contact teaches nothing about where it is: it is no phone.
    assert not Binding.objects.filter(ip=REGISTRAR).exists()


def test_a_200_from_an_untrusted_address_still_teaches_no_binding(
    john: Agent, tmp_path: Path
) -> None:
    CallServer.objects.create(network=REGISTRAR, kind=CallServer.Kind.REGISTRAR)
    imported(tmp_path, register_frames("9001", "contact-parameter", answered_by=ATTACKER))

    assert not Binding.objects.filter(extension_number="9001", ended_at__isnull=True).exists()
    claim = DisputedClaim.objects.get(extension_number="9001", ip=PHONE)
    assert claim.reason == DisputedClaim.Reason.UNTRUSTED_SERVER


def test_a_number_that_breaks_r4_is_no_binding_however_the_200_is_written(
    john: Agent, tmp_path: Path
) -> None:
    CallServer.objects.create(network=REGISTRAR, kind=CallServer.Kind.REGISTRAR)
    imported(tmp_path, register_frames("%209001", "contact-parameter"))

    assert not Binding.objects.exists()
