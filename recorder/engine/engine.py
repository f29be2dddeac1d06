"""The capture engine: packets in, observations out, RTP tied to live calls.

The per-packet path never touches the database or the broker. RTP to a known media
endpoint takes a fast path of a few byte comparisons and one dict lookup; everything else
is peeled (link layers, tunnels, fragments, TCP) and handed to the signalling decoders,
whose observations go to a sink (the directory and the call log live behind it).
"""

from __future__ import annotations

import logging
import resource
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from integrations.bounds import Refused, bounded
from integrations.observations import (
    UNSIGNALLED_CALL_PREFIX,
    BindingSeen,
    BindingSource,
    CallEvent,
    CallProtocol,
    CallSignal,
    EncryptedSignallingSeen,
    Endpoint,
    MediaOffer,
    Observation,
    Side,
)
from integrations.sccp.tracker import SccpTracker
from integrations.sip.framing import SipStreamFramer
from integrations.sip.message import looks_like_sip
from integrations.sip.tracker import SipTracker
from recorder.capture import hep
from recorder.capture.ip import PROTO_TCP, PROTO_UDP, Datagram, IpDecoder
from recorder.capture.link import LINKTYPE_ETHERNET, LinkError, ip_of_frame
from recorder.capture.sources import Packet, PcapFormat
from recorder.capture.tcp import TcpReassembler
from recorder.engine.calls import CallTable, LiveCall, MediaStream, endpoint_of_key
from recorder.engine.floods import (
    NEW_NUMBER_FLOOD,
    PROBATION_FULL,
    SPOOL_RESERVE,
    NewNumbers,
    SpoolHandles,
    StreamProbation,
)
from recorder.engine.pcapfile import (
    ETHERNET_IPV4_NO_OPTIONS,
    feed_pcap,
)
from recorder.engine.sink import EngineStats, Sink
from recorder.media.rtp import looks_like_rtp
from recorder.media.rtplog import RtpLog, log_name

log = logging.getLogger(__name__)

SCCP_PORT = 2000
SIP_PORTS = {5060}
# Signalling QMS cannot read passively: SIP over TLS and secure SCCP (TLS on 2443).
ENCRYPTED_SIGNALLING_PORTS = {5061: "sip-tls", 2443: "sccp-tls"}
TICK_SECONDS = 1.0
ENCRYPTED_REPORT_EVERY = 300.0
# An unsignalled call ends when its RTP has been silent this long: with no BYE to wait
# for, the media's own end is the call's.
UNSIGNALLED_SILENCE = 10.0
INTERNAL_ERRORS_LOGGED = 20
# Counted, but not errors: traffic that is not for QMS, and the ordinary life of TCP.
NOT_ERRORS = {
    "not-ip",
    "pppoe-not-ip",
    "gre-not-mirror",
    "not-udp-or-tcp",
    "tcp-out-of-order",
    "tcp-retransmission",
    "tcp-idle-expired",
    *hep.NOT_ERRORS,
}


class Engine:
    def __init__(
        self,
        sink: Sink,
        phone_ips: set[str] | None = None,
        spool_root: Path | None = None,
        do_not_record: set[str] | None = None,
        record_unsignalled: bool = False,
        max_call_seconds: float = 0.0,
        do_not_record_ips: set[str] | None = None,
    ) -> None:
        self.sink = sink
        self.stats = EngineStats()
        # Addresses of phones QMS knows: the directory's, plus every binding seen since.
        self.phone_ips = set(phone_ips or ())
        # With a spool root, the RTP of every call is logged there for recording, one
        # open file per live call: 2,000 calls need more than the usual 1,024 files.
        self.spool_root = spool_root
        if spool_root is not None:
            allow_open_files()
        self.handles = SpoolHandles.of_this_process()
        self.do_not_record = set(do_not_record or ())
        # Addresses whose trusted bindings are do-not-record extensions.
        self.do_not_record_ips = set(do_not_record_ips or ())
        self.record_unsignalled = record_unsignalled
        self.calls = CallTable(
            self.phone_ips.__contains__,
            max_length=max_call_seconds,
            open_log=self._open_log,
            signalling_open=self._signalling_open,
        )
        self.calls.caps = self.stats.caps
        self.calls.on_settled = self._settled
        self.media = self.calls.media  # the fast path's view of the media index
        self.new_numbers = NewNumbers()
        self.probation = StreamProbation()
        self.ip = IpDecoder(self.count)
        self.sip = SipTracker()
        self.sccp = SccpTracker()
        self.tcp = TcpReassembler(self._classify_stream, self.count)
        self.clock = 0.0
        self.next_tick = 0.0
        self.encrypted_reported: dict[str, float] = {}
        # The capture id of the HEP agent whose packet is being fed (None for a mirror's):
        # a call that packet opens keeps it (recorder/nodes/live.py feed_hep).
        self.hep_capture_id: int | None = None

    def count(self, kind: str, number: int = 1) -> None:
        if kind in NOT_ERRORS:
            self.stats.ignored[kind] += number
        else:
            self.stats.errors[kind] += number

    def run(self, packets: Iterable[Packet | None], wall_clock: Callable[[], float]) -> None:
        """Feed every packet; a None from a live source means "no packet for a while"."""
        for packet in packets:
            if packet is None:
                self.tick(max(self.clock, wall_clock()))
            else:
                self.feed(*packet)

    def adopt_directory(
        self,
        phone_ips: set[str],
        do_not_record: set[str],
        do_not_record_ips: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        """What the directory learned since the engine started (a phone the TAPI poller
        bound, an extension marked do-not-record), taken up while capturing. Safe from
        another thread: phone addresses are added in place to the one set the call table
        reads, and the do-not-record list is replaced whole."""
        self.phone_ips |= phone_ips
        self.do_not_record = set(do_not_record)
        self.do_not_record_ips = set(do_not_record_ips)

    def feed_pcap(self, found: PcapFormat, chunks: Iterable[bytes]) -> None:
        """A classic pcap file's chunks, through the file's fast path (pcapfile.py)."""
        feed_pcap(self, found, chunks)

    def feed(self, at: float, linktype: int, frame: bytes) -> None:
        stats = self.stats
        stats.packets += 1
        stats.octets += len(frame)
        if at >= self.next_tick:
            self.tick(at)
        self.take(at, linktype, frame)

    def take(self, at: float, linktype: int, frame: bytes) -> None:
        """One packet, counted and after its tick: RTP to its stream, the rest to the slow
        path."""
        if (
            linktype == LINKTYPE_ETHERNET
            and len(frame) >= 42
            and frame[12:15] == ETHERNET_IPV4_NO_OPTIONS
            and frame[23:24] == b"\x11"
            and not frame[20] & 0xBF
            and not frame[21]
        ):
            stream = self.media.get(frame[30:34] + frame[36:38])
            if stream is not None:
                self._count_rtp(stream, frame[42:], at)
                return
        self.slow_path(at, linktype, frame)

    def slow_path(self, at: float, linktype: int, frame: bytes) -> None:
        # The packet loop's edge: a packet that trips a bug is counted and logged, and
        # the capture goes on with the next one.
        try:
            self._dispatch(at, linktype, frame)
        except Exception:
            self.count("internal-error")
            if self.stats.errors["internal-error"] <= INTERNAL_ERRORS_LOGGED:
                log.exception("packet at %.6f could not be processed", at)

    def _dispatch(self, at: float, linktype: int, frame: bytes) -> None:
        try:
            datagram = self.ip.decode(ip_of_frame(linktype, frame), at)
        except LinkError as error:
            self.count(error.kind)
            return
        if datagram is None:
            return
        if datagram.proto == PROTO_UDP:
            self._udp(datagram, at)
        elif datagram.proto == PROTO_TCP:
            self._tcp(datagram, at)
        else:
            self.count("not-udp-or-tcp")

    def _udp(self, datagram: Datagram, at: float) -> None:
        header = datagram.payload
        if len(header) < 8:
            self.count("truncated-udp")
            return
        source_port, destination_port = struct.unpack_from("!HH", header)
        payload = header[8:]
        stream = self.media.get(datagram.dst + header[2:4])
        if stream is not None:
            self._count_rtp(stream, payload, at)
        elif looks_like_sip(payload):
            src = Endpoint(datagram.src_ip, source_port)
            dst = Endpoint(datagram.dst_ip, destination_port)
            self._observe_all(self.sip.feed(payload, src, dst, self._when(at), "udp"))
            self.stats.sip_messages += 1
        elif destination_port in ENCRYPTED_SIGNALLING_PORTS:
            self._encrypted(datagram.src_ip, ENCRYPTED_SIGNALLING_PORTS[destination_port], at)
        elif looks_like_rtp(payload):
            self._unmatched_rtp(datagram, header, payload, at)

    def _unmatched_rtp(self, datagram: Datagram, header: bytes, payload: bytes, at: float) -> None:
        """RTP to an address no signalling announced.

        Sent from a live call's own media address, it is that party's voice on its way to
        a media relay or through NAT to an address no SDP named: it belongs to that call,
        never to a call of its own, and is recorded as its direction when that is safe
        (see _from_media_address). Packets to a call that ended moments ago are its
        stragglers. Otherwise it may be a known phone's unsignalled call.
        """
        destination_key = datagram.dst + header[2:4]
        sender = self.media.get(datagram.src + header[0:2])
        if sender is not None:
            self._from_media_address(sender, destination_key, payload, at)
            return
        if self.calls.ended_recently(destination_key, at):
            self.stats.rtp_after_end += 1
            return
        source_port, destination_port = struct.unpack_from("!HH", header)
        if not self._unsignalled(datagram, source_port, destination_port, payload, at):
            self.stats.rtp_unmatched += 1

    def _from_media_address(
        self, sender: MediaStream, destination: bytes, payload: bytes, at: float
    ) -> None:
        """RTP from a call's media address to an address no SDP named: the other party's
        direction once the call table has learned that address (CallTable.follow, the rule
        of docs/capture.md), else counted as relayed. Packets held on probation are counted
        as relayed on arrival, and moved to the recorded ones when the address is learned."""
        recorded = self.calls.follow(sender, destination, payload, at)
        self.stats.rtp_relayed += 1 - recorded
        self.stats.rtp_packets += recorded

    def _settled(self, packets: int) -> None:
        """Packets held on a probation decided at its call's end: recorded, not relayed."""
        self.stats.rtp_relayed -= packets
        self.stats.rtp_packets += packets

    def _unsignalled(
        self, datagram: Datagram, source_port: int, destination_port: int, payload: bytes,
        at: float,
    ) -> bool:  # fmt: skip
        """RTP to or from a known phone that no signalling announced (encrypted SIP,
        ShoreTel's own signalling): once it looks like a real stream (StreamProbation),
        recorded as an unsignalled call of that phone, its far end taken to receive where
        it sends from (symmetric RTP, RFC 4961). True when the packet was taken."""
        if not self.record_unsignalled or min(source_port, destination_port) < 1024:
            return False
        source = datagram.src + struct.pack("!H", source_port)
        destination = datagram.dst + struct.pack("!H", destination_port)
        if datagram.dst_ip in self.phone_ips:
            pair, to_phone = (destination, source), True
        elif datagram.src_ip in self.phone_ips:
            pair, to_phone = (source, destination), False
            if endpoint_of_key(destination) in self.sccp.fork_destinations:
                self.stats.rtp_forked += 1  # a copy of a call's voice, to a recorder
                return True
        else:
            return False
        held = self.probation.offer(pair, to_phone, payload, destination, at)
        if held is None:
            if self.probation.forgotten:
                self.stats.caps[PROBATION_FULL] = self.probation.forgotten
            return False
        if not self._begin_unsignalled(endpoint_of_key(pair[0]), endpoint_of_key(pair[1]),
                                       held[0][0]):  # fmt: skip
            return False
        # The packets held on probation were counted unmatched as they came: now the call's.
        self.stats.rtp_unmatched -= len(held) - 1
        for arrival, receiver, packet in held:
            stream = self.media.get(receiver)
            if stream is not None:
                self._count_rtp(stream, packet, arrival)
        return True

    def _begin_unsignalled(self, phone: Endpoint, far: Endpoint, at: float) -> bool:
        call_id = f"{UNSIGNALLED_CALL_PREFIX}{phone}:{far}:{int(at)}"
        media = (MediaOffer(Side.CALLER, phone), MediaOffer(Side.CALLEE, far))
        when = self._when(at)
        for event in (CallEvent.START, CallEvent.ANSWER):
            self.observe(
                CallSignal(call_id, event, when, CallProtocol.RTP, local_side=Side.CALLER,
                           caller_ip=phone.ip, callee_ip=far.ip, media=media)
            )  # fmt: skip
        call = self.calls.calls.get(call_id)
        if call is None:
            return False
        call.silence_limit = UNSIGNALLED_SILENCE
        self.stats.unsignalled_calls += 1
        return True

    def _open_log(self, call: LiveCall) -> RtpLog | None:
        """Start logging a call's RTP for its recording, unless it must not be recorded."""
        if self.spool_root is None:
            return None
        if self._must_not_record(call):
            # Asked again at each of the call's offers: counted once, as a call.
            if not call.not_recorded:
                call.not_recorded = True
                self.stats.not_recorded += 1
            return None
        if not self.handles.may_open(self.calls.open_logs, call.answered_at is not None):
            # The last handles are kept for answered calls: this one asks again at its answer.
            self.stats.caps[SPOOL_RESERVE] += 1
            return None
        path = self.spool_root / log_name(call.call_id, call.started_at)
        manifest = {
            "call_id": call.call_id,
            "protocol": call.protocol,
            "started_at": call.started_at,
        }
        try:
            rtp_log = _new_log(path, manifest)
        except OSError as error:
            self.count("spool-unavailable")
            log.error("cannot spool call %s: %s", call.call_id, error)
            return None
        call.spool = str(path)
        return rtp_log

    def _signalling_open(self, call_id: str) -> bool:
        """A SIP dialog the tracker still holds and no BYE or CANCEL has ended."""
        return self.sip.holds_call(call_id)

    def _must_not_record(self, call: LiveCall) -> bool:
        """Do-not-record is decided by the number called and by the trusted bindings of
        the recorded phone, never by the number a caller claims: an outside caller whose
        caller ID is a do-not-record extension is recorded (docs/directory.md)."""
        if call.callee in self.do_not_record:
            return True
        return bool(call.direction) and call.local_ip in self.do_not_record_ips

    def _encrypted(self, phone_ip: str, label: str, at: float) -> None:
        """Count TLS signalling, and tell the sink about each phone now and then."""
        self.stats.encrypted_signalling[label] += 1
        last = self.encrypted_reported.get(phone_ip)
        if last is None or at - last >= ENCRYPTED_REPORT_EVERY:
            self.encrypted_reported[phone_ip] = at
            self.sink.encrypted(EncryptedSignallingSeen(phone_ip, label, self._when(at)))

    def _count_rtp(self, stream: MediaStream, payload: bytes, at: float) -> None:
        self.stats.rtp_packets += 1
        stream.take(at, payload)

    def _tcp(self, datagram: Datagram, at: float) -> None:
        segment = datagram.payload
        if len(segment) < 20:
            self.count("truncated-tcp")
            return
        source_port, destination_port, seq = struct.unpack_from("!HHI", segment)
        header_length = (segment[12] >> 4) * 4
        if header_length < 20 or header_length > len(segment):
            self.count("bad-tcp-header")
            return
        for port in (source_port, destination_port):
            label = ENCRYPTED_SIGNALLING_PORTS.get(port)
            if label is not None:
                phone_ip = datagram.src_ip if port == destination_port else datagram.dst_ip
                self._encrypted(phone_ip, label, at)
                return
        src = Endpoint(datagram.src_ip, source_port)
        dst = Endpoint(datagram.dst_ip, destination_port)
        self.tcp.segment(src, dst, seq, segment[13], segment[header_length:], at)

    def _classify_stream(self, client: Endpoint, server: Endpoint, payload: bytes):
        if SCCP_PORT in (client.port, server.port):
            return SccpSession(self, client, server)
        if looks_like_sip(payload) or SIP_PORTS & {client.port, server.port}:
            return SipConnection(self, client, server)
        return None

    def _when(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, UTC)

    def _observe_all(self, observations: list[Observation]) -> None:
        for observation in observations:
            self.observe(observation)

    def observe(self, observation: Observation) -> None:
        # Wire text is cleaned and bounded once, here, before anything keeps it.
        try:
            observation = bounded(observation)
        except Refused as refused:
            self.count(refused.kind)
            return
        if isinstance(observation, CallSignal):
            call = self.calls.apply(observation, observation.at.timestamp())
            for evicted in self.calls.take_evicted():
                self.sink.call(evicted.snapshot(CallEvent.END))
            if call is not None:
                if call.hep_capture_id is None:
                    call.hep_capture_id = self.hep_capture_id
                self.sink.call(call.snapshot(observation.event))
        elif isinstance(observation, BindingSeen):
            if not self._new_number_allowed(observation):
                return
            self.stats.bindings += 1
            # A registration places a phone; a call's binding may be a trunk's or a
            # gateway's (the directory decides, see learns_from_call), so it does not.
            if not observation.unregister and observation.source != BindingSource.SIP_CALL:
                self.phone_ips.add(observation.ip)
            self.sink.binding(observation)

    def _new_number_allowed(self, seen: BindingSeen) -> bool:
        """A number never seen before counts against its address's share of new numbers
        a minute (a REGISTER flood's random extensions); over it, the binding is dropped."""
        if self.new_numbers.allows(seen.extension, seen.ip, seen.seen_at.timestamp()):
            return True
        self.stats.caps[NEW_NUMBER_FLOOD] += 1
        return False

    def tick(self, now: float) -> None:
        """Once a second of capture time: expire what waited too long."""
        self.clock = max(self.clock, now)
        self.next_tick = now + TICK_SECONDS
        self.ip.defragmenter.expire(now)
        self.tcp.expire(now)
        # Spooled audio reaches the file system at least once a second of capture.
        for call in self.calls.calls.values():
            if call.log is not None:
                call.log.flush()
        when = self._when(now)
        self._observe_all(self.sip.expire(when))
        self._observe_all(self.sccp.expire(when))
        ended, begun = self.calls.sweep(now)
        for call in ended:
            self.sink.call(call.snapshot(CallEvent.END))
        for call in begun:
            self.sink.call(call.snapshot(CallEvent.START))

    def capture_dropped(self, packets: int) -> None:
        """The capture lost `packets` since it last said (its ring was full): every call
        live now is marked, so its recording tells a capture loss from a network loss."""
        self.stats.capture_dropped += packets
        for call in self.calls.calls.values():
            call.capture_dropped += packets

    def finish(self) -> None:
        """The capture is over: end the calls still live, at their last sign of life.

        TCP sessions are not closed: QMS stopping says nothing about the phones, whose
        bindings stay until they unregister or expire.
        """
        # A call refused moments before the end waited for a retry that will not come.
        self._observe_all(self.sip.end_refused())
        for ended in self.calls.finish_all("capture-ended"):
            self.sink.call(ended.snapshot(CallEvent.END))


def allow_open_files() -> None:
    """Raise this process's open-file limit to the most it may have (RLIMIT_NOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SipConnection:
    """SIP over one TCP connection: a framer per direction feeding the SIP tracker."""

    def __init__(self, engine: Engine, client: Endpoint, server: Endpoint) -> None:
        self.engine = engine
        self.ends = {True: (client, server), False: (server, client)}
        self.framers = {True: SipStreamFramer(), False: SipStreamFramer()}

    def data(self, from_client: bool, chunk: bytes, at: float) -> None:
        src, dst = self.ends[from_client]
        for message in self.framers[from_client].feed(chunk):
            self.engine.stats.sip_messages += 1
            observations = self.engine.sip.feed(message, src, dst, self.engine._when(at), "tcp")
            self.engine._observe_all(observations)

    def gap(self, from_client: bool) -> None:
        self.framers[from_client].gap()

    def close(self, at: float) -> None:
        self.framers.clear()


class SccpSession:
    """One Skinny station session: the phone's TCP connection to its CallManager."""

    def __init__(self, engine: Engine, client: Endpoint, server: Endpoint) -> None:
        self.engine = engine
        # The CallManager listens on 2000; the other end is the phone.
        if server.port == SCCP_PORT:
            self.phone, self.cm, self.phone_is_client = client, server, True
        else:
            self.phone, self.cm, self.phone_is_client = server, client, False

    def data(self, from_client: bool, chunk: bytes, at: float) -> None:
        from_phone = from_client == self.phone_is_client
        before = sum(self.engine.sccp.messages.values())
        observations = self.engine.sccp.feed(
            chunk, self.phone, self.cm, from_phone, self.engine._when(at)
        )
        self.engine.stats.sccp_messages += sum(self.engine.sccp.messages.values()) - before
        self.engine._observe_all(observations)

    def gap(self, from_client: bool) -> None:
        self.engine.sccp.gap(self.phone, self.cm, from_client == self.phone_is_client)

    def close(self, at: float) -> None:
        self.engine._observe_all(self.engine.sccp.close(self.phone, self.cm, self.engine._when(at)))


def _new_log(path: Path, manifest: dict) -> RtpLog:
    """A call's log in the spool folder, made again should it be gone (not there yet,
    or removed under a running capture)."""
    try:
        return RtpLog(path, manifest)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return RtpLog(path, manifest)
