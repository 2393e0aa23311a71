"""The answer for one image, defined once for ``hotdog.predict`` and the service: the most
probable class, every class's probability, and whether the model is too unsure to say.

"Unsure" is a confidence threshold fitted on the validation split at training time
(:func:`unsure_threshold`): the least confident ``unsure_share`` of the validation photos fall
below it. Photos unlike the training data are answered with less confidence more often, so the
threshold turns many of their wrong answers into "unsure" (docs/generalisation.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

Confidence = TypeVar("Confidence")  # a float, or an array or tensor of them


def check_unsure_share(unsure_share: float) -> None:
    if not 0.0 <= unsure_share < 1.0:
        raise ValueError(f"unsure_share must be in [0, 1), not {unsure_share}")


def unsure_threshold(confidences: Sequence[float], unsure_share: float) -> float:
    """The confidence below which an answer is "unsure", fitted on ``confidences`` (the top-class
    probabilities of the validation photos): with k = floor(``unsure_share`` x photos), the
    (k+1)-th least sure confidence, the highest threshold that leaves at most k photos below
    it. 0.0 (never unsure) when k is 0: a share of 0, or fewer photos than one share."""
    check_unsure_share(unsure_share)
    ranked = sorted(float(c) for c in confidences)
    below = math.floor(unsure_share * len(ranked) + 1e-9)  # 0.29 x 100 is 28.999...
    if below == 0:
        return 0.0
    return ranked[below]


def is_unsure(confidence: Confidence, unsure_below: float) -> Confidence:
    """Whether an answer of this top-class probability is unsure (element-wise for arrays)."""
    return confidence < unsure_below  # type: ignore[operator,return-value]


def answer(
    probabilities: Sequence[float], class_names: Sequence[str], unsure_below: float = 0.0
) -> dict[str, Any]:
    """``label`` and its ``probability``, every class's ``probabilities``, and ``unsure``: the
    label's probability is below the model's threshold (the label is still given)."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {
        "label": class_names[best],
        "probability": probabilities[best],
        "probabilities": dict(zip(class_names, probabilities, strict=True)),
        "unsure": is_unsure(probabilities[best], unsure_below),
    }
