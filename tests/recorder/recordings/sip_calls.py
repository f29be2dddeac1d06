"""A whole SIP call's signalling as UDP frames, for the tests that write a call's RTP
themselves: the phone's INVITE, the far end's 200 and the phone's ACK, then its BYE."""

from __future__ import annotations

from recorder.capture.synthesis import sip, udp

Frames = list[tuple[float, bytes]]


def answered_call(
    call_id: str,
    phone: str,
    far: str,
    offer: str,
    answer: str,
    times: tuple[float, float, float],
) -> Frames:
    """9001 at `phone` calls 9002 at `far`, offering `offer` and answered with `answer`
    (SDP bodies); `times` are the INVITE's, the 200's (the ACK follows at once) and the
    BYE's."""
    invited, answered, ended = times

    def headers(cseq: str, to_tag: str = ";tag=far1") -> list[str]:
        return [
            f"Via: SIP/2.0/UDP {phone}:5060;branch=z9hG4bK{cseq.split()[0]}",
            "From: <sip:9001@pbx.example>;tag=ph1",
            f"To: <sip:9002@pbx.example>{to_tag}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq}",
        ]

    def to_far(at: float, payload: bytes) -> tuple[float, bytes]:
        return at, udp(phone, 5060, far, 5060, payload)

    return [
        to_far(invited, sip(f"INVITE sip:9002@{far} SIP/2.0",
                            [*headers("1 INVITE", ""), f"Contact: <sip:9001@{phone}>"], offer)),
        (answered, udp(far, 5060, phone, 5060, sip(
            "SIP/2.0 200 OK", [*headers("1 INVITE"), f"Contact: <sip:9002@{far}>"], answer))),
        to_far(answered + 0.01, sip(f"ACK sip:9002@{far} SIP/2.0", headers("1 ACK"))),
        to_far(ended, sip(f"BYE sip:9002@{far} SIP/2.0", headers("2 BYE"))),
    ]  # fmt: skip
