"""The one exception the SIP decoder raises for bad input."""

from __future__ import annotations


class SipDecodeError(ValueError):
    """Malformed or hostile SIP. `kind` is short and stable, for counters and logs:
    not-sip, bad-start-line, bad-header, header-too-large, too-many-headers,
    bad-content-length, body-too-large, truncated-body, missing-header, bad-cseq,
    bad-uri, bad-via, bad-sdp."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
