"""Every public capture through `import_pcap`: what each must yield, end to end.

The captures are third-party files read in place (QMS_PUBLIC_CAPTURES); their contents are
described in that folder's README. Each case states the summary the command prints, the
bindings that land in the directory and the calls that land in the call log. Ext/IP
learned from a call lands only for configured extensions or known phones (see
extensions.services.learns_from_call), so cases that expect call bindings configure the
directory first, as an admin would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from django.core.management import call_command

from extensions.models import Binding, Phone
from extensions.services import assign_line
from recorder.models import Call


@dataclass
class Expected:
    summary: list[str]
    bindings: set[tuple[str, str, str, bool]] = field(default_factory=set)
    # None: the calls are checked by a test of their own below.
    calls: list[tuple[str, str, str, str, bool]] | None = field(default_factory=list)
    configure: list[tuple[str, str, int, str]] = field(default_factory=list)


CASES = {
    "heplify-erspan_sip_ipv4_udp.pcapng": Expected(
        summary=["SIP messages: 140", "calls seen: 3", "decode errors: none"],
        # Configuring 20008909 makes 192.168.1.191 a known phone, whose other number in
        # this capture is then learned too; the far end's stays unknown.
        configure=[("omnipcx-8001", "sip", 1, "20008909")],
        bindings={
            ("20008909", "192.168.1.191", "sip-call", True),
            ("20008910", "192.168.1.191", "sip-call", True),
        },
        # The two calls 20008909 -> 20008910 are the PBX's two legs of one call, both
        # naming 192.168.1.222:38764 and :12842 (issue 14's pattern 2); the capture holds
        # no RTP, so three answered calls ended by BYE, and no recordings, is all of it.
        calls=[
            ("sip", "20008777", "20008909", "bye", True),
            ("sip", "20008909", "20008910", "bye", True),
            ("sip", "20008909", "20008910", "bye", True),
        ],
    ),
    "heplify-rtp_rtcp_sip_ipv4_udp.pcap": Expected(
        summary=[
            "SIP messages: 14",
            "calls seen: 2",
            # tshark: the relay 200.57.7.196:40376 and francisco's 8000 carry the answered
            # call's 891 + 548; the relay's other leg (40378 with 200.57.7.199:4800, whose
            # signalling is not in the capture) the same 891 + 548 again, and 6 packets go
            # to 200.57.7.196:40362, which no SDP names.
            "RTP packets: 1439 matched to calls, 1445 unmatched",
            "decode errors: none",
        ],
        bindings={
            ("Ivan", "200.57.7.205", "sip-register", True),
            ("francisco", "200.57.7.204", "sip-register", True),
        },
        calls=[
            ("sip", "", "francisco", "capture-ended", True),
            ("sip", "5514540002", "francisco", "capture-ended", False),
        ],
    ),
    "heplify-sip_ipv4_tcp.pcap": Expected(
        summary=["SIP messages: 7", "RTP packets: 66 matched to calls, 0 unmatched"],
        configure=[("ipp-101", "sip", 1, "101"), ("ipp-201", "sip", 1, "201")],
        bindings={
            ("101", "10.33.6.100", "sip-call", True),
            ("201", "10.33.6.101", "sip-call", True),
        },
        calls=[("sip", "101", "201", "bye", True)],
    ),
    "heplify-sip_ipv4_tcp_fragmented.pcap": Expected(
        summary=["SIP messages: 406", "calls seen: 38", "decode errors: none"],
        calls=None,
    ),
    "heplify-sip_ipv4_tcp_retrans.pcap": Expected(
        summary=["SIP messages: 8", "calls seen: 0", "decode errors: none"],
        bindings={("1001", "172.168.0.252", "sip-register", True)},
    ),
    "heplify-sip_ipv6_udp.pcap": Expected(
        summary=["SIP messages: 6", "decode errors: none"],
        configure=[("snom-9876", "sip", 1, "9876")],
        bindings={("9876", "fe80::21a:a0ff:fe07:32e0", "sip-call", True)},
        # The capture's timestamps jump by years between messages, so the call times out
        # before its 200 OK, which then starts it again as a call picked up mid-way.
        calls=[
            ("sip", "9876", "4321", "timeout", False),
            ("sip", "9876", "4321", "timeout", True),
        ],
    ),
    "pyskinny-cm2_register.pcapng": Expected(
        summary=["SCCP messages: 1298", "calls seen: 12", "decode errors: none"],
        bindings={
            ("1091", "10.102.172.11", "sccp", False),
            ("1092", "10.102.172.11", "sccp", False),
            ("1093", "10.102.172.11", "sccp", False),
        },
        calls=None,
    ),
    "pyskinny-cm_call_from_pyskinny_to_7912.pcapng": Expected(
        summary=[
            "SCCP messages: 65",
            "calls seen: 1",
            "RTP packets: 2975 matched to calls, 0 unmatched",
            # The far end's last packets, after on-hook: the call's, not a new one.
            "RTP arriving after its call ended (counted): 6",
            "decode errors: none",
        ],
        bindings={("1012", "10.102.10.209", "sccp", True)},
        calls=[("sccp", "1003", "1012", "onhook", True)],
    ),
    "pyskinny-cm_cap.pcapng": Expected(
        summary=["SCCP messages: 48", "decode errors: none"],
        bindings={("1012", "10.102.10.209", "sccp", True)},
        calls=[("sccp", "1012", "", "onhook", False)],
    ),
    "pyskinny-vphone_hold_unhold.pcap": Expected(
        summary=["SCCP messages: 16", "decode errors: sccp media-reception-without-port 1"],
        calls=[("sccp", "", "", "capture-ended", False)],
    ),
    "rtpparsing-forensic.pcap": Expected(
        summary=["SIP messages: 19", "RTP packets: 3113 matched to calls, 0 unmatched"],
        bindings={("555", "172.25.105.3", "sip-register", True)},
        calls=[("sip", "555", "1000", "bye", True)],
    ),
    "rtpparsing-interception.pcapng": Expected(
        summary=["SIP messages: 21", "calls seen: 3", "decode errors: none"],
        calls=[
            ("sip", "+46739883425", "+4960339285361", "bye", True),
            ("sip", "+491741880211", "+4960339285361", "bye", True),
            ("sip", "+31859027384", "+4960339285361", "bye", True),
        ],
    ),
    "rtpparsing-voip.pcap": Expected(
        summary=["SIP messages: 28", "calls seen: 1", "decode errors: none"],
        calls=[("sip", "107", "84254978362", "bye", True)],
    ),
    "rtppcap-SIP_DTMF2.pcap": Expected(
        summary=["SIP messages: 29", "calls seen: 2", "decode errors: none"],
        bindings={
            ("2502", "192.168.105.110", "sip-register", True),
            ("2503", "192.168.105.110", "sip-register", True),
            ("2504", "192.168.105.110", "sip-register", True),
        },
        calls=[
            ("sip", "2502", "2504", "603", False),
            ("sip", "2502", "2504", "capture-ended", True),
        ],
    ),
    "rtppcap-aaa.pcap": Expected(
        summary=[
            "SIP messages: 81",
            "calls seen: 4",
            # The phone's early media (192.168.1.2:30000 to the 183's 212.242.33.36:40392,
            # tshark: 9 packets) starts a second after the 480 that ended its call.
            "RTP arriving after its call ended (counted): 9",
            "decode errors: none",
        ],
        bindings={
            ("voi18062", "192.168.1.2", "sip-register", True),
            ("35104723", "192.168.1.2", "sip-register", True),
            ("816666", "192.168.1.2", "sip-call", True),
        },
        calls=[
            ("sip", "816666", "97239287044", "cancel", False),
            ("sip", "voi18062", "0097239287044", "403", False),
            ("sip", "35104723", "0097239287044", "403", False),
            ("sip", "35104723", "35104724", "480", False),
        ],
    ),
    "rtppcap-nb6-startup.pcap": Expected(
        summary=["SIP messages: 4", "calls seen: 0", "decode errors: none"],
        bindings={("+33360653674", "10.251.23.139", "sip-register", True)},
    ),
    "rtppcap-nb6-telephone.pcap": Expected(
        summary=[
            "SIP messages: 7",
            "RTP packets: 507 matched to calls, 0 unmatched",
            "RTP arriving after its call ended (counted): 2",
        ],
        calls=[("sip", "+33360653674", "147", "bye", True)],
    ),
    "rtppcap-sip-rtp-g722.pcap": Expected(
        summary=["SIP messages: 6", "RTP packets: 426 matched to calls, 0 unmatched"],
        calls=[("sip", "sipp", "test", "bye", True)],
    ),
    "rtppcap-sip-rtp-g729a.pcap": Expected(
        summary=["SIP messages: 6", "RTP packets: 426 matched to calls, 0 unmatched"],
        calls=[("sip", "sipp", "test", "bye", True)],
    ),
    "sipp-g711a.pcap": Expected(
        summary=[
            "SIP messages: 0",
            "calls seen: 0",
            "RTP packets: 0 matched to calls, 236 unmatched",
        ],
    ),
}


def test_every_public_capture_has_a_case(public_captures) -> None:
    files = {path.name for path in public_captures.iterdir() if path.suffix != ".md"}
    assert files == set(CASES)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_public_capture_yields_what_it_holds(public_captures, name: str) -> None:
    expected = CASES[name]
    for device, protocol, line_number, number in expected.configure:
        phone = Phone.objects.create(device_name=device, protocol=protocol)
        assign_line(phone, line_number, number)
    output = io.StringIO()
    call_command("import_pcap", str(public_captures / name), stdout=output)
    lines = output.getvalue().splitlines()
    for line in expected.summary:
        assert line in lines, f"{line!r} not in {lines}"
    bindings = {
        (binding.extension_number, binding.ip, binding.source, binding.active)
        for binding in Binding.objects.all()
    }
    assert bindings == expected.bindings
    if expected.calls is not None:
        calls = [
            (call.protocol, call.caller, call.callee, call.end_reason, call.answered_at is not None)
            for call in Call.objects.order_by("started_at", "pk")
        ]
        assert calls == expected.calls


# Calls refused with a challenge (401, 407) and tried again on their Call-ID (issue 14,
# pattern 1), as tshark shows them: the Call-ID, how the retry ended, and the seconds from
# the first INVITE to the retry's 200 (None: never answered) and to the call's end.
RETRIED_CALLS = {
    "rtppcap-aaa.pcap": [
        # 407 at 694.61 s, retried 32.5 s later, 403 to the retry at 727.29 s.
        ("85216695-42dcdb1d@192.168.1.2", "403", None, 34.334),
        # 407 at 1307.84 s, retried 51.2 s later, 403 to the retry at 1359.22 s.
        ("24487391-449bf2a0@192.168.1.2", "403", None, 51.528),
        # 407 at 1425.76 s, retried 17.3 s later, 183 and then 480 at 1443.49 s.
        ("11894297-4432a9f8@192.168.1.2", "480", None, 17.889),
    ],
    # 401 at 201.315 s, retried 4 ms later, 200 at 201.326 s, BYE at 240.105 s.
    "rtpparsing-forensic.pcap": [
        ("MzI4NzE5ZDVmNDk0OTBkN2M2MzVhNDI3NTkxZDgzN2M.", "bye", 0.012, 38.791)
    ],
    # 20008909 calls 20008910 through the SBC: 407 on both of its legs at 24.32 s, retried
    # at 24.36 s, the PBX's 200 at 28.065 s, BYE at 31.532 s.
    "heplify-erspan_sip_ipv4_udp.pcapng": [
        ("bf3880-0-16e4-5af571fa-38bc4ba4-5af571fa@101.231.48.19", "bye", 3.782, 7.249)
    ],
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(RETRIED_CALLS))
def test_a_call_retried_after_a_challenge_is_one_call_up_to_the_retry_s_end(
    public_captures, name: str
) -> None:
    call_command("import_pcap", str(public_captures / name), stdout=io.StringIO())
    for call_id, end_reason, answered_after, ended_after in RETRIED_CALLS[name]:
        # One row: the retry is the same call, not a second one.
        (call,) = Call.objects.filter(call_id=call_id)
        assert call.end_reason == end_reason, call_id
        assert seconds_after(call.started_at, call.answered_at) == answered_after, call_id
        assert seconds_after(call.started_at, call.ended_at) == ended_after, call_id


def seconds_after(start: datetime, moment: datetime | None) -> float | None:
    """To the millisecond, as the expectations are written."""
    return None if moment is None else round((moment - start).total_seconds(), 3)


@pytest.mark.django_db(transaction=True)
def test_the_sccp_lab_capture_keeps_three_devices_on_one_ip_apart(public_captures) -> None:
    call_command(
        "import_pcap", str(public_captures / "pyskinny-cm2_register.pcapng"), stdout=io.StringIO()
    )
    devices = {
        (binding.extension_number, binding.device)
        for binding in Binding.objects.filter(ip="10.102.172.11")
    }
    assert devices == {("1091", "pyskinny01"), ("1092", "pyskinny02"), ("1093", "pyskinny03")}
    # The lab's sessions end with the capture's resets, rejects and unregisters.
    assert not Binding.objects.filter(ended_at__isnull=True).exists()
    calls = Call.objects.all()
    assert calls.count() == 12
    assert {(call.caller, call.callee, call.end_reason) for call in calls} == {
        ("1091", "1092", "onhook")
    }


@pytest.mark.django_db(transaction=True)
def test_the_sbc_trunk_calls_teach_no_bindings_for_outside_numbers(public_captures) -> None:
    output = io.StringIO()
    call_command(
        "import_pcap", str(public_captures / "heplify-sip_ipv4_tcp_fragmented.pcap"), stdout=output
    )
    assert not Binding.objects.exists()
    assert "not a phone's (trunk or gateway)" in output.getvalue()
    assert Call.objects.count() == 38
    ends = [call.end_reason for call in Call.objects.all()]
    assert ends.count("bye") == 13 and ends.count("cancel") == 1 and ends.count("403") == 1
