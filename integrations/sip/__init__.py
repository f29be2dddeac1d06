"""Pure SIP decoder: bytes in, observations out (no Django, no database).

- `message.parse_message`, `message.looks_like_sip`, `errors.SipDecodeError`
- `framing.SipStreamFramer` for SIP over TCP
- `tracker.SipTracker` for registrations and calls
"""
