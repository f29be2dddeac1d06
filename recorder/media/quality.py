"""An estimated MOS from the ITU-T G.107 E-model, from what a passive recorder can see.

The E-model rates a connection R = R0 - Is - Id - Ie,eff + A (G.107 §3). A recorder on a
mirror port sees loss and jitter, not the echo path or the terminals, so the default
values of G.107 Table 3 stand for everything it cannot measure (R0 - Is = 93.2, A = 0),
the one-way delay is taken as a typical 100 ms plus the jitter buffer that the measured
jitter would need, and the codec's impairment and loss robustness come from G.113
Appendix I. The result is labelled an estimate wherever it is shown.
"""

from __future__ import annotations

R_DEFAULT = 93.2
BASE_DELAY_MS = 100.0

# Equipment impairment Ie and packet-loss robustness Bpl (ITU-T G.113 Appendix I); QMS
# fills lost packets with silence, so G.711 is rated without packet-loss concealment.
CODEC_IMPAIRMENT = {
    "PCMU": (0.0, 4.3),
    "PCMA": (0.0, 4.3),
    "G722": (0.0, 4.3),
    "G729": (11.0, 19.0),
}


def delay_impairment(delay_ms: float) -> float:
    """Id from one-way delay, the simplified form of G.107 §B.4 used by G.107 planners."""
    impairment = 0.024 * delay_ms
    if delay_ms > 177.3:
        impairment += 0.11 * (delay_ms - 177.3)
    return impairment


def effective_equipment_impairment(codec: str, loss: float) -> float:
    """Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl), for random loss (G.107 §3.5)."""
    impairment, robustness = CODEC_IMPAIRMENT.get(codec.upper(), (0.0, 4.3))
    percent = 100.0 * max(0.0, min(loss, 1.0))
    return impairment + (95.0 - impairment) * percent / (percent + robustness)


def r_to_mos(rating: float) -> float:
    """G.107 Annex B: MOS from R, clipped to 1.0-4.5."""
    if rating <= 0:
        return 1.0
    if rating >= 100:
        return 4.5
    return 1 + 0.035 * rating + rating * (rating - 60) * (100 - rating) * 7e-6


def mos_estimate(codec: str, loss: float, jitter_ms: float) -> float:
    delay = BASE_DELAY_MS + 2 * jitter_ms
    rating = R_DEFAULT - delay_impairment(delay) - effective_equipment_impairment(codec, loss)
    return round(r_to_mos(rating), 2)
