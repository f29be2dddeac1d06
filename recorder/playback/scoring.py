"""An evaluation's score: the arithmetic alone, no database (docs/playback.md, "Evaluations").

    score = 100 * sum(weight * normalised answer) / sum(weight)

over the answered questions that are not N/A. A Yes normalises to 1 and a No to 0; a point v
of a scale 1..top to (v - 1) / (top - 1), so its lowest point is 0 and its top 1. N/A and
unanswered questions drop out of both sums. A fail-all question answered with its worst value
(No, or 1) makes the score 0 whatever the rest. When nothing counts (every answer N/A, or
every weight 0) there is no score: None, not 0, so that it does not pull an average down.
"""

from __future__ import annotations

from dataclasses import dataclass

YES_NO = "yes_no"


@dataclass(frozen=True)
class ScoredAnswer:
    weight: float
    # 0..1, or None for N/A.
    normalised: float | None
    fails_all: bool = False


def normalised(kind: str, scale_max: int, value: int) -> float:
    """An answer's value as a fraction of the best one."""
    if kind == YES_NO:
        return float(value)
    return (value - 1) / (scale_max - 1)


def score_of(answers: list[ScoredAnswer]) -> float | None:
    """The score out of 100, to two decimals; None when no answer counts."""
    if any(answer.fails_all for answer in answers):
        return 0.0
    counted = [answer for answer in answers if answer.normalised is not None]
    total_weight = sum(answer.weight for answer in counted)
    if total_weight <= 0:
        return None
    earned = sum(answer.weight * answer.normalised for answer in counted)
    return round(100 * earned / total_weight, 2)
