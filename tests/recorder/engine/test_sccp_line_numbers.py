"""Directory numbers from Skinny LineStat that are no extension (issue 14, item 7).

CallManager answers a LineStatReq for a line with no directory number with an empty
lineDirNumber; a broken or hostile station session can carry any bytes there. Rule R4 holds
for what comes from the wire: such a number is counted and refused, never a binding, and it
costs the phone's real lines nothing. Captures are written here and go through `import_pcap`
into PostgreSQL.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from extensions.models import Binding, SeenExtension
from recorder.capture.synthesis import tcp, write_pcap
from tests.integrations.sccp_build import fixed, keepalive, line_stat, register, skinny, u32

START = 1_796_200_000.0
CM_IP, SCCP_PORT = "10.72.0.1", 2000
PHONE_IP, PHONE_PORT = "10.72.0.31", 51031
REGISTER_ACK = 0x0081
NOT_EXTENSIONS = pytest.mark.parametrize(
    "number",
    ["", " ", "9002 ", "90\x0102", "617-555-1212"],
    ids=["empty", "space", "trailing-space", "control", "dashes"],
)


class Session:
    """One phone's Skinny session with the CallManager, as TCP frames."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.seq = {True: 4000, False: 80000}
        self.phone(0.0, register("SEP000000007031", PHONE_IP))
        self.cm(0.01, skinny(REGISTER_ACK, u32(30) + fixed("M/D/Y", 8)))

    def send(self, at: float, from_phone: bool, *messages: bytes) -> None:
        payload = b"".join(messages)
        seq = self.seq[from_phone]
        self.seq[from_phone] += len(payload)
        ends = (PHONE_IP, PHONE_PORT, CM_IP, SCCP_PORT)
        src, sport, dst, dport = ends if from_phone else (CM_IP, SCCP_PORT, PHONE_IP, PHONE_PORT)
        self.frames.append((START + at, tcp(src, sport, dst, dport, seq, payload)))

    def phone(self, at: float, *messages: bytes) -> None:
        self.send(at, True, *messages)

    def cm(self, at: float, *messages: bytes) -> None:
        self.send(at, False, *messages)


@pytest.fixture
def spooled(postgresql: None, settings, tmp_path: Path) -> None:
    settings.QMS_SPOOL_DIR = tmp_path / "spool"


def import_capture(tmp_path: Path, session: Session) -> str:
    path = tmp_path / "sccp.pcap"
    write_pcap(path, session.frames)
    out = io.StringIO()
    call_command("import_pcap", str(path), stdout=out)
    return out.getvalue()


def bindings() -> list[tuple[str, int, str]]:
    return list(Binding.objects.values_list("extension_number", "line_number", "end_reason"))


@NOT_EXTENSIONS
def test_a_line_whose_number_is_no_extension_is_refused_once_and_never_bound(
    spooled: None, tmp_path: Path, number: str
) -> None:
    session = Session()
    session.cm(0.02, line_stat(1, "9001"), line_stat(2, number))
    session.phone(30.0, keepalive())
    session.phone(150.0, keepalive())  # the lines' refresh: nothing of line 2 again
    summary = import_capture(tmp_path, session)

    assert [(number, line) for number, line, _ in bindings()] == [("9001", 1)]
    assert list(SeenExtension.objects.values_list("number", flat=True)) == ["9001"]
    assert "sccp bad-dn 1" in summary
    assert "bad-extension" not in summary


@NOT_EXTENSIONS
def test_a_number_that_is_no_extension_does_not_unbind_the_lines_number(
    spooled: None, tmp_path: Path, number: str
) -> None:
    """A LineStat with such a number for a line already known says nothing QMS can keep:
    the line's extension stays bound."""
    session = Session()
    session.cm(0.02, line_stat(1, "9001"))
    session.cm(10.0, line_stat(1, number))
    import_capture(tmp_path, session)

    assert bindings() == [("9001", 1, "")]
