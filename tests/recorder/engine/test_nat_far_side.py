"""RTP a party sends from its announced media address to an address no SDP named (a NAT'd
far end's real address, a media relay): recorded as its direction when that is safe, only
counted when it is not (docs/capture.md, "Media relays and NAT").

Every call here is a SIP call from a phone at 10.50.0.11 (receiving at :16384) to a far
end whose SDP names 192.168.1.20:4000, an address behind its NAT. Each party's voice is
its own pseudo-random G.711 µ-law, so a channel can be checked sample for sample against
an independent decode (audioop) and no sample of the other voice can hide in it.
"""

from __future__ import annotations

import audioop
import io
import random
import struct
import wave
from array import array
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command

from integrations.observations import CallEvent, CallSignal, Endpoint, MediaOffer, Side
from recorder.capture.synthesis import rtp, sdp, sip, udp, write_pcap
from recorder.engine.calls import LATCH_PROBATION, CallTable, endpoint_key
from recorder.engine.engine import Engine
from recorder.media.rtplog import read_log
from recorder.models import Recording
from tests.recorder.collected import Collected

START = 1_700_000_000.0
PHONE = Endpoint("10.50.0.11", 16384)
FAR_SDP = Endpoint("192.168.1.20", 4000)  # what the far end's SDP says
FAR_NAT = Endpoint("203.0.113.7", 31000)  # where its RTP really comes from, and goes to
PACKET = 0.02
SSRC_PHONE, SSRC_FAR = 0x1111, 0x2222

Frames = list[tuple[float, bytes]]


def signalling(call_id: str, phone: Endpoint, far: Endpoint, at: float) -> tuple[Frames, Frames]:
    """(INVITE with the phone's SDP and the far end's 200 OK, the phone's BYE) at `at`."""
    ends = ["From: <sip:9001@pbx>;tag=a", "To: <sip:0612345678@pbx>;tag=b", f"Call-ID: {call_id}"]
    via = f"Via: SIP/2.0/UDP {phone.ip}:5060;branch=z9hG4bK{call_id}"
    invite_headers = [via, ends[0], "To: <sip:0612345678@pbx>", ends[2], "CSeq: 1 INVITE"]
    invite = sip(
        "INVITE sip:0612345678@10.50.0.1 SIP/2.0",
        [*invite_headers, f"Contact: <sip:9001@{phone.ip}>"],
        sdp(phone.ip, phone.port),
    )
    ok_headers = [via, *ends, "CSeq: 1 INVITE", "Contact: <sip:far@10.50.0.1>"]
    ok = sip("SIP/2.0 200 OK", ok_headers, sdp(far.ip, far.port))
    bye = sip("BYE sip:far@10.50.0.1 SIP/2.0", [via, *ends, "CSeq: 2 BYE"])
    start = [
        (at, udp(phone.ip, 5060, "10.50.0.1", 5060, invite)),
        (at + 0.01, udp("10.50.0.1", 5060, phone.ip, 5060, ok)),
    ]
    return start, [(0.0, udp(phone.ip, 5060, "10.50.0.1", 5060, bye))]


def voice(seed: int, packets: int) -> list[bytes]:
    """A voice of its own: pseudo-random µ-law, 160 samples (20 ms) a packet."""
    generator = random.Random(seed)
    return [generator.randbytes(160) for _ in range(packets)]


def stream(
    source: Endpoint, destination: Endpoint, ssrc: int, payloads: list[bytes], start: float
) -> Frames:
    return [
        (start + index * PACKET,
         udp(source.ip, source.port, destination.ip, destination.port,
             rtp(index, index * 160, ssrc, payload)))
        for index, payload in enumerate(payloads)
    ]  # fmt: skip


def call_frames(media: Frames, call_id: str = "nat-1", far_sdp: Endpoint = FAR_SDP) -> Frames:
    """A whole call around `media`: signalling first, the BYE after its last packet."""
    start, bye = signalling(call_id, PHONE, far_sdp, START)
    end = max(at for at, _ in media) + 0.05
    return sorted(start + media + [(end, bye[0][1])], key=lambda frame: frame[0])


def run(frames: Frames, tmp_path: Path) -> tuple[Engine, Collected]:
    sink = Collected()
    engine = Engine(sink, spool_root=tmp_path / "spool")
    for at, frame in sorted(frames, key=lambda frame: frame[0]):
        engine.feed(at, 1, frame)
    engine.finish()
    return engine, sink


def logged_ssrcs(sink: Collected, receiver: Side) -> list[int]:
    """The SSRC of each packet the call's log holds for one direction, in log order."""
    spool = Path(next(snapshot.spool for snapshot in sink.calls if snapshot.spool))
    return [
        struct.unpack_from("!I", packet.packet, 8)[0]
        for packet in read_log(spool)
        if packet.receiver == receiver
    ]


def pcm(payloads: list[bytes]) -> list[int]:
    linear = audioop.ulaw2lin(b"".join(payloads), 2)
    return list(struct.unpack(f"<{len(linear) // 2}h", linear))


def channels(recording: Recording) -> tuple[list[int], list[int]]:
    with wave.open(recording.file.path) as audio:
        frames = audio.readframes(audio.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    return list(samples[0::2]), list(samples[1::2])


def assert_channel_is_only(channel: list[int], expected: list[int]) -> None:
    """The channel holds `expected`, sample for sample, and nothing else but silence."""
    haystack, needle = array("h", channel).tobytes(), array("h", expected).tobytes()
    found = haystack.find(needle)
    while found >= 0 and found % 2:  # -1: not found (and -1 % 2 is 1)
        found = haystack.find(needle, found + 1)
    assert found >= 0, "the voice is not in the channel, sample for sample"
    start = found // 2
    assert not any(channel[:start]) and not any(channel[start + len(expected) :])


def imported(frames: Frames, tmp_path: Path) -> tuple[list[str], Recording]:
    capture = tmp_path / "call.pcap"
    write_pcap(capture, sorted(frames, key=lambda frame: frame[0]))
    output = io.StringIO()
    call_command("import_pcap", str(capture), stdout=output)
    return output.getvalue().splitlines(), Recording.objects.get()


# -- a NAT'd far end ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_phones_voice_to_its_nated_far_end_is_recorded_with_the_far_ends(
    tmp_path: Path,
) -> None:
    phone_voice, far_voice = voice(1, 150), voice(2, 150)
    media = stream(FAR_NAT, PHONE, SSRC_FAR, far_voice, START + 0.1)
    media += stream(PHONE, FAR_NAT, SSRC_PHONE, phone_voice, START + 0.101)
    lines, recording = imported(call_frames(media), tmp_path)
    assert "RTP to an address no SDP named, learned (NAT) and recorded: 150" in lines
    assert not any(line.startswith("RTP copies on their way") for line in lines)
    assert "RTP packets: 300 matched to calls, 0 unmatched" in lines
    assert recording.quality["agent_to_far"]["received"] == 150
    assert recording.quality["far_to_agent"]["received"] == 150
    left, right = channels(recording)
    # Left: what the far end received, the phone's voice (held a second, then learned);
    # right: what the phone received, the far end's, matched by its destination as always.
    assert_channel_is_only(left, pcm(phone_voice))
    assert_channel_is_only(right, pcm(far_voice))


# -- a relay taking both legs of a hairpin call on one port (as in SIP_DTMF2) -------------


@pytest.mark.django_db(transaction=True)
def test_a_relay_port_taking_both_legs_of_a_hairpin_call_mixes_no_voices(tmp_path: Path) -> None:
    # The phone sends to the relay; 50 ms later the relay sends another voice on to the far
    # end's announced address. The relay's port serves both directions: nothing is learned.
    relay = Endpoint("10.50.0.9", 4376)
    to_relay, from_relay = voice(3, 150), voice(4, 150)
    media = stream(PHONE, relay, SSRC_PHONE, to_relay, START + 0.1)
    media += stream(relay, FAR_SDP, SSRC_FAR, from_relay, START + 0.15)
    lines, recording = imported(call_frames(media), tmp_path)
    assert "RTP copies on their way to a media relay (counted): 150" in lines
    assert not any(line.startswith("RTP to an address no SDP named") for line in lines)
    assert "RTP packets: 150 matched to calls, 0 unmatched" in lines
    left, right = channels(recording)
    assert_channel_is_only(left, pcm(from_relay))
    assert not any(right)
    assert recording.quality["agent_to_far"]["received"] == 150
    assert recording.quality["far_to_agent"]["received"] == 0


def test_one_address_sent_to_by_both_parties_is_learned_for_neither(tmp_path: Path) -> None:
    relay = Endpoint("10.50.0.9", 5000)
    media = stream(PHONE, relay, SSRC_PHONE, voice(5, 100), START + 0.1)
    media += stream(FAR_SDP, relay, SSRC_FAR, voice(6, 100), START + 0.11)
    engine, sink = run(call_frames(media), tmp_path)
    assert engine.calls.latched_packets == 0
    assert engine.stats.rtp_relayed == 200
    # Nothing reached an announced address or a learned one: the call's spool, which opens
    # at its first recorded packet (docs/capture.md, "Floods"), was never opened.
    assert not any(snapshot.spool for snapshot in sink.calls)


def test_a_learned_address_another_call_sends_to_takes_none_of_its_packets(
    tmp_path: Path,
) -> None:
    # Call 1 learns the far end's NAT address; two seconds in, a second call's phone
    # (another address, another SSRC) sends to that same address too.
    other_phone = Endpoint("10.50.0.12", 16384)
    start2, bye2 = signalling("nat-2", other_phone, Endpoint("192.168.1.21", 4000), START + 1.0)
    media = stream(PHONE, FAR_NAT, SSRC_PHONE, voice(7, 200), START + 0.1)
    media += stream(other_phone, FAR_NAT, 0x3333, voice(8, 100), START + 2.005)
    frames = call_frames(media) + start2 + [(START + 5.0, bye2[0][1])]
    engine, sink = run(frames, tmp_path)
    first = [s for s in sink.calls if s.call_id == "nat-1" and s.spool]
    spool = Path(first[0].spool)
    toward_far = {
        struct.unpack_from("!I", packet.packet, 8)[0]
        for packet in read_log(spool)
        if packet.receiver == Side.CALLEE
    }
    assert toward_far == {SSRC_PHONE}
    # Up to the second call's first packet, call 1's were learned; from then on both phones
    # send to one address, a shared port that neither call follows. That first packet went
    # to the learned address (matched to call 1, not recorded); the rest are counted.
    assert engine.calls.latched_packets == 96  # 0.1 s to 2.0 s, 20 ms apart
    assert engine.stats.rtp_relayed == 300 - 96 - 1


# -- the announced address in use ---------------------------------------------------------


def test_an_address_is_not_learned_while_the_announced_one_receives_rtp(tmp_path: Path) -> None:
    # Something reaches the far end's announced address the whole time (as a relay's
    # other leg would): the phone's packets to another address are counted, not recorded.
    media = stream(PHONE, FAR_NAT, SSRC_PHONE, voice(9, 150), START + 0.1)
    media += stream(Endpoint("10.50.0.9", 4376), FAR_SDP, SSRC_FAR, voice(10, 150), START + 0.9)
    engine, sink = run(call_frames(media), tmp_path)
    assert engine.calls.latched_packets == 0
    assert engine.stats.rtp_relayed == 150
    assert set(logged_ssrcs(sink, Side.CALLEE)) == {SSRC_FAR}


def test_the_announced_address_starting_to_receive_wins_over_a_learned_one(
    tmp_path: Path,
) -> None:
    # Learned after a second; from 2.005 s RTP reaches the announced address, while the
    # phone goes on sending to the learned one.
    media = stream(PHONE, FAR_NAT, SSRC_PHONE, voice(11, 200), START + 0.1)
    media += stream(Endpoint("10.50.0.9", 4376), FAR_SDP, SSRC_FAR, voice(12, 100), START + 2.005)
    engine, sink = run(call_frames(media), tmp_path)
    toward_far = logged_ssrcs(sink, Side.CALLEE)
    # The learned address's packets up to the first at the announced one, then only those.
    switch = toward_far.index(SSRC_FAR)
    assert set(toward_far[:switch]) == {SSRC_PHONE} and set(toward_far[switch:]) == {SSRC_FAR}
    assert switch == engine.calls.latched_packets == 96  # 0.1 s to 2.0 s, 20 ms apart
    # The next packet to the learned address finds the announced one in use: it is let go
    # (that packet matched, not recorded), and the direction does not learn again.
    assert engine.stats.rtp_relayed == 200 - 96 - 1
    assert engine.stats.rtp_packets == 96 + 1 + 100


# -- bounded memory ----------------------------------------------------------------------


def test_a_learned_address_is_let_go_when_its_call_ends(tmp_path: Path) -> None:
    sink = Collected()
    engine = Engine(sink, spool_root=tmp_path / "spool")
    start, bye = signalling("nat-1", PHONE, FAR_SDP, START)
    media = stream(PHONE, FAR_NAT, SSRC_PHONE, voice(13, 100), START + 0.1)
    for at, frame in start + media:
        engine.feed(at, 1, frame)
    key = endpoint_key(FAR_NAT)
    assert engine.media[key].receiver == Side.CALLEE
    assert engine.media[key].call.call_id == "nat-1"
    engine.feed(START + 2.2, 1, bye[0][1])
    assert sink.calls[-1].event == CallEvent.END
    assert key not in engine.media and not engine.calls.latches
    # A straggler within the grace is the ended call's; after it, a new call may announce
    # the address and have it as its own.
    engine.feed(START + 2.3, 1, media[0][1])
    assert engine.stats.rtp_after_end == 1
    later, _ = signalling("later", Endpoint("10.50.0.13", 16384), FAR_NAT, START + 20.0)
    for at, frame in later:
        engine.feed(at, 1, frame)
    assert engine.media[key].call.call_id == "later"
    assert engine.media[key] is engine.calls.calls["later"].streams[Side.CALLEE]


def test_a_segment_shorter_than_the_probation_is_decided_when_its_call_ends(
    tmp_path: Path,
) -> None:
    """A call whose media from the NAT'd address lasts less than the probation: when the
    call ends the probation is decided by its rule, and its packets are the direction's,
    with their own arrival times (they were held, not lost)."""
    packets = round(LATCH_PROBATION / PACKET)  # the last one arrives just short of it
    media = stream(PHONE, FAR_NAT, SSRC_PHONE, voice(14, packets), START + 0.1)
    engine, sink = run(call_frames(media), tmp_path)
    assert engine.calls.latched_packets == packets
    assert (engine.stats.rtp_relayed, engine.stats.rtp_packets) == (0, packets)
    assert logged_ssrcs(sink, Side.CALLEE) == [SSRC_PHONE] * packets
    assert not engine.media and not engine.calls.latches


def test_a_short_segment_is_not_the_directions_if_the_announced_address_received(
    tmp_path: Path,
) -> None:
    # Half a second to the NAT'd address, while a relay's other leg reached the announced
    # one: the probation's rule refuses it at the call's end as it would have after a second.
    media = stream(PHONE, FAR_NAT, SSRC_PHONE, voice(15, 25), START + 0.1)
    media += stream(Endpoint("10.50.0.9", 4376), FAR_SDP, SSRC_FAR, voice(16, 10), START + 0.3)
    engine, sink = run(call_frames(media), tmp_path)
    assert engine.calls.latched_packets == 0
    assert engine.stats.rtp_relayed == 25
    assert set(logged_ssrcs(sink, Side.CALLEE)) == {SSRC_FAR}


def test_a_short_segment_the_party_moved_on_from_is_kept(tmp_path: Path) -> None:
    """Half a second to one address, then (after a second of quiet) to another one for
    longer: the first is decided when the party moves on, the second learned as usual."""
    first = Endpoint("203.0.113.7", 31000)
    second = Endpoint("203.0.113.8", 32000)
    media = stream(PHONE, first, SSRC_PHONE, voice(17, 25), START + 0.1)
    media += stream(PHONE, second, SSRC_PHONE, voice(18, 100), START + 2.0)
    engine, sink = run(call_frames(media), tmp_path)
    assert engine.calls.latched_packets == 125
    assert engine.stats.rtp_relayed == 0
    assert logged_ssrcs(sink, Side.CALLEE) == [SSRC_PHONE] * 125


def learn(table: CallTable, call_id: str, destination: bytes, at: float) -> None:
    """A second and more of the caller's RTP from its announced address to `destination`."""
    sender = table.calls[call_id].streams[Side.CALLER]
    for index in range(60):
        table.follow(sender, destination, rtp(index, index * 160, SSRC_PHONE, b"\xff" * 160),
                     at + index * PACKET)  # fmt: skip


def offered(call_id: str, event: CallEvent, side: Side, where: Endpoint) -> CallSignal:
    offer = MediaOffer(side, where, ((0, "PCMU/8000"),))
    return CallSignal(call_id, event, datetime.fromtimestamp(START, UTC), "sip", media=(offer,))


def test_a_media_change_or_a_new_owner_of_an_address_lets_a_learned_one_go() -> None:
    table, nat = CallTable(), endpoint_key(FAR_NAT)
    table.apply(offered("c1", CallEvent.START, Side.CALLER, PHONE), START)
    table.apply(offered("c1", CallEvent.ANSWER, Side.CALLEE, FAR_SDP), START)
    learn(table, "c1", nat, START + 1.0)
    assert table.media[nat].call.call_id == "c1" and table.latches
    # A re-INVITE moves the far end's announced address: the learned one is let go.
    table.apply(offered("c1", CallEvent.MEDIA, Side.CALLEE, Endpoint("192.168.1.20", 4002)), START)
    assert nat not in table.media and not table.latches
    # Learned again, then the phone's own announced address moves: let go too.
    learn(table, "c1", nat, START + 2.0)
    assert table.media[nat].call.call_id == "c1"
    table.apply(offered("c1", CallEvent.MEDIA, Side.CALLER, Endpoint("10.50.0.11", 16386)), START)
    assert nat not in table.media and not table.latches
    # Learned again, then another call announces that address: it is that call's now.
    learn(table, "c1", nat, START + 3.0)
    assert table.media[nat].call.call_id == "c1"
    table.apply(offered("c2", CallEvent.START, Side.CALLEE, FAR_NAT), START + 5.0)
    assert table.media[nat] is table.calls["c2"].streams[Side.CALLEE] and not table.latches
    # Learned for a third address, then a new call takes over the phone's own port.
    elsewhere = endpoint_key(Endpoint("203.0.113.8", 31000))
    learn(table, "c1", elsewhere, START + 6.0)
    assert table.media[elsewhere].call.call_id == "c1"
    moved = Endpoint("10.50.0.11", 16386)
    table.apply(offered("c3", CallEvent.START, Side.CALLER, moved), START + 8.0)
    assert elsewhere not in table.media and not table.latches
