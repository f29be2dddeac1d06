"""The demo capture's µ-law encoder is G.711 exactly: every 16-bit sample, against the
standard library's own encoder as an independent reference."""

from __future__ import annotations

import struct
import warnings

from qms.demo.capture import ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def test_every_linear_sample_encodes_as_the_reference_does() -> None:
    samples = range(-32768, 32768)
    reference = audioop.lin2ulaw(struct.pack(f"<{len(samples)}h", *samples), 2)
    assert bytes(ulaw_encode(sample) for sample in samples) == reference
