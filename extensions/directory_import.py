"""Import a phone export from the PBX, all or nothing.

The file names each phone once, with its lines:

    device,protocol,ip,static_ip,agent,line1,line2,line3,...
    SEP001122334455,sccp,,no,John,9001,9002,9003

For every phone in the file the file is the truth: its lines become exactly the file's
lines (a line left empty is removed from the phone). Phones the file does not name are
left alone. An agent named in a row is created if new and becomes the owner of that
phone's line-1 extension; an empty agent leaves ownership as it is. Re-importing the same
file changes nothing.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from extensions.models import Agent, Extension, LineAppearance, Phone
from extensions.services import assign_line

REQUIRED_COLUMNS = ["device", "protocol", "ip", "static_ip", "agent"]
LINE_COLUMN = re.compile(r"line([1-9][0-9]*)")
YES = {"yes", "y", "true", "1"}
NO = {"no", "n", "false", "0", ""}
PROTOCOLS = {choice.value for choice in Phone.Protocol}


class ImportRefused(Exception):
    """The file has errors; nothing was written. `errors` are `line N: sentence` strings."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


@dataclass
class PhoneRow:
    line: int
    device: str
    protocol: str
    ip: str
    static_ip: bool
    agent: str
    lines: dict[int, str]


@dataclass
class ImportReport:
    phones_created: int = 0
    phones_changed: int = 0
    phones_unchanged: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    agents_created: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        phones = self.phones_created + self.phones_changed + self.phones_unchanged
        return (
            f"{phones} phones ({self.phones_created} new, {self.phones_changed} changed, "
            f"{self.phones_unchanged} unchanged), {self.lines_added} lines added, "
            f"{self.lines_removed} lines removed, {self.agents_created} agents created"
        )


def import_directory(lines: Iterable[str], dry_run: bool = False) -> ImportReport:
    """Apply a phone export. Raises ImportRefused with every error, having written nothing."""
    rows, errors = parse_rows(lines)
    report = ImportReport(errors=errors)
    with transaction.atomic():
        # Rows that parsed are applied even when others did not, so that the person also
        # learns what the database would refuse (an R4 number, an R2 clash) in one pass.
        apply_rows(rows, report)
        if report.errors:
            transaction.set_rollback(True)
            raise ImportRefused(sorted(report.errors, key=error_line))
        if dry_run:
            transaction.set_rollback(True)
    return report


def error_line(error: str) -> int:
    """The file line an error is about, so the list reads top to bottom."""
    return int(error.split(":", 1)[0].removeprefix("line "))


def parse_rows(lines: Iterable[str]) -> tuple[list[PhoneRow], list[str]]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        return [], [f"line 1: the header is not readable CSV ({error})."]
    line_columns, errors = check_header(header)
    if errors:
        return [], errors
    rows, listed = [], {}
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            row, row_errors = parse_row(reader.line_num, header, line_columns, cells)
            errors.extend(row_errors)
            if row is None:
                continue
            if row.device in listed:
                errors.append(
                    f"line {row.line}: phone {row.device} is already listed on line "
                    f"{listed[row.device]}; list each phone once."
                )
                continue
            listed[row.device] = row.line
            rows.append(row)
    except csv.Error as error:
        errors.append(f"line {reader.line_num}: not readable CSV ({error}).")
    return rows, errors


def check_header(header: list[str] | None) -> tuple[dict[str, int], list[str]]:
    if not header:
        expected = ",".join([*REQUIRED_COLUMNS, "line1"])
        return {}, [f"line 1: the file is empty; it needs the header {expected}."]
    names = [name.strip().lower() for name in header]
    errors = []
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        errors.append(f"line 1: the header lacks the column(s) {', '.join(missing)}.")
    line_columns = {}
    for name in names:
        match = LINE_COLUMN.fullmatch(name)
        if match:
            line_columns[name] = int(match.group(1))
        elif name not in REQUIRED_COLUMNS:
            errors.append(
                f"line 1: unknown column {name!r}; the columns are "
                f"{', '.join(REQUIRED_COLUMNS)} and line1, line2, ..."
            )
    if not line_columns:
        errors.append("line 1: the header needs at least the column line1.")
    if len(set(names)) != len(names):
        errors.append("line 1: a column is named twice.")
    header[:] = names
    return line_columns, errors


def parse_row(
    line: int, header: list[str], line_columns: dict[str, int], cells: list[str]
) -> tuple[PhoneRow | None, list[str]]:
    if len(cells) != len(header):
        return None, [f"line {line}: {len(cells)} cells where the header has {len(header)}."]
    values = dict(zip(header, cells, strict=True))
    errors = []
    device = values["device"].strip()
    if not device:
        errors.append(f"line {line}: the device is empty; name the phone (e.g. SEP001122334455).")
    protocol = values["protocol"].strip().lower()
    if protocol not in PROTOCOLS:
        errors.append(
            f"line {line}: protocol {values['protocol']!r} is not one of "
            f"{', '.join(sorted(PROTOCOLS))}."
        )
    static_word = values["static_ip"].strip().lower()
    if static_word not in YES | NO:
        errors.append(f"line {line}: static_ip must be yes or no, not {values['static_ip']!r}.")
    static_ip = static_word in YES
    ip = values["ip"].strip()
    errors.extend(check_ip(line, ip, static_ip))
    lines = {
        line_columns[name]: values[name]
        for name in header
        if name in line_columns and values[name] != ""
    }
    if errors:
        return None, errors
    return PhoneRow(line, device, protocol, ip, static_ip, values["agent"].strip(), lines), []


def check_ip(line: int, ip: str, static_ip: bool) -> list[str]:
    if not ip:
        return [f"line {line}: static_ip is yes, so the ip is required."] if static_ip else []
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return [f"line {line}: {ip!r} is not an IP address."]
    return []


def apply_rows(rows: list[PhoneRow], report: ImportReport) -> None:
    phones = {}
    for row in rows:
        phone = upsert_phone(row, report)
        if phone is not None:
            phones[row.line] = phone
    remove_stale_lines(rows, phones, report)
    for row in rows:
        if row.line in phones:
            add_lines(row, phones[row.line], report)


def upsert_phone(row: PhoneRow, report: ImportReport) -> Phone | None:
    phone = Phone.objects.filter(device_name=row.device).first() or Phone(device_name=row.device)
    created = phone.pk is None
    before = phone_state(phone)
    phone.protocol = row.protocol
    phone.static_ip = row.static_ip
    if row.static_ip:
        phone.configured_ip = phone.current_ip = row.ip
    elif row.ip:
        phone.current_ip = row.ip
    try:
        phone.full_clean()
    except ValidationError as error:
        report.errors.extend(f"line {row.line}: {message}" for message in error.messages)
        return None
    if created or before != phone_state(phone):
        phone.save()
        report.phones_created += created
        report.phones_changed += not created
    else:
        report.phones_unchanged += 1
    return phone


def phone_state(phone: Phone) -> tuple:
    return (phone.protocol, phone.static_ip, phone.configured_ip, phone.current_ip)


def remove_stale_lines(
    rows: list[PhoneRow], phones: dict[int, Phone], report: ImportReport
) -> None:
    """Drop the lines the file no longer gives a phone, before any line is added, so that
    a number may move between phones listed in either order."""
    for row in rows:
        phone = phones.get(row.line)
        if phone is None or phone.pk is None:
            continue
        for existing in phone.lines.select_related("extension"):
            if row.lines.get(existing.line_number) != existing.extension.number:
                existing.delete()
                report.lines_removed += 1


def add_lines(row: PhoneRow, phone: Phone, report: ImportReport) -> None:
    present = dict(phone.lines.values_list("line_number", "extension__number"))
    refused: set[int] = set()
    for line_number, number in sorted(row.lines.items()):
        if present.get(line_number) == number:
            continue
        try:
            assign_line(phone, line_number, number)
        except ValidationError as error:
            report.errors.extend(f"line {row.line}: {message}" for message in error.messages)
            refused.add(line_number)
        else:
            report.lines_added += 1
    # A refused line 1 is already reported; "no line 1 for the agent" would only repeat it.
    if row.agent and 1 not in refused:
        set_owner(row, phone, report)


def set_owner(row: PhoneRow, phone: Phone, report: ImportReport) -> None:
    line_one = LineAppearance.objects.filter(phone=phone, line_number=1).first()
    if line_one is None:
        report.errors.append(
            f"line {row.line}: agent {row.agent} is named but the phone has no line 1 for "
            "them to own."
        )
        return
    agent = Agent.objects.filter(name=row.agent).first()
    if agent is None:
        agent = Agent(name=row.agent)
        try:
            agent.full_clean()
        except ValidationError as error:
            report.errors.extend(f"line {row.line}: {message}" for message in error.messages)
            return
        agent.save()
        report.agents_created += 1
    Extension.objects.filter(pk=line_one.extension_id).exclude(agent=agent).update(agent=agent)
