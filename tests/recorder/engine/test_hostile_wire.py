"""One packet must never cost a recording (issue 11 §1; audit findings C1 and H1).

Captures written here put one hostile field into otherwise ordinary SIP calls with RTP, and
go through `import_pcap` (or the engine and a DatabaseSink) into PostgreSQL, which refuses
what SQLite takes: a NUL in text, a value longer than its column. Every call is stored
with its recording, the hostile text cleaned and cut; a binding whose extension no call
system writes is refused and counted, and costs no other event.
"""

from __future__ import annotations

import io
import itertools
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extensions.models import Binding, SeenExtension
from recorder.capture.link import LINKTYPE_ETHERNET
from recorder.capture.synthesis import rtp, sip, udp, write_pcap
from recorder.engine.engine import Engine
from recorder.models import Call, Recording
from recorder.sinks.database import DatabaseSink

PHONE, GATEWAY, REGISTRAR = "10.70.0.41", "10.70.9.1", "10.70.9.5"
START = 1_796_000_000.0
STORED = {Recording.Status.COMPLETE, Recording.Status.NOT_DECODABLE}
Frames = list[tuple[float, bytes]]


def offer(ip: str, port: int, payload_type: int, codec: str) -> str:
    """An SDP body (RFC 4566) receiving one codec at ip:port."""
    return (
        f"v=0\r\no=qms 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_type}\r\n"
        f"a=rtpmap:{payload_type} {codec}/8000\r\na=sendrecv\r\n"
    )


def party(user: str, name: str = "") -> str:
    """A From or To value; the user part percent-escaped (RFC 3261 §19.1.2), as a
    hostile caller would write a NUL or a bracket."""
    escaped = quote(user.encode("utf-8", "surrogatepass"), safe="+")
    uri = f"<sip:{escaped}@pbx.example>"
    return f'"{name}" {uri}' if name else uri


def sip_call(
    call_id: str,
    start: float,
    index: int = 0,
    *,
    caller: str = "9001",
    caller_name: str = "",
    callee: str = "+15550100",
    callee_name: str = "",
    payload_type: int = 0,
    codec: str = "PCMU",
    seconds: float = 0.4,
) -> Frames:
    """The phone calls out through the gateway; both sides speak for `seconds`, then it
    hangs up. `index` keeps each call's media ports its own."""
    phone_rtp, gateway_rtp = 16384 + 2 * index, 30000 + 2 * index
    via = [f"Via: SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK{index}x{int(start)}"]
    ends = [f"From: {party(caller, caller_name)};tag=a", f"To: {party(callee, callee_name)}",
            f"Call-ID: {call_id}"]  # fmt: skip
    answered = [ends[0], ends[1] + ";tag=b", ends[2]]
    invite = sip(f"INVITE sip:+15550100@{GATEWAY} SIP/2.0",
                 via + ends + ["CSeq: 1 INVITE", f"Contact: <sip:9001@{PHONE}>"],
                 offer(PHONE, phone_rtp, payload_type, codec))  # fmt: skip
    ok = sip("SIP/2.0 200 OK", via + answered + ["CSeq: 1 INVITE"],
             offer(GATEWAY, gateway_rtp, payload_type, codec))  # fmt: skip
    frames = [(start, udp(PHONE, 5060, GATEWAY, 5060, invite)),
              (start + 0.01, udp(GATEWAY, 5060, PHONE, 5060, ok))]  # fmt: skip
    for tick in range(int(seconds / 0.02)):
        at = start + 0.1 + tick * 0.02
        voice = rtp(tick, tick * 160, 0x70 + index, bytes([tick % 256]) * 160, payload_type)
        frames.append((at, udp(PHONE, phone_rtp, GATEWAY, gateway_rtp, voice)))
        frames.append((at + 0.001, udp(GATEWAY, gateway_rtp, PHONE, phone_rtp, voice)))
    bye = sip(f"BYE sip:+15550100@{GATEWAY} SIP/2.0", via + answered + ["CSeq: 2 BYE"])
    frames.append((start + 0.2 + seconds, udp(PHONE, 5060, GATEWAY, 5060, bye)))
    return frames


def registration(user: str, at: float, phone: str = PHONE) -> Frames:
    """A REGISTER and the 200 OK that grants it (any host on the segment can forge one)."""
    via = [f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bKreg{int(at)}"]
    parties = [f"From: {party(user)};tag=r", f"To: {party(user)}", f"Call-ID: reg-{int(at)}"]
    contact = f"Contact: <sip:{quote(user, safe='')}@{phone}:5060>"
    common = via + parties + ["CSeq: 1 REGISTER"]
    register = sip(f"REGISTER sip:{REGISTRAR} SIP/2.0", [*common, contact, "Expires: 3600"])
    ok = sip("SIP/2.0 200 OK", [*common, contact + ";expires=3600"])
    return [
        (at, udp(phone, 5060, REGISTRAR, 5060, register)),
        (at + 0.01, udp(REGISTRAR, 5060, phone, 5060, ok)),
    ]


@pytest.fixture
def spool_root(postgresql: None, settings, tmp_path: Path) -> Path:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"
    return settings.QMS_SPOOL_DIR


def import_capture(tmp_path: Path, frames: Frames) -> str:
    """`import_pcap` of the frames in time order; its summary."""
    path = tmp_path / "capture.pcap"
    write_pcap(path, sorted(frames, key=lambda pair: pair[0]))
    out = io.StringIO()
    call_command("import_pcap", str(path), stdout=out)
    return out.getvalue()


def recording_of(call_id: str) -> Recording:
    return Recording.objects.select_related("signalling").get(call_id=call_id)


def test_a_nul_in_the_caller_id_costs_neither_the_call_nor_its_recording(
    spool_root: Path, tmp_path: Path
) -> None:
    import_capture(tmp_path, sip_call("nul-caller", START, caller="555\x00123"))

    call = Call.objects.get(call_id="nul-caller")
    assert call.caller == "555\ufffd123"
    assert recording_of("nul-caller").status == Recording.Status.COMPLETE
    assert list(spool_root.iterdir()) == []


def test_a_codec_name_longer_than_its_column_still_gives_a_finished_recording(
    spool_root: Path, tmp_path: Path
) -> None:
    import_capture(tmp_path, sip_call("long-codec", START, payload_type=96, codec="X" * 100))

    recording = recording_of("long-codec")
    assert recording.status in STORED  # not "recording" for ever
    assert 0 < len(recording.codec) <= Recording._meta.get_field("codec").max_length
    assert recording.codec.startswith("XXXX")
    assert list(spool_root.iterdir()) == []


def test_a_forged_registration_of_200_digits_is_refused_and_costs_no_other_call(
    spool_root: Path, tmp_path: Path
) -> None:
    forged = "1" * 200
    summary = import_capture(
        tmp_path,
        sip_call("ordinary-1", START, 0)
        + registration(forged, START + 2, phone="10.70.0.66")
        + sip_call("ordinary-2", START + 3, 1),
    )

    assert {r.call_id: r.status for r in Recording.objects.all()} == {
        "ordinary-1": Recording.Status.COMPLETE,
        "ordinary-2": Recording.Status.COMPLETE,
    }
    assert not SeenExtension.objects.filter(number__startswith="111").exists()
    assert not Binding.objects.filter(extension_number__startswith="111").exists()
    assert "bad-extension 1" in summary
    assert "storage failures" not in summary


def test_an_html_user_part_of_9000_characters_is_never_a_seen_extension(
    spool_root: Path, tmp_path: Path
) -> None:
    html = ("<b onmouseover=alert(1)>" + "x" * 9000)[:8996] + "</b>"
    summary = import_capture(
        tmp_path, registration(html, START, phone="10.70.0.67") + sip_call("after", START + 1)
    )

    assert len(html) == 9000
    assert not SeenExtension.objects.exists()
    assert not Binding.objects.exists()
    assert "bad-extension 1" in summary
    assert recording_of("after").status == Recording.Status.COMPLETE


# What a stranger writes in the parts of a call an INVITE carries: user parts (escaped
# on the wire, so anything at all), display names (a quoted string: no quote, backslash
# or line end) and codec names (a token: no space or slash).
USER_PARTS = st.text(st.characters(exclude_categories=()), min_size=1, max_size=400)
DISPLAY_NAMES = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters='"\\\r\n'), max_size=400
)
CODEC_NAMES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/"),
    min_size=1,
    max_size=300,
)
CALL_NUMBERS = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    caller=USER_PARTS,
    caller_name=DISPLAY_NAMES,
    callee=USER_PARTS,
    callee_name=DISPLAY_NAMES,
    codec=st.one_of(st.just("PCMU"), CODEC_NAMES),
)
def test_every_call_with_hostile_parties_or_codec_is_stored_with_its_recording(
    spool_root: Path, caller: str, caller_name: str, callee: str, callee_name: str, codec: str
) -> None:
    call_id = f"hostile-{next(CALL_NUMBERS)}"
    payload_type = 0 if codec == "PCMU" else 96
    frames = sip_call(call_id, START, caller=caller, caller_name=caller_name, callee=callee,
                      callee_name=callee_name, payload_type=payload_type, codec=codec)  # fmt: skip
    with tempfile.TemporaryDirectory(dir=spool_root.parent) as spool:
        sink = DatabaseSink(node="hostile")
        engine = Engine(sink, set(), spool_root=Path(spool))
        for at, frame in frames:
            engine.feed(at, LINKTYPE_ETHERNET, frame)
        engine.finish()
        sink.close()

        assert not sink.failures
        recording = recording_of(call_id)
        assert recording.status in STORED
        assert "\x00" not in recording.signalling.caller + recording.signalling.caller_name
        assert list(Path(spool).iterdir()) == []
