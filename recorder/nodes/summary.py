"""The end-of-run summary shared by import_pcap and sniff."""

from __future__ import annotations

from collections import Counter

from recorder.capture.sources import CaptureNotes
from recorder.capture.tcpdump import InterfaceStats
from recorder.engine.engine import Engine
from recorder.nodes.caps import caps_line
from recorder.recordings.finisher import Finisher
from recorder.sinks.database import DatabaseSink


def summary_lines(
    engine: Engine,
    sink: DatabaseSink,
    seconds: float,
    notes: CaptureNotes | None = None,
    interfaces: list[InterfaceStats] = (),
) -> list[str]:
    """What a run did, for its last lines; a live capture's `interfaces` with their
    counters, so a loss in the capture is never mistaken for one on the network."""
    stats = engine.stats
    rate = stats.packets / seconds if seconds > 0 else 0.0
    lines = [
        f"packets: {stats.packets} in {seconds:.1f} s ({rate:,.0f} packets/s)",
        f"SIP messages: {stats.sip_messages}",
        f"SCCP messages: {stats.sccp_messages}",
        f"bindings learned: {stats.bindings} ({format_counts(sink.outcomes) or 'none applied'})",
        f"calls seen: {engine.calls.calls_seen}"
        + (f" ({stats.unsignalled_calls} unsignalled)" if stats.unsignalled_calls else ""),
        f"RTP packets: {stats.rtp_packets} matched to calls, {stats.rtp_unmatched} unmatched",
        *rtp_details(stats, engine.calls.latched_packets),
    ]
    if engine.calls.spool_dropped_packets:
        lines.append(
            "RTP packets not recorded, the spool being full or gone: "
            f"{engine.calls.spool_dropped_packets}"
        )
    if stats.encrypted_signalling:
        lines.append(
            "encrypted signalling packets (not decodable): "
            + format_counts(stats.encrypted_signalling)
        )
    if stats.ignored:
        lines.append(
            f"not signalling or media (counted, not errors): {format_counts(stats.ignored)}"
        )
    ignored = signalling_ignored(engine)
    if ignored:
        lines.append(f"signalling understood and not followed (counted): {format_counts(ignored)}")
    if stats.caps:
        lines.append(caps_line(stats.caps))
    errors = decode_errors(engine)
    lines.append(f"decode errors: {format_counts(errors) if errors else 'none'}")
    if sink.failures:
        lines.append(f"storage failures: {format_counts(sink.failures)}")
    lines.append(finished_line(sink.finisher))
    lines += [interface_line(found) for found in interfaces]
    # Last, where they are seen: a file's damage says how much of the rest to trust.
    return lines + (notes.lines() if notes is not None else [])


def finished_line(finisher: Finisher) -> str:
    """How the run's recordings came out, and where they were finished."""
    where = (
        f"in {finisher.processes} process{'es' if finisher.processes > 1 else ''} of their own"
        if finisher.processes
        else "in the capture process"
    )
    return f"recordings finished {where}: {format_counts(finisher.outcomes) or 'none'}"


def interface_line(found: InterfaceStats) -> str:
    """One live interface's counters as libpcap keeps them (tcpdump's figures), its two
    rings' together; the signalling ring's drops said apart, as they cost calls."""
    return (
        f"{found.interface}: {found.received} received by the kernel, "
        f"{found.dropped} dropped by the kernel ({found.signalling_dropped} of them "
        f"signalling), {found.interface_dropped} dropped by the interface"
    )


def rtp_details(stats, latched: int) -> list[str]:
    details = []
    if latched:
        details.append(f"RTP to an address no SDP named, learned (NAT) and recorded: {latched}")
    if stats.rtp_relayed:
        details.append(f"RTP copies on their way to a media relay (counted): {stats.rtp_relayed}")
    if stats.rtp_forked:
        details.append(
            f"RTP copies to a recorder, SCCP recording forks (counted): {stats.rtp_forked}"
        )
    if stats.rtp_after_end:
        details.append(f"RTP arriving after its call ended (counted): {stats.rtp_after_end}")
    return details


def signalling_ignored(engine: Engine) -> Counter:
    """What the trackers understood and let be: a retry that is not the caller's, a
    recording fork of an SCCP call."""
    ignored = Counter({f"sip {kind}": n for kind, n in engine.sip.ignored.items()})
    ignored.update({f"sccp {kind}": n for kind, n in engine.sccp.ignored.items()})
    return ignored


def decode_errors(engine: Engine) -> Counter:
    errors = Counter(engine.stats.errors)
    errors.update({f"sip {kind}": n for kind, n in engine.sip.errors.items()})
    errors.update({f"sccp {kind}": n for kind, n in engine.sccp.errors.items()})
    return errors


def format_counts(counts: Counter) -> str:
    return ", ".join(f"{kind} {number}" for kind, number in counts.most_common())
