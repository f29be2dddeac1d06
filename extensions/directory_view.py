"""What the capture engine needs to know of the directory, read at start-up and refresh:
which addresses are phones, and which numbers and phones must not be recorded."""

from __future__ import annotations

from extensions.models import Binding, Extension, Phone
from extensions.trust import call_servers
from integrations.observations import BindingSource


def known_phone_ips() -> set[str]:
    """Every address the directory believes is a phone: configured, current, or bound."""
    ips = set(Phone.objects.exclude(current_ip=None).values_list("current_ip", flat=True))
    ips |= set(Phone.objects.exclude(configured_ip=None).values_list("configured_ip", flat=True))
    ips |= set(Binding.objects.filter(ended_at__isnull=True).values_list("ip", flat=True))
    servers = call_servers()
    return {ip for ip in ips if not servers.relays(ip)}  # the call system's own are no phones


def do_not_record_numbers() -> set[str]:
    return set(Extension.objects.filter(do_not_record=True).values_list("number", flat=True))


def do_not_record_ips() -> set[str]:
    """The addresses of phones that the call system binds to a do-not-record extension
    (a call's From is no such binding): their calls are not recorded, whoever they call."""
    bound = Binding.objects.filter(ended_at__isnull=True, extension__do_not_record=True).exclude(
        source=BindingSource.SIP_CALL
    )
    ips = set(bound.values_list("ip", flat=True))
    static = Phone.objects.filter(
        static_ip=True, lines__line_number=1, lines__extension__do_not_record=True
    ).exclude(configured_ip=None)
    return ips | set(static.values_list("configured_ip", flat=True))
