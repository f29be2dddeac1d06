"""Who a call and its recording belong to: the one place in the recorder that writes it.

The directory answers who was at an address at a moment (extensions/services.py,
who_was_at). This module applies the answer:

- attribute_call(): a call's recorded side gets its extension, phone and person when the
  call starts (and again at its end if nobody was found then). The number the signalling
  names for that side is kept only when the phone holds it; any other number is a claim
  (a spoofed From), and the directory's word replaces it.
- adopt_call(): a recording whose signalling was not on the wire (a ShoreTel phone's RTP)
  takes the parties a call system reported for it (the TAPI feed), and its person from the
  same directory rule. Integrations hand their facts here instead of writing a recording.

A Recording copies its Call's attribution when it is written (recordings/finish.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from extensions.models import Binding
from extensions.services import Attribution, who_was_at
from recorder.models import Call, Recording


def attribute_call(call: Call, local_number: str, local_ip: str) -> None:
    """The recorded side's extension, phone and person, as the directory had them when
    the call started."""
    call.extension = local_number[:128]
    if not local_ip:
        return
    found = who_was_at(local_ip, call.started_at)
    if found is None:
        return
    call.phone = found.phone
    call.agent = found.agent
    if not call.extension or not _holds(found, call.extension, local_ip):
        call.extension = found.extension_number or call.extension


def _holds(found: Attribution, number: str, ip: str) -> bool:
    """Whether the phone found at `ip` holds `number`: bound there, or one of its lines."""
    if number == found.extension_number:
        return True
    if Binding.objects.filter(ip=ip, extension_number=number, ended_at__isnull=True).exists():
        return True
    return found.phone is not None and found.phone.lines.filter(extension__number=number).exists()


@dataclass(frozen=True, slots=True)
class ReportedCall:
    """What a call system reported of a call whose signalling QMS did not see."""

    call_id: str
    direction: str
    extension: str
    far_number: str
    far_name: str


def adopt_call(recording: Recording, reported: ReportedCall) -> None:
    """Give `recording` the reported call's id, line, direction and far party, and its
    person by the directory if it has none yet. Written with an UPDATE of what differs,
    so no post_save runs again and a second adoption of the same call changes nothing."""
    wanted: dict[str, object] = {
        "call_id": reported.call_id,
        "conversation_id": reported.call_id,
        "direction": reported.direction,
        "extension": reported.extension,
        "remote_party": reported.far_number,
        "remote_name": reported.far_name,
    }
    if recording.agent_id is None and recording.local_ip:
        found = who_was_at(recording.local_ip, recording.started_at)
        if found is not None:
            wanted["agent_id"] = found.agent.pk if found.agent else None
            wanted["phone_id"] = found.phone.pk if found.phone else None
    changed = {name: value for name, value in wanted.items() if getattr(recording, name) != value}
    if changed:
        Recording.objects.filter(pk=recording.pk).update(**changed)
        for name, value in changed.items():
            setattr(recording, name, value)


def must_not_record(call: Call, do_not_record: set[str]) -> bool:
    """The engine's rule again, once the call is attributed: the number called, or the
    extension of the phone the directory found for the recorded side. A number the
    directory did not confirm (no phone found) is a claim, and decides nothing."""
    if call.callee in do_not_record:
        return True
    return call.phone_id is not None and call.extension in do_not_record
