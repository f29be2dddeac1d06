"""Import a phone export from the PBX, all or nothing.

The file names each phone once, with its lines:

    device,protocol,ip,static_ip,agent,line1,line2,line3,...
    SEP001122334455,sccp,,no,John,9001,9002,9003

For every phone in the file the file is the truth: its lines become exactly the file's
lines (a line left empty is removed from the phone). Phones the file does not name are
left alone. An agent named in a row is created if new and becomes the owner of that
phone's line-1 extension; an empty agent leaves ownership as it is. Re-importing the same
file changes nothing.

The file is judged in memory: the part of the directory it touches is read in a few bulk
queries, every row is checked against it and against the rows before it (as if those had
been saved), and only a file without errors is written, in bulk statements. A file of
100,000 phones is thus refused or imported in seconds, not in the half hour a query per
rule and row took.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Model, QuerySet

from extensions.models import (
    Agent,
    Extension,
    LineAppearance,
    Phone,
    extension_twice_message,
    line_one_taken_message,
    line_taken_message,
)
from extensions.services import CONCURRENT_CHANGE
from extensions.validators import (
    agent_name_problem,
    control_character,
    device_name_problem,
    is_sip_user_name,
)

REQUIRED_COLUMNS = ["device", "protocol", "ip", "static_ip", "agent"]
LINE_COLUMN = re.compile(r"line([1-9][0-9]*)")
YES = {"yes", "y", "true", "1"}
NO = {"no", "n", "false", "0", ""}
PROTOCOLS = {choice.value for choice in Phone.Protocol}
# The most lines a phone may have in a file. The model allows 32,767; a phone with its key
# expansion modules has a few dozen buttons, so a column past line64 is a broken export.
MAX_LINES = 64
# Values per IN list and rows per bulk statement: SQLite allows 999 parameters.
BATCH = 900
# Progress is reported every this many rows, to a callable taking (what, done, total).
PROGRESS_EVERY = 10_000
Progress = Callable[[str, int, int], None]


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


def import_directory(
    lines: Iterable[str], dry_run: bool = False, progress: Progress | None = None
) -> ImportReport:
    """Apply a phone export. Raises ImportRefused with every error, having written nothing."""
    progress = progress or (lambda what, done, total: None)
    rows, errors = parse_rows(lines)
    report = ImportReport(errors=errors)
    with transaction.atomic():
        # Rows that parsed are checked even when others did not, so that the person also
        # learns what the directory would refuse (an R4 number, an R2 clash) in one pass.
        plan = DirectoryPlan(rows)
        plan.check(rows, report, progress)
        if report.errors:
            raise ImportRefused(sorted(report.errors, key=error_line))
        if not dry_run:
            write(plan, progress)
    return report


def write(plan: DirectoryPlan, progress: Progress) -> None:
    """A writer that changed the same phones or numbers since the plan read them makes a
    bulk statement fail on a constraint: the file is then refused as a whole."""
    try:
        with transaction.atomic():
            plan.write(progress)
    except IntegrityError:
        raise ImportRefused([f"line 1: {CONCURRENT_CHANGE}"]) from None


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
    elif max(line_columns.values()) > MAX_LINES:
        errors.append(
            f"line 1: the header has line columns up to line{max(line_columns.values())}; "
            f"a phone has at most {MAX_LINES} lines."
        )
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
    errors = control_characters(line, values)
    if errors:
        # Nothing with a NUL may reach a query: PostgreSQL refuses NUL in text.
        return None, errors
    device = values["device"].strip()
    if not device:
        errors.append(f"line {line}: the device is empty; name the phone (e.g. SEP001122334455).")
    errors.extend(check_names(line, device, values["agent"].strip()))
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


def control_characters(line: int, values: dict[str, str]) -> list[str]:
    errors = []
    for column, value in values.items():
        found = control_character(value)
        if found:
            errors.append(
                f"line {line}: the {column} cell {value[:40]!r} holds the control character "
                f"{found!r}; a directory cell is printable text."
            )
    return errors


def check_names(line: int, device: str, agent: str) -> list[str]:
    errors = []
    problem = device_name_problem(device) if device else ""
    if problem:
        errors.append(f"line {line}: device name {device[:70]!r} is not valid: {problem}.")
    problem = agent_name_problem(agent) if agent else ""
    if problem:
        errors.append(f"line {line}: agent name {agent[:70]!r} is not valid: {problem}.")
    return errors


def check_ip(line: int, ip: str, static_ip: bool) -> list[str]:
    if not ip:
        return [f"line {line}: static_ip is yes, so the ip is required."] if static_ip else []
    if "%" in ip:
        # ipaddress takes an IPv6 zone (fe80::1%eth0), which names an interface of the
        # machine that wrote it, not a phone's address.
        return [
            f"line {line}: {ip!r} names a network interface after %; write the phone's "
            "address without it."
        ]
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return [f"line {line}: {ip!r} is not an IP address."]
    return []


# Checking the rows against the directory, in memory ------------------------------------------


def in_batches(rows: QuerySet, field: str, values: Iterable, *columns: str) -> list[tuple]:
    """`columns` of the `rows` whose `field` is one of `values`, BATCH values at a time."""
    values, found = sorted(set(values)), []
    for start in range(0, len(values), BATCH):
        chunk = values[start : start + BATCH]
        found += rows.filter(**{f"{field}__in": chunk}).values_list(*columns)
    return found


def field_messages(instance: Model) -> list[str]:
    """What the model's own field checks (lengths, validators) say about `instance`."""
    try:
        instance.clean_fields()
    except ValidationError as error:
        return error.messages
    return []


@dataclass(frozen=True, slots=True)
class Named:
    """What the rules' messages (extensions.models) read of a phone, a line or an extension:
    a stand-in, so that a message about a row held in memory needs no query."""

    label: str = ""
    device_name: str = ""
    line_number: int = 0
    number: str = ""
    extension: Named | None = None


def a_line(line_number: int, number: str) -> Named:
    return Named(line_number=line_number, extension=Named(number=number))


class DirectoryPlan:
    """The part of the directory the file touches, read in a few queries, then changed in
    memory row by row in the file's order, so that each row is judged against the rows
    before it as if they had been saved. What is to be written is collected on the way."""

    def __init__(self, rows: list[PhoneRow]) -> None:
        devices = [row.device for row in rows]
        self.phones = {phone.device_name: phone for phone in self._stored_phones(devices)}
        self.stored_static = {
            device: (phone.static_ip, phone.configured_ip) for device, phone in self.phones.items()
        }
        # device -> line number -> (row id, or None for a line added here; extension number)
        self.lines: dict[str, dict[int, tuple[int | None, str]]] = defaultdict(dict)
        numbers = {number for row in rows for number in row.lines.values()}
        for pk, device, line_number, number in self._stored_lines():
            self.lines[device][line_number] = (pk, number)
            numbers.add(number)
        self._read_extensions(numbers)
        agents = {row.agent for row in rows if row.agent}
        self.agent_ids: dict[str, int | None] = dict(
            in_batches(Agent.objects, "name", agents, "name", "pk")
        )
        self.static_holders = self._stored_static_holders(rows)
        self.new_phones: list[Phone] = []
        self.changed_phones: list[Phone] = []
        self.removed_lines: list[int] = []
        self.added_lines: list[tuple[str, int, str]] = []
        self.new_numbers: list[str] = []
        self.new_agents: list[str] = []
        self.owner_changed: set[str] = set()
        self.number_checks: dict[str, list[str]] = {}

    @staticmethod
    def _stored_phones(devices: list[str]) -> list[Phone]:
        found = []
        for start in range(0, len(devices), BATCH):
            found += Phone.objects.filter(device_name__in=devices[start : start + BATCH])
        return found

    def _stored_lines(self) -> list[tuple]:
        ids = [phone.pk for phone in self.phones.values()]
        columns = ("pk", "phone__device_name", "line_number", "extension__number")
        return in_batches(LineAppearance.objects, "phone_id", ids, *columns)

    def _read_extensions(self, numbers: set[str]) -> None:
        # number -> the device it is line 1 of (rule R2), and number -> its row and owner.
        self.line_one: dict[str, str] = {}
        for number, device, line_number in in_batches(
            LineAppearance.objects, "extension__number", numbers,
            "extension__number", "phone__device_name", "line_number",
        ):  # fmt: skip
            if line_number == 1:
                self.line_one[number] = device
        self.extension_ids: dict[str, int | None] = {}
        self.owners: dict[str, str | None] = {}
        columns = ("number", "pk", "agent__name")
        for number, pk, owner in in_batches(Extension.objects, "number", numbers, *columns):
            self.extension_ids[number], self.owners[number] = pk, owner

    @staticmethod
    def _stored_static_holders(rows: list[PhoneRow]) -> dict[str, str]:
        """configured IP -> the static phone that has it, for the file's static IPs."""
        ip_field = Phone._meta.get_field("configured_ip")
        addresses = set()
        for row in rows:
            if row.static_ip:
                try:
                    addresses.add(ip_field.to_python(row.ip))
                except ValidationError:
                    continue  # refused by the phone's own field check
        static = Phone.objects.filter(static_ip=True)
        return dict(in_batches(static, "configured_ip", addresses, "configured_ip", "device_name"))

    def check(self, rows: list[PhoneRow], report: ImportReport, progress: Progress) -> None:
        """The three passes the rules need: every phone, then every line the file no longer
        gives a phone removed (so a number may move between phones listed in either
        order), then every line added and its owner set."""
        placed = [row for row in rows if self.upsert_phone(row, report)]
        for row in placed:
            self.remove_stale_lines(row, report)
        for done, row in enumerate(placed, 1):
            self.add_lines(row, report)
            if done % PROGRESS_EVERY == 0:
                progress("rows checked", done, len(placed))

    def upsert_phone(self, row: PhoneRow, report: ImportReport) -> bool:
        phone = self.phones.get(row.device)
        created = phone is None
        if created:
            phone = Phone(device_name=row.device)
        before = phone_state(phone)
        phone.protocol = row.protocol
        phone.static_ip = row.static_ip
        if row.static_ip:
            phone.configured_ip = phone.current_ip = row.ip
        elif row.ip:
            phone.current_ip = row.ip
        messages = field_messages(phone) + self._static_clash(phone)
        if messages:
            report.errors.extend(f"line {row.line}: {message}" for message in messages)
            return False
        self.phones[row.device] = phone
        self._hold_static_ip(phone, before)
        if created:
            self.new_phones.append(phone)
            report.phones_created += 1
        elif before != phone_state(phone):
            self.changed_phones.append(phone)
            report.phones_changed += 1
        else:
            report.phones_unchanged += 1
        return True

    def _static_clash(self, phone: Phone) -> list[str]:
        holder = self.static_holders.get(phone.configured_ip) if phone.static_ip else None
        if holder is None or holder == phone.device_name:
            return []
        return [
            f"{phone.configured_ip} is already the static IP of phone {holder}; a static "
            "address identifies one phone."
        ]

    def _hold_static_ip(self, phone: Phone, before: tuple) -> None:
        _, was_static, was_ip, _ = before
        if was_static and self.static_holders.get(was_ip) == phone.device_name:
            del self.static_holders[was_ip]
        if phone.static_ip:
            self.static_holders[phone.configured_ip] = phone.device_name

    def remove_stale_lines(self, row: PhoneRow, report: ImportReport) -> None:
        lines = self.lines[row.device]
        for line_number, (pk, number) in sorted(lines.items()):
            if row.lines.get(line_number) == number:
                continue
            del lines[line_number]
            self.removed_lines.append(pk)
            if line_number == 1 and self.line_one.get(number) == row.device:
                del self.line_one[number]
            report.lines_removed += 1

    def add_lines(self, row: PhoneRow, report: ImportReport) -> None:
        phone, present = self.phones[row.device], self.lines[row.device]
        refused: set[int] = set()
        for line_number, number in sorted(row.lines.items()):
            if present.get(line_number, (None, None))[1] == number:
                continue
            messages = self.line_messages(phone, line_number, number)
            if messages:
                report.errors.extend(f"line {row.line}: {message}" for message in messages)
                refused.add(line_number)
                continue
            present[line_number] = (None, number)
            if line_number == 1:
                self.line_one[number] = row.device
            if number not in self.extension_ids:
                self.extension_ids[number], self.owners[number] = None, None
                self.new_numbers.append(number)
            self.added_lines.append((row.device, line_number, number))
            report.lines_added += 1
        # A refused line 1 is already reported; "no line 1 for the agent" would only repeat it.
        if row.agent and 1 not in refused:
            self.set_owner(row, report)

    def line_messages(self, phone: Phone, line_number: int, number: str) -> list[str]:
        """Every rule line `line_number` = `number` of `phone` breaks, in the words and the
        order of LineAppearance.conflicts (extensions.models)."""
        if number not in self.extension_ids:
            if number not in self.number_checks:
                self.number_checks[number] = field_messages(Extension(number=number))
            if self.number_checks[number]:
                return self.number_checks[number]
        errors: dict[str, list[str]] = {}
        message = protocol_conflict(phone, line_number, number) or self._line_one_conflict(
            phone, line_number, number
        )
        if message:
            errors.setdefault("extension", []).append(message)
        present = self.lines[phone.device_name]
        taken = present.get(line_number)
        if taken is not None and taken[1] != number:
            message = line_taken_message(phone, a_line(line_number, taken[1]))
            errors.setdefault("line_number", []).append(message)
        twice = [other for other, (_, held) in present.items() if held == number]
        if twice:
            message = extension_twice_message(phone, a_line(min(twice), number))
            errors.setdefault("extension", []).append(message)
        return [message for messages in errors.values() for message in messages]

    def _line_one_conflict(self, phone: Phone, line_number: int, number: str) -> str:
        holder = self.line_one.get(number) if line_number == 1 else None
        if holder is None or holder == phone.device_name:
            return ""
        # Phone.label: the device and the owner of its line 1, which is `number`.
        owner = self.owners.get(number)
        return line_one_taken_message(
            number, Named(label=f"{holder} ({owner})" if owner else holder)
        )

    def set_owner(self, row: PhoneRow, report: ImportReport) -> None:
        line_one = self.lines[row.device].get(1)
        if line_one is None:
            report.errors.append(
                f"line {row.line}: agent {row.agent} is named but the phone has no line 1 for "
                "them to own."
            )
            return
        if row.agent not in self.agent_ids:
            messages = field_messages(Agent(name=row.agent))
            if messages:
                report.errors.extend(f"line {row.line}: {message}" for message in messages)
                return
            self.agent_ids[row.agent] = None
            self.new_agents.append(row.agent)
            report.agents_created += 1
        number = line_one[1]
        if self.owners.get(number) != row.agent:
            self.owners[number] = row.agent
            self.owner_changed.add(number)

    # Writing ---------------------------------------------------------------------------------

    def write(self, progress: Progress) -> None:
        """The plan in bulk statements, in the order the constraints need: phones, lines
        removed, agents, extensions, then lines added."""
        self._write_phones()
        removed = self.removed_lines
        for start in range(0, len(removed), BATCH):
            LineAppearance.objects.filter(pk__in=removed[start : start + BATCH]).delete()
        agents = Agent.objects.bulk_create(
            [Agent(name=name) for name in self.new_agents], batch_size=BATCH
        )
        self.agent_ids.update({agent.name: agent.pk for agent in agents})
        self._write_extensions()
        phone_ids = {device: phone.pk for device, phone in self.phones.items()}
        added = self.added_lines
        for start in range(0, len(added), BATCH):
            LineAppearance.objects.bulk_create(
                LineAppearance(
                    phone_id=phone_ids[device],
                    line_number=line_number,
                    extension_id=self.extension_ids[number],
                )
                for device, line_number, number in added[start : start + BATCH]
            )
            progress("lines written", min(start + BATCH, len(added)), len(added))

    def _write_phones(self) -> None:
        # A static address that moves from one phone to another in the file: its old
        # holders let go of it first, since PostgreSQL checks the one-static-phone-per-
        # address index row by row within a statement.
        moving = [
            phone.pk
            for phone in self.changed_phones
            if self.stored_static[phone.device_name] != (phone.static_ip, phone.configured_ip)
        ]
        for start in range(0, len(moving), BATCH):
            Phone.objects.filter(pk__in=moving[start : start + BATCH]).update(static_ip=False)
        fields = ["protocol", "static_ip", "configured_ip", "current_ip"]
        Phone.objects.bulk_update(self.changed_phones, fields, batch_size=BATCH)
        # bulk_create sets each new phone's id on PostgreSQL and SQLite (RETURNING).
        Phone.objects.bulk_create(self.new_phones, batch_size=BATCH)

    def _write_extensions(self) -> None:
        """New numbers are created with their owner; a number another writer created in
        the meantime is taken as it is (rule R1: one row per number) and given its owner."""
        Extension.objects.bulk_create(
            [
                Extension(number=number, agent_id=self.agent_ids.get(self.owners[number]))
                for number in self.new_numbers
            ],
            batch_size=BATCH,
            ignore_conflicts=True,
        )
        wanted = set(self.new_numbers) | self.owner_changed
        changed = []
        columns = ("pk", "number", "agent_id")
        for pk, number, agent_id in in_batches(Extension.objects, "number", wanted, *columns):
            self.extension_ids[number] = pk
            owner_id = self.agent_ids.get(self.owners[number]) if self.owners[number] else None
            if number in self.owner_changed and agent_id != owner_id:
                changed.append(Extension(pk=pk, agent_id=owner_id))
        Extension.objects.bulk_update(changed, ["agent"], batch_size=BATCH)


def protocol_conflict(phone: Phone, line_number: int, number: str) -> str:
    if not is_sip_user_name(number):
        return ""  # only a SIP user name is tied to a protocol; skip building the line
    line = LineAppearance(phone=phone, line_number=line_number)
    line._pending_extension = Extension(number=number)
    return line.protocol_conflict()


def phone_state(phone: Phone) -> tuple:
    return (phone.protocol, phone.static_ip, phone.configured_ip, phone.current_ip)
