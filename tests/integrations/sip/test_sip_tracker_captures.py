"""What the SIP tracker must learn from each public capture that carries SIP.

Bindings are written (extension, ip, source, expires_in, unregister); call steps
(call_id, event, detail) where detail is the media each step announced (side@ip:port) or the
reason of an END.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from integrations.observations import BindingSeen, CallSignal, Observation
from integrations.sip.tracker import SipTracker
from tests.conftest import PUBLIC_CAPTURES, need
from tests.integrations.sip_packets import track


def capture(name: str) -> Path:
    path = PUBLIC_CAPTURES / name
    need(path.exists(), f"needs the public capture {path}")
    return path


def bindings(observations: list[Observation]) -> list[tuple[object, ...]]:
    return [
        (b.extension, b.ip, b.source.value, b.expires_in, b.unregister)
        for b in observations
        if isinstance(b, BindingSeen)
    ]


def steps(observations: list[Observation]) -> list[tuple[str, str, str]]:
    return [
        (s.call_id, s.event.value, detail(s)) for s in observations if isinstance(s, CallSignal)
    ]


def detail(signal: CallSignal) -> str:
    media = " ".join(f"{m.side.value}@{m.receive_at}" for m in signal.media)
    return signal.reason or media


def test_aaa_binds_only_the_registrations_the_registrar_accepted() -> None:
    tracker = SipTracker()
    observations = track(capture("rtppcap-aaa.pcap"), tracker)
    # 401/403 make nothing; the two `Expires: 0` unregisters were only ever challenged (401).
    assert [b for b in bindings(observations) if b[2] == "sip-register"] == [
        ("voi18062", "192.168.1.2", "sip-register", 1200, False),
        ("35104723", "192.168.1.2", "sip-register", 1200, False),
        ("35104723", "192.168.1.2", "sip-register", 1200, False),
    ]
    assert steps(observations) == [
        ("105090259-446faf7a@192.168.1.2", "start", "caller@192.168.1.2:30000"),
        ("105090259-446faf7a@192.168.1.2", "end", "cancel"),
        ("85216695-42dcdb1d@192.168.1.2", "start", "caller@192.168.1.2:30000"),
        ("85216695-42dcdb1d@192.168.1.2", "end", "403"),  # the 407 before it is a retry
        ("24487391-449bf2a0@192.168.1.2", "start", "caller@192.168.1.2:30000"),
        ("24487391-449bf2a0@192.168.1.2", "end", "403"),
        ("11894297-4432a9f8@192.168.1.2", "start", "caller@192.168.1.2:30000"),
        ("11894297-4432a9f8@192.168.1.2", "ringing", "callee@212.242.33.36:40392"),
        ("11894297-4432a9f8@192.168.1.2", "end", "480"),
    ]
    assert sum(tracker.errors.values()) == 0


def test_sip_dtmf2_learns_three_extensions_on_one_gateway_and_follows_the_hairpin() -> None:
    observations = track(capture("rtppcap-SIP_DTMF2.pcap"))
    gateway = "192.168.105.110"
    assert bindings(observations) == [
        ("2503", gateway, "sip-register", 3600, False),
        ("2502", gateway, "sip-register", 3600, False),
        ("2502", gateway, "sip-call", None, False),
        ("2504", gateway, "sip-register", 3600, False),
        ("2502", gateway, "sip-call", None, False),
        ("2504", gateway, "sip-call", None, False),  # the proxy's copy (Contact .105) is deduped
        ("2503", gateway, "sip-register", 3600, False),
        ("2502", gateway, "sip-register", 3600, False),
    ]
    # Both legs of the hairpin carry one Call-ID; the proxy's copies are retransmissions.
    assert steps(observations) == [
        ("5514@192.168.105.110", "start", ""),
        ("5514@192.168.105.110", "end", "603"),
        ("25672@192.168.105.110", "start", ""),
        ("25672@192.168.105.110", "ringing", ""),
        ("25672@192.168.105.110", "answer", "callee@192.168.105.110:4376"),
        ("25672@192.168.105.110", "media", "caller@192.168.105.110:4374"),  # late offer in ACK
    ]


def test_nb6_startup_binds_the_e164_aor_as_written_with_the_granted_expiry() -> None:
    observations = track(capture("rtppcap-nb6-startup.pcap"))
    assert bindings(observations) == [
        ("+33360653674", "10.251.23.139", "sip-register", 3171, False)
    ]


def test_heplify_udp_uses_the_granted_expires_and_follows_the_relayed_call() -> None:
    observations = track(capture("heplify-rtp_rtcp_sip_ipv4_udp.pcap"))
    # Requested 1800, granted `expires: 20`; Via received equals sent-by, so no NAT.
    assert bindings(observations) == [
        ("Ivan", "200.57.7.205", "sip-register", 20, False),
        ("francisco", "200.57.7.204", "sip-call", None, False),
        ("francisco", "200.57.7.204", "sip-register", 20, False),
        ("Ivan", "200.57.7.205", "sip-register", 20, False),
    ]
    first, second = "12013223@200.57.7.195", "12015624@200.57.7.195"
    assert steps(observations) == [
        (first, "start", "caller@200.57.7.196:40376"),  # the media relay
        (first, "ringing", ""),
        (first, "answer", "callee@200.57.7.204:8000"),
        (second, "start", "caller@200.57.7.196:40360"),
        (second, "ringing", ""),
    ]
    start = next(o for o in observations if isinstance(o, CallSignal))
    assert start.caller == ""  # From is <sip:200.57.7.195:55061;user=phone>: no user part


def test_voip_pcap_follows_the_answered_call_and_binds_no_unconfirmed_register() -> None:
    tracker = SipTracker()
    observations = track(capture("rtpparsing-voip.pcap"), tracker)
    call = "2d456948-fa5e1406-6ce4f293-ac498c84@192.168.5.10"
    assert steps(observations) == [
        (call, "start", "caller@192.168.5.10:8014"),
        (call, "answer", "callee@192.168.5.5:55068"),
        (call, "end", "bye"),
    ]
    assert bindings(observations) == [
        ("107", "192.168.5.10", "sip-call", None, False),
        ("84254978362", "192.168.5.5", "sip-call", None, False),
    ]
    # The REGISTER (NAT: received=96.253.133.162) got only a 401 before the capture ends;
    # its `epid` is Microsoft Response Point's, which is not Lync.
    last = max(o.at for o in observations if isinstance(o, CallSignal))
    assert tracker.expire(last + timedelta(seconds=70)) == []
    assert tracker.expired["register"] == 1


def test_forensic_binds_555_and_follows_the_one_call() -> None:
    observations = track(capture("rtpparsing-forensic.pcap"))
    call = "MzI4NzE5ZDVmNDk0OTBkN2M2MzVhNDI3NTkxZDgzN2M."
    # Asterisk's own 200 OK (Contact 1000@172.25.105.40) is not a phone: .40 is the registrar.
    assert bindings(observations) == [
        ("555", "172.25.105.3", "sip-register", 3600, False),
        ("555", "172.25.105.3", "sip-call", None, False),
    ]
    assert steps(observations) == [
        (call, "start", "caller@172.25.105.3:63184"),
        (call, "answer", "callee@172.25.105.40:18150"),
        (call, "end", "bye"),
    ]
    start = next(o for o in observations if isinstance(o, CallSignal))
    assert start.media[0].payload_types[0] == (107, "BV32/16000")


def test_nb6_telephone_gives_early_media_in_the_183() -> None:
    observations = track(capture("rtppcap-nb6-telephone.pcap"))
    call = "1135D8701739D86@10.251.23.139"
    assert steps(observations) == [
        (call, "start", "caller@10.251.23.139:35560"),
        (call, "ringing", "callee@109.3.79.137:44344"),
        (call, "answer", "callee@109.3.79.137:44344"),
        (call, "end", "bye"),
    ]
    assert bindings(observations) == [("+33360653674", "10.251.23.139", "sip-call", None, False)]


def test_ipv6_call_names_addresses_in_compressed_form() -> None:
    observations = track(capture("heplify-sip_ipv6_udp.pcap"))
    call = "c3eF6f58-363323Cd-8058EB88-10300252@fe80:0:0:0:21a:a0ff:fe07:32e0"
    assert steps(observations) == [
        (call, "start", "caller@[fe80::21a:a0ff:fe07:32e0]:5008"),
        (call, "answer", "callee@[fec0::216:d3ff:fe0d:22c]:5008"),
        (call, "end", "bye"),
    ]
    assert bindings(observations) == [
        ("9876", "fe80::21a:a0ff:fe07:32e0", "sip-call", None, False),
        ("4321", "fec0::216:d3ff:fe0d:22c", "sip-call", None, False),
    ]


def test_sip_over_tcp_follows_the_call() -> None:
    observations = track(capture("heplify-sip_ipv4_tcp.pcap"))
    call = "158936656982201062716@10.33.6.100"
    assert steps(observations) == [
        (call, "start", "caller@10.33.6.100:6000"),
        (call, "ringing", ""),
        (call, "answer", "callee@10.33.6.101:6050"),
        (call, "end", "bye"),
    ]


def test_tcp_retrans_binds_the_phone_not_the_proxy_that_registers_onward() -> None:
    observations = track(capture("heplify-sip_ipv4_tcp_retrans.pcap"))
    assert bindings(observations) == [("1001", "172.168.0.252", "sip-register", 60, False)]
    binding = observations[0]
    assert isinstance(binding, BindingSeen)
    assert binding.device == "urn:uuid:00000000-0000-0000-0000-00009314fa8a"


def test_tcp_fragmented_trunk_follows_every_dialog() -> None:
    tracker = SipTracker()
    observations = track(capture("heplify-sip_ipv4_tcp_fragmented.pcap"), tracker)
    events = [s[1] for s in steps(observations)]
    # 37 INVITE dialogs, one INVITE never answered or seen answered, one call picked up
    # from its 200 OK (the capture starts after its INVITE), CANCEL/487 and 486 present.
    assert events.count("start") == 38
    assert events.count("answer") == 33
    assert events.count("end") == 15
    assert sum(tracker.errors.values()) == 0
    assert tracker.messages["INVITE"] == 37 and tracker.messages["UPDATE"] == 63


@pytest.mark.parametrize(
    "name",
    ["heplify-erspan_sip_ipv4_udp.pcapng", "rtpparsing-interception.pcapng"],
)
def test_encapsulated_captures_need_the_capture_layer(name: str) -> None:
    # ERSPAN and VLAN+PPPoE are the capture layer's to unwrap; this helper sees no SIP there.
    assert track(capture(name)) == []
