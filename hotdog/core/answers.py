"""The answer for one image, defined once for ``hotdog.predict`` and the service: the most
probable class, every class's probability, and whether the model is too unsure to say.

"Unsure" is a confidence threshold fitted on the validation split at training time
(:func:`unsure_threshold`): the least confident ``unsure_share`` of the validation photos fall
below it. Photos unlike the training data are answered with less confidence more often, so the
threshold turns many of their wrong answers into "unsure" (docs/generalisation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def unsure_threshold(confidences: Sequence[float], unsure_share: float) -> float:
    """The confidence below which an answer is "unsure": the lowest value such that at most
    ``unsure_share`` of ``confidences`` (the top-class probabilities of the validation photos)
    fall below it. 0.0 (never unsure) when ``unsure_share`` is 0 or there are no photos."""
    if not 0.0 <= unsure_share < 1.0:
        raise ValueError(f"unsure_share must be in [0, 1), not {unsure_share}")
    ranked = sorted(float(c) for c in confidences)
    below = int(unsure_share * len(ranked))  # photos allowed below the threshold
    if below == 0:
        return 0.0
    return ranked[below]


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
        "unsure": probabilities[best] < unsure_below,
    }
