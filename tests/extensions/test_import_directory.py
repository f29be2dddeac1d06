"""`manage.py import_directory`: a phone export from the PBX, imported all or nothing.

Every test writes a real CSV file, runs the real command and looks at the database and at
the words a telephony admin would read.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from extensions.models import Agent, Extension, LineAppearance, Phone

HEADER = "device,protocol,ip,static_ip,agent,line1,line2,line3"
JOHN = "SEP001122334455,sccp,,no,John,9001,9002,9003"
MARY = "SEP0011223344AA,sccp,,no,Mary,9002,9001,9003"
CARL = "SEP0011223344BB,sccp,,no,Carl,9003,9002,"
JOHN_MARY_CARL = [JOHN, MARY, CARL]
JOHN_MARY_CARL_LINES = {
    ("SEP001122334455", 1, "9001"),
    ("SEP001122334455", 2, "9002"),
    ("SEP001122334455", 3, "9003"),
    ("SEP0011223344AA", 1, "9002"),
    ("SEP0011223344AA", 2, "9001"),
    ("SEP0011223344AA", 3, "9003"),
    ("SEP0011223344BB", 1, "9003"),
    ("SEP0011223344BB", 2, "9002"),
}
ERROR_LINE = re.compile(r"line (\d+): (.+)")

pytestmark = pytest.mark.django_db


# Helpers -------------------------------------------------------------------------------------


def write_export(
    tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "export.csv"
) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def run_import(path: Path, *options: str) -> str:
    output = StringIO()
    call_command("import_directory", str(path), *options, stdout=output)
    return output.getvalue()


def refusal(path: Path, *options: str) -> str:
    """The command's refusal text; the test fails if the command accepts the file."""
    with pytest.raises(CommandError) as refused:
        run_import(path, *options)
    return str(refused.value)


def listed_errors(refusal_text: str) -> list[tuple[int, str]]:
    """The `line N: sentence` errors under the refusal's first line, each checked for shape."""
    first, *errors = refusal_text.splitlines()
    assert re.search(rf"has {len(errors)} error\(s\); nothing was imported\.$", first), first
    parsed = []
    for error in errors:
        match = ERROR_LINE.fullmatch(error)
        assert match is not None, f"not a `line N: sentence` error: {error!r}"
        parsed.append((int(match.group(1)), match.group(2)))
    return parsed


def line_appearances() -> set[tuple[str, int, str]]:
    return set(
        LineAppearance.objects.values_list("phone__device_name", "line_number", "extension__number")
    )


def owners() -> dict[str, str | None]:
    return dict(Extension.objects.values_list("number", "agent__name"))


def directory_state() -> dict[str, list[tuple[object, ...]]]:
    """Every row the import may touch, with its primary key, so that a delete followed by
    an identical insert also counts as a change."""
    return {
        "phones": sorted(
            Phone.objects.values_list(
                "pk", "device_name", "protocol", "static_ip", "configured_ip", "current_ip"
            )
        ),
        "lines": sorted(
            LineAppearance.objects.values_list(
                "pk", "phone__device_name", "line_number", "extension__number"
            )
        ),
        "extensions": sorted(Extension.objects.values_list("pk", "number", "agent__name")),
        "agents": sorted(Agent.objects.values_list("pk", "name")),
    }


def assert_directory_empty() -> None:
    assert Phone.objects.count() == 0
    assert LineAppearance.objects.count() == 0
    assert Extension.objects.count() == 0
    assert Agent.objects.count() == 0


# The rules' own example ----------------------------------------------------------------------


def test_it_imports_the_john_mary_carl_example(tmp_path: Path) -> None:
    output = run_import(write_export(tmp_path, JOHN_MARY_CARL))

    assert "3 phones (3 new, 0 changed, 0 unchanged), 8 lines added, 0 lines removed, " in output
    assert "3 agents created" in output
    assert set(Phone.objects.values_list("device_name", "protocol", "static_ip")) == {
        ("SEP001122334455", "sccp", False),
        ("SEP0011223344AA", "sccp", False),
        ("SEP0011223344BB", "sccp", False),
    }
    assert line_appearances() == JOHN_MARY_CARL_LINES
    assert owners() == {"9001": "John", "9002": "Mary", "9003": "Carl"}
    assert set(Agent.objects.values_list("name", flat=True)) == {"John", "Mary", "Carl"}
    assert Phone.objects.get(device_name="SEP001122334455").holder.name == "John"


def test_reimporting_the_same_file_changes_nothing(tmp_path: Path) -> None:
    export = write_export(tmp_path, JOHN_MARY_CARL)
    run_import(export)
    before = directory_state()

    output = run_import(export)

    assert directory_state() == before
    assert line_appearances() == JOHN_MARY_CARL_LINES
    assert owners() == {"9001": "John", "9002": "Mary", "9003": "Carl"}
    assert "3 phones (0 new, 0 changed, 3 unchanged), 0 lines added, 0 lines removed, " in output
    assert "0 agents created" in output


# All or nothing ------------------------------------------------------------------------------


def test_it_refuses_a_second_line_one_for_9001_and_writes_nothing(tmp_path: Path) -> None:
    dave = "SEP0011223344CC,sccp,,no,Dave,9001,9004,"
    export = write_export(tmp_path, [*JOHN_MARY_CARL, dave])

    text = refusal(export)

    assert listed_errors(text) == [
        (
            5,
            "Extension 9001 is already line 1 on phone SEP001122334455 (John). An extension "
            "can be line 1 on one phone only (rule R2); it may be line 2 or higher on any "
            "number of phones.",
        )
    ]
    assert_directory_empty()


def test_a_refused_file_leaves_an_existing_directory_exactly_as_it_was(tmp_path: Path) -> None:
    run_import(write_export(tmp_path, JOHN_MARY_CARL, name="first.csv"))
    before = directory_state()
    changed_carl = "SEP0011223344BB,sccp,10.0.0.30,no,Carl,9003,9002,9005"
    new_phone = "SEP0011223344DD,sip,,no,Erin,9006,,"
    second_line_one = "SEP0011223344CC,sccp,,no,Dave,9002,9004,"
    export = write_export(
        tmp_path, [JOHN, MARY, changed_carl, new_phone, second_line_one], name="second.csv"
    )

    text = refusal(export)

    assert [line for line, _ in listed_errors(text)] == [6]
    assert "Extension 9002 is already line 1 on phone SEP0011223344AA (Mary)" in text
    assert directory_state() == before
    assert not Extension.objects.filter(number__in=["9004", "9005", "9006"]).exists()
    assert not Agent.objects.filter(name__in=["Dave", "Erin"]).exists()


def test_it_lists_every_error_with_its_physical_line_number(tmp_path: Path) -> None:
    rows = [
        "SEP000000000001,h323,,no,Ann,7001,,",  # line 2: unknown protocol
        "",  # line 3: blank, skipped but still counted
        "SEP000000000002,sip,,no,Bob,617-555-1212,,",  # line 4: formatting characters (R4)
        "SEP000000000003,sip,,yes,Cy,7003,,",  # line 5: static without its address
        "SEP000000000004,sip,,no,Dee,7004,,",  # line 6: fine
    ]
    export = write_export(tmp_path, rows)

    errors = dict(listed_errors(refusal(export)))

    assert sorted(errors) == [2, 4, 5]
    assert errors[2] == "protocol 'h323' is not one of lync, sccp, sip, tapi."
    assert errors[4].startswith("Extension '617-555-1212' is not valid: it contains formatting")
    assert "QMS must match the PBX exactly" in errors[4]
    assert errors[5] == "static_ip is yes, so the ip is required."
    assert_directory_empty()


# Dry run -------------------------------------------------------------------------------------


def test_a_dry_run_validates_a_good_file_and_writes_nothing(tmp_path: Path) -> None:
    output = run_import(write_export(tmp_path, JOHN_MARY_CARL), "--dry-run")

    assert "is valid; it would give 3 phones (3 new, 0 changed, 0 unchanged), 8 lines added" in (
        output
    )
    assert_directory_empty()


def test_a_dry_run_over_an_existing_directory_changes_nothing(tmp_path: Path) -> None:
    run_import(write_export(tmp_path, JOHN_MARY_CARL, name="first.csv"))
    before = directory_state()
    carl_gains_a_line = "SEP0011223344BB,sccp,,no,Carl,9003,9002,9005"
    export = write_export(tmp_path, [JOHN, MARY, carl_gains_a_line], name="second.csv")

    output = run_import(export, "--dry-run")

    assert "it would give 3 phones (0 new, 0 changed, 3 unchanged), 1 lines added, " in output
    assert directory_state() == before


def test_a_dry_run_reports_an_invalid_file_as_the_import_does(tmp_path: Path) -> None:
    dave = "SEP0011223344CC,sccp,,no,Dave,9001,,"
    export = write_export(tmp_path, [*JOHN_MARY_CARL, "SEPBAD,h323,,no,,7001,,", dave])

    dry_run_text = refusal(export, "--dry-run")

    assert dry_run_text == refusal(export)
    assert dict(listed_errors(dry_run_text)).keys() == {5, 6}
    assert_directory_empty()


# Rule R4: written exactly as the PBX writes it ------------------------------------------------


def test_01234_and_1234_are_two_extensions_and_nothing_is_reformatted(tmp_path: Path) -> None:
    rows = [
        "SEP000000000001,sip,,no,Ann,01234,+4969123456,",
        "SEP000000000002,sip,,no,Bob,1234,*97#,",
    ]
    run_import(write_export(tmp_path, rows))

    assert sorted(Extension.objects.values_list("number", flat=True)) == [
        "*97#",
        "+4969123456",
        "01234",
        "1234",
    ]
    assert owners()["01234"] == "Ann"
    assert owners()["1234"] == "Bob"
    assert ("SEP000000000001", 1, "01234") in line_appearances()
    assert ("SEP000000000002", 1, "1234") in line_appearances()


def test_it_refuses_an_extension_cell_with_white_space(tmp_path: Path) -> None:
    export = write_export(tmp_path, ["SEP001122334455,sccp,,no,John, 9001,9002,"])

    errors = listed_errors(refusal(export))

    assert len(errors) == 1
    line, sentence = errors[0]
    assert line == 2
    assert sentence.startswith("Extension ' 9001' is not valid: it contains white space")
    assert "QMS must match the PBX exactly" in sentence
    assert_directory_empty()


# The file's shape ----------------------------------------------------------------------------


def test_it_takes_any_number_of_line_columns(tmp_path: Path) -> None:
    header = "device,protocol,ip,static_ip,agent,line1,line2,line3,line4,line5"
    export = write_export(
        tmp_path, ["SEP001122334455,sccp,,no,John,9001,9002,9003,9004,9005"], header=header
    )

    run_import(export)

    assert line_appearances() == {
        ("SEP001122334455", number, f"900{number}") for number in range(1, 6)
    }


def test_it_refuses_an_unknown_column(tmp_path: Path) -> None:
    export = write_export(tmp_path, [f"{JOHN},Sales"], header=f"{HEADER},department")

    errors = listed_errors(refusal(export))

    assert len(errors) == 1
    assert errors[0][0] == 1
    assert errors[0][1].startswith("unknown column 'department'")
    assert_directory_empty()


def test_it_refuses_a_row_with_the_wrong_number_of_cells(tmp_path: Path) -> None:
    export = write_export(tmp_path, [JOHN, "SEP0011223344AA,sccp,,no,Mary,9002,9001"])

    assert listed_errors(refusal(export)) == [(3, "7 cells where the header has 8.")]
    assert_directory_empty()


def test_it_refuses_a_phone_listed_twice(tmp_path: Path) -> None:
    export = write_export(tmp_path, [JOHN, MARY, "SEP001122334455,sccp,,no,John,9004,,"])

    assert listed_errors(refusal(export)) == [
        (4, "phone SEP001122334455 is already listed on line 2; list each phone once.")
    ]
    assert_directory_empty()


def test_it_refuses_an_empty_file(tmp_path: Path) -> None:
    export = tmp_path / "empty.csv"
    export.write_bytes(b"")

    errors = listed_errors(refusal(export))

    assert len(errors) == 1
    assert errors[0][0] == 1
    assert errors[0][1].startswith("the file is empty; it needs the header device,protocol")


def test_it_refuses_a_file_that_is_not_utf8_with_a_clear_sentence(tmp_path: Path) -> None:
    export = tmp_path / "latin1.csv"
    export.write_bytes(f"{HEADER}\nSEP001122334455,sccp,,no,José,9001,,\n".encode("latin-1"))

    text = refusal(export)

    assert f"{export} is not UTF-8 text" in text
    assert "export the file as UTF-8 CSV" in text
    assert_directory_empty()


# The file is the truth for the phones it names -----------------------------------------------


@pytest.mark.parametrize("phone_b_first", [True, False], ids=["b-first", "a-first"])
def test_9004_moves_to_another_phone_as_line_one_in_one_import(
    tmp_path: Path, phone_b_first: bool
) -> None:
    first = [
        "SEP00000000000A,sip,,no,Anna,9004,9005,",
        "SEP00000000000B,sip,,no,Ben,9006,9004,",
        "SEP00000000000C,sip,,no,Cleo,9007,9004,",
    ]
    run_import(write_export(tmp_path, first, name="first.csv"))
    untouched = LineAppearance.objects.filter(phone__device_name="SEP00000000000C")
    phone_c_before = sorted(untouched.values_list("pk", "line_number", "extension__number"))
    phone_a = "SEP00000000000A,sip,,no,Anna,9005,,"
    phone_b = "SEP00000000000B,sip,,no,Ben,9004,9006,"
    second = [phone_b, phone_a] if phone_b_first else [phone_a, phone_b]

    output = run_import(write_export(tmp_path, second, name="second.csv"))

    assert line_appearances() == {
        ("SEP00000000000A", 1, "9005"),
        ("SEP00000000000B", 1, "9004"),
        ("SEP00000000000B", 2, "9006"),
        ("SEP00000000000C", 1, "9007"),
        ("SEP00000000000C", 2, "9004"),
    }
    assert owners() == {"9004": "Ben", "9005": "Anna", "9006": "Ben", "9007": "Cleo"}
    assert "3 lines added, 4 lines removed" in output
    assert sorted(untouched.values_list("pk", "line_number", "extension__number")) == (
        phone_c_before
    )


def test_an_emptied_line_is_removed_from_the_phone(tmp_path: Path) -> None:
    run_import(write_export(tmp_path, JOHN_MARY_CARL, name="first.csv"))
    john_keeps_line_one = "SEP001122334455,sccp,,no,John,9001,,"

    output = run_import(write_export(tmp_path, [john_keeps_line_one], name="second.csv"))

    assert "0 lines added, 2 lines removed" in output
    assert line_appearances() == JOHN_MARY_CARL_LINES - {
        ("SEP001122334455", 2, "9002"),
        ("SEP001122334455", 3, "9003"),
    }
    assert owners() == {"9001": "John", "9002": "Mary", "9003": "Carl"}


# Static IPs (the exception to rule R4) ---------------------------------------------------------


def test_a_static_phone_gets_its_configured_ip(tmp_path: Path) -> None:
    run_import(write_export(tmp_path, ["SEP001122334455,sccp,10.1.2.3,yes,John,9001,,"]))

    phone = Phone.objects.get(device_name="SEP001122334455")
    assert phone.static_ip is True
    assert phone.configured_ip == "10.1.2.3"


def test_it_refuses_two_static_phones_with_one_ip_naming_the_other(tmp_path: Path) -> None:
    rows = [
        "SEP001122334455,sccp,10.1.2.3,yes,John,9001,,",
        "SEP0011223344AA,sccp,10.1.2.3,yes,Mary,9002,,",
    ]

    errors = listed_errors(refusal(write_export(tmp_path, rows)))

    assert errors == [
        (
            3,
            "10.1.2.3 is already the static IP of phone SEP001122334455; a static address "
            "identifies one phone.",
        )
    ]
    assert_directory_empty()


def test_it_refuses_a_static_ip_already_held_by_a_phone_in_the_directory(
    tmp_path: Path,
) -> None:
    john = "SEP001122334455,sccp,10.1.2.3,yes,John,9001,,"
    run_import(write_export(tmp_path, [john], name="first.csv"))
    before = directory_state()
    mary = "SEP0011223344AA,sccp,10.1.2.3,yes,Mary,9002,,"

    text = refusal(write_export(tmp_path, [mary], name="second.csv"))

    assert "line 2: 10.1.2.3 is already the static IP of phone SEP001122334455" in text
    assert directory_state() == before


# SIP user names --------------------------------------------------------------------------------


def test_it_refuses_a_sip_user_name_on_an_sccp_phone(tmp_path: Path) -> None:
    export = write_export(tmp_path, ["SEP001122334455,sccp,,no,Front desk,reception,,"])

    errors = listed_errors(refusal(export))

    assert errors == [
        (
            2,
            "Extension reception is a SIP user name; it can only be a line on a SIP or Lync "
            "phone, and SEP001122334455 is Cisco SCCP.",
        )
    ]
    assert_directory_empty()


def test_it_accepts_a_sip_user_name_on_a_sip_phone(tmp_path: Path) -> None:
    run_import(write_export(tmp_path, ["0004f2aabbcc,sip,,no,Front desk,reception,,"]))

    assert line_appearances() == {("0004f2aabbcc", 1, "reception")}
    assert owners() == {"reception": "Front desk"}


# Hostile cells (issue 11, L3) ------------------------------------------------------------------


def test_a_nul_in_a_device_or_agent_name_is_a_line_error_and_nothing_is_imported(
    tmp_path: Path,
) -> None:
    rows = [
        JOHN,
        "SEP0011223344\x00AA,sccp,,no,Mary,9002,,",
        "SEP0011223344BB,sccp,,no,Ca\x00rl,9003,,",
    ]

    errors = listed_errors(refusal(write_export(tmp_path, rows)))

    assert errors == [
        (
            3,
            "the device cell 'SEP0011223344\\x00AA' holds the control character '\\x00'; "
            "a directory cell is printable text.",
        ),
        (
            4,
            "the agent cell 'Ca\\x00rl' holds the control character '\\x00'; a directory "
            "cell is printable text.",
        ),
    ]
    assert_directory_empty()


def test_names_a_spreadsheet_would_run_as_formulas_or_markup_are_refused(tmp_path: Path) -> None:
    rows = [
        "=cmd|' /C calc'!A0,sccp,,no,John,9001,,",
        'SEP0011223344AA,sccp,,no,"=HYPERLINK(""http://x.example"",""pay"")",9002,,',
        "SEP0011223344BB,sccp,,no,<script>alert(1)</script>,9003,,",
        "SEP0011223344CC,sccp,,no,@SUM(1+1),9004,,",
        "SEP<b>11223344DD,sccp,,no,Dave,9005,,",
    ]

    errors = listed_errors(refusal(write_export(tmp_path, rows)))

    assert errors == [
        (
            2,
            "device name \"=cmd|' /C calc'!A0\" is not valid: it must start with a letter or "
            "a digit.",
        ),
        (
            3,
            'agent name \'=HYPERLINK("http://x.example","pay")\' is not valid: it starts '
            "with =, which a spreadsheet reads as a formula.",
        ),
        (
            4,
            "agent name '<script>alert(1)</script>' is not valid: it holds < >, which no "
            "person's name does.",
        ),
        (
            5,
            "agent name '@SUM(1+1)' is not valid: it starts with @, which a spreadsheet reads "
            "as a formula.",
        ),
        (
            6,
            "device name 'SEP<b>11223344DD' is not valid: it holds < >; a device name holds "
            "letters, digits and . _ - : @ and spaces.",
        ),
    ]
    assert_directory_empty()


def test_device_names_of_cisco_sip_and_other_pbxs_are_accepted(tmp_path: Path) -> None:
    devices = [
        "SEP001122334455",
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "alice@pbx.example.com",
        "Front Desk_2.1",
        "0004f2aabbcc",
    ]
    rows = [f"{device},sip,,no,Agent {index},700{index},," for index, device in enumerate(devices)]

    run_import(write_export(tmp_path, rows))

    assert sorted(Phone.objects.values_list("device_name", flat=True)) == sorted(devices)


def test_a_static_ip_with_a_network_interface_zone_is_refused(tmp_path: Path) -> None:
    export = write_export(tmp_path, ["SEP001122334455,sip,fe80::1%eth0,yes,John,9001,,"])

    assert listed_errors(refusal(export)) == [
        (
            2,
            "'fe80::1%eth0' names a network interface after %; write the phone's address "
            "without it.",
        )
    ]
    assert_directory_empty()


def test_a_header_with_2000_line_columns_is_refused_in_one_sentence(tmp_path: Path) -> None:
    header = ",".join(["device,protocol,ip,static_ip,agent"] + [f"line{n}" for n in range(1, 2001)])
    row = "SEP001122334455,sccp,,no,John," + ",".join(str(10000 + n) for n in range(2000))

    assert listed_errors(refusal(write_export(tmp_path, [row], header=header))) == [
        (1, "the header has line columns up to line2000; a phone has at most 64 lines.")
    ]
    assert_directory_empty()


def test_a_phone_with_64_lines_is_imported(tmp_path: Path) -> None:
    header = ",".join(["device,protocol,ip,static_ip,agent"] + [f"line{n}" for n in range(1, 65)])
    row = "SEP001122334455,sccp,,no,John," + ",".join(str(10000 + n) for n in range(1, 65))

    run_import(write_export(tmp_path, [row], header=header))

    assert LineAppearance.objects.count() == 64
    assert owners()["10001"] == "John"


# Large files (issue 11, L3) --------------------------------------------------------------------


def many_phones(count: int) -> list[str]:
    """Phones whose line 1 is their own number and line 2 the next phone's."""
    return [
        f"SEP{index:012X},sccp,,no,Agent {index},{20000 + index},{20000 + (index + 1) % count},"
        for index in range(count)
    ]


def test_300_phones_are_checked_and_written_in_a_few_dozen_queries(
    tmp_path: Path, django_assert_max_num_queries
) -> None:
    export = write_export(tmp_path, many_phones(300))

    with django_assert_max_num_queries(40):
        output = run_import(export)

    assert "300 phones (300 new, 0 changed, 0 unchanged), 600 lines added" in output
    assert Extension.objects.filter(agent__isnull=False).count() == 300
    with django_assert_max_num_queries(40):
        output = run_import(export)
    assert "300 phones (0 new, 0 changed, 300 unchanged), 0 lines added" in output


def test_a_large_file_reports_its_progress_on_stderr(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("extensions.directory_import.PROGRESS_EVERY", 2)
    progress = StringIO()

    call_command(
        "import_directory",
        str(write_export(tmp_path, many_phones(5))),
        stdout=StringIO(),
        stderr=progress,
    )

    assert progress.getvalue().splitlines()[:2] == ["rows checked: 2 of 5", "rows checked: 4 of 5"]
