"""RTP read in place from the public captures with dpkt: (arrival, UDP payload) per packet.

Only Ethernet/Linux-SLL, IPv4, UDP; enough for the RTP-bearing files the media tests use.
The captures are never copied into the project.
"""

from __future__ import annotations

from pathlib import Path

import dpkt

RTCP_PACKET_TYPES = range(200, 205)


def _frames(path: Path):
    with path.open("rb") as capture:
        reader = (
            dpkt.pcapng.Reader(capture) if path.suffix == ".pcapng" else dpkt.pcap.Reader(capture)
        )
        linktype = reader.datalink()
        for at, frame in reader:
            yield at, linktype, frame


def _udp(linktype: int, frame: bytes) -> dpkt.udp.UDP | None:
    link = (
        dpkt.sll.SLL(frame)
        if linktype == dpkt.pcap.DLT_LINUX_SLL
        else dpkt.ethernet.Ethernet(frame)
    )
    ip = link.data
    if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP):
        return ip.data
    return None


def rtp_packets(
    path: Path, dport: int | None = None, payload_types: set[int] | None = None
) -> list[tuple[float, bytes]]:
    """Every RTP-looking UDP payload (version 2, not RTCP) to `dport`, of `payload_types`."""
    packets = []
    for at, linktype, frame in _frames(path):
        udp = _udp(linktype, frame)
        if udp is None or (dport is not None and udp.dport != dport):
            continue
        payload = bytes(udp.data)
        if len(payload) < 12 or payload[0] >> 6 != 2 or payload[1] in RTCP_PACKET_TYPES:
            continue
        if payload_types is None or payload[1] & 0x7F in payload_types:
            packets.append((at, payload))
    return packets
