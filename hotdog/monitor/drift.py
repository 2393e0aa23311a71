"""Is a window of logged predictions drawn from the same world as the reference profile?

One verdict from several tests, each with a p-value:
- two-sample Kolmogorov-Smirnov tests of each image statistic, of the predicted class's
  probability (confidence) and of the first class's probability;
- a chi-square test of the predicted labels' shares;
- a kernel two-sample test (maximum mean discrepancy, Gaussian kernel with the median distance as
  its width, permutation p-value) on the reduced embeddings: it sees changes no single number
  shows, such as a new kind of scene at the usual brightness.

A test flags drift when its p-value is below ``alpha / number of tests`` (Bonferroni, which keeps
the false-alarm rate of the whole verdict at or below ``alpha``) AND its statistic is above an
effect-size floor: the 95th percentile of the same statistic between two random halves of the
reference itself. A difference smaller than the reference's own halves show between each other is
below what the reference can resolve: the p-value alone would flag it once the window is large
(a day of logs), and a fixed reference of a few hundred photos differs from the traffic by about
that much by the luck of its draw (measured: ``docs/monitoring.md``). The floor is calibrated on
the reference only, never on drifted data, and the window is drifted when any test flags it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hotdog.core.errors import HotdogError
from hotdog.monitor.profile import IMAGE_STATISTICS, RecordSet

ALPHA = 0.05
PERMUTATIONS = 500
# The kernel test compares at most this many current records (a seeded sample): its cost grows
# with the square of the sample, and 1,000 already detect far smaller shifts than 100 do.
MAX_KERNEL_SAMPLE = 1000
MIN_WINDOW = 10
# The effect-size floor: this quantile of each statistic over this many random halvings of the
# reference (seeded, so a report is reproducible).
FLOOR_QUANTILE = 0.95
FLOOR_SPLITS = 200


@dataclass
class TestResult:
    name: str
    method: str
    statistic: float
    p_value: float
    reference: list[float] = field(repr=False)  # the values compared, for the report's plots
    current: list[float] = field(repr=False)
    floor: float = 0.0  # the effect-size floor the statistic must exceed
    drift: bool = False  # p-value below the threshold and statistic above the floor


@dataclass
class DriftResult:
    drift: bool
    alpha: float
    threshold: float  # alpha / number of tests
    score: float  # the smallest p-value, Bonferroni-adjusted (significance alone, before floors)
    tests: list[TestResult]
    model_version: str
    reference_records: int
    current_records: int
    skipped_lines: int
    other_versions: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON summary: everything but the raw values behind the plots."""
        summary = asdict(self)
        summary["tests"] = [
            {
                "name": test.name,
                "method": test.method,
                "statistic": test.statistic,
                "floor": test.floor,
                "p_value": test.p_value,
                "drift": test.drift,
            }
            for test in self.tests
        ]
        return summary


def confidence(record: dict[str, Any]) -> float:
    return max(record["probabilities"].values())


def _column(records: list[dict[str, Any]], name: str) -> np.ndarray:
    values = [record.get(name) for record in records]
    return np.array([value for value in values if isinstance(value, int | float)], dtype=float)


def _embeddings(records: list[dict[str, Any]]) -> np.ndarray | None:
    rows = [record.get("embedding") for record in records]
    vectors = [row for row in rows if isinstance(row, list) and row]
    if not rows or len(vectors) != len(rows) or len({len(row) for row in vectors}) != 1:
        return None
    return np.asarray(vectors, dtype=np.float64)


def ks_statistic(first: np.ndarray, second: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the two CDFs)."""
    first, second = np.sort(first), np.sort(second)
    points = np.concatenate([first, second])
    gap = np.searchsorted(first, points, "right") / len(first) - np.searchsorted(
        second, points, "right"
    ) / len(second)
    return float(np.abs(gap).max())


def _halvings(size: int, seed: int) -> np.ndarray:
    """FLOOR_SPLITS random halvings of ``size`` items: one boolean row each, True = first half."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((FLOOR_SPLITS, size), dtype=bool)
    for row in rows:
        row[rng.permutation(size)[: size // 2]] = True
    return rows


def half_split_floor(
    values: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float], seed: int = 0
) -> float:
    """FLOOR_QUANTILE of ``statistic(half, other half)`` over random halvings of ``values``."""
    if len(values) < 4:
        return 0.0
    halves = _halvings(len(values), seed)
    return float(
        np.quantile([statistic(values[row], values[~row]) for row in halves], FLOOR_QUANTILE)
    )


def _label_chi2(first: np.ndarray, second: np.ndarray) -> float:
    from scipy import stats

    labels = np.unique(np.concatenate([first, second]))
    table = np.array([[np.sum(rows == label) for label in labels] for rows in (first, second)])
    if len(labels) < 2 or (table.sum(0) == 0).any():
        return 0.0
    return float(stats.chi2_contingency(table).statistic)


def mmd_test(
    reference: np.ndarray, current: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float]:
    """Squared MMD (biased estimate) between two samples and its permutation p-value."""
    statistic, p_value, _ = _mmd(reference, current, permutations, seed)
    return statistic, p_value


def mmd_test_with_floor(
    reference: np.ndarray, current: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float, float]:
    """``mmd_test`` and its effect-size floor: the FLOOR_QUANTILE of the squared MMD between two
    random halves of the reference, with the same kernel."""
    statistic, p_value, kernel = _mmd(reference, current, permutations, seed)
    n = len(reference)
    halves = _halvings(n, seed).T  # (n, splits)
    weights = halves / (n // 2) - ~halves / (n - n // 2)
    split_statistics = ((kernel[:n, :n] @ weights) * weights).sum(0)
    return statistic, p_value, float(np.quantile(split_statistics, FLOOR_QUANTILE))


def _mmd(
    reference: np.ndarray, current: np.ndarray, permutations: int, seed: int
) -> tuple[float, float, np.ndarray]:
    pooled = np.concatenate([reference, current])
    squared = (pooled**2).sum(1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0.0)
    width = np.median(distances[np.triu_indices(len(pooled), k=1)])
    kernel = np.exp(-distances / max(width, 1e-12))
    n, m = len(reference), len(current)
    # Each column of `signs` labels the pooled sample (1/n for "reference", -1/m for "current");
    # s' K s is the MMD of that labelling, so all permutations are one matrix product.
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])
    signs = np.stack([labels] + [rng.permutation(labels) for _ in range(permutations)], axis=1)
    statistics = ((kernel @ signs) * signs).sum(0)
    observed = statistics[0]
    p_value = (1 + np.sum(statistics[1:] >= observed)) / (1 + permutations)
    return float(observed), float(p_value), kernel


def _versions_check(reference: RecordSet, current: RecordSet) -> tuple[str, list[dict], int]:
    versions = Counter(record["model_version"] for record in reference.records)
    if len(versions) != 1:
        raise HotdogError(
            f"The reference profile mixes {len(versions)} model versions; use the "
            "*.reference.jsonl written by `python -m hotdog.export` next to the served model."
        )
    (version,) = versions
    matching = [record for record in current.records if record["model_version"] == version]
    if current.records and not matching:
        served = Counter(record["model_version"] for record in current.records).most_common(1)[0][0]
        raise HotdogError(
            f"The reference profile is for model {version} but the logged predictions are from "
            f"{served}; pass the reference profile exported with the model that served them."
        )
    return version, matching, len(current.records) - len(matching)


def detect_drift(
    reference: RecordSet,
    current: RecordSet,
    alpha: float = ALPHA,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    effect_floor: bool = True,
) -> DriftResult:
    """Compare logged predictions with the reference profile; see the module's docstring.

    ``effect_floor=False`` judges by the p-values alone (for the detection benchmark's comparison).
    """
    from scipy import stats

    started = time.perf_counter()
    if not reference.records:
        where = f" {reference.source}" if reference.source else ""
        raise HotdogError(
            f"The reference profile{where} has no readable records; pass the "
            "<model>.reference.jsonl written next to the exported model, or re-run "
            "`python -m hotdog.export`."
        )
    version, records, other_versions = _versions_check(reference, current)
    if len(records) < MIN_WINDOW:
        raise HotdogError(
            f"Only {len(records)} readable predictions in the window ({current.skipped} corrupt "
            f"lines skipped, {current.files} files); a drift test needs at least {MIN_WINDOW}: "
            "pass a longer window of logs."
        )
    ref = reference.records
    tests: list[TestResult] = []
    notes: list[str] = []

    def ks(name: str, ref_values: np.ndarray, cur_values: np.ndarray) -> None:
        if len(ref_values) and len(cur_values):
            result = stats.ks_2samp(ref_values, cur_values)
            tests.append(
                TestResult(
                    name,
                    "Kolmogorov-Smirnov",
                    float(result.statistic),
                    float(result.pvalue),
                    ref_values.tolist(),
                    cur_values.tolist(),
                    floor=half_split_floor(ref_values, ks_statistic, seed),
                )
            )
        else:
            notes.append(f"{name}: missing in the records, not tested")

    for name in IMAGE_STATISTICS:
        ks(name, _column(ref, name), _column(records, name))
    ks(
        "confidence",
        np.array([confidence(r) for r in ref]),
        np.array([confidence(r) for r in records]),
    )
    first_class = next(iter(ref[0]["probabilities"]))
    ks(
        f"probability of {first_class}",
        np.array([r["probabilities"].get(first_class, np.nan) for r in ref]),
        np.array([r["probabilities"].get(first_class, np.nan) for r in records]),
    )

    ref_labels = np.array([r["label"] for r in ref])
    labels = sorted(set(ref_labels) | {r["label"] for r in records})
    table = np.array(
        [[sum(r["label"] == label for r in rows) for label in labels] for rows in (ref, records)]
    )
    if len(labels) > 1:
        chi2 = stats.chi2_contingency(table)
        tests.append(
            TestResult(
                "predicted label shares",
                "chi-square",
                float(chi2.statistic),
                float(chi2.pvalue),
                (table[0] / table[0].sum()).tolist(),
                (table[1] / table[1].sum()).tolist(),
                floor=half_split_floor(ref_labels, _label_chi2, seed),
            )
        )

    ref_embeddings, cur_embeddings = _embeddings(ref), _embeddings(records)
    if ref_embeddings is None or cur_embeddings is None:
        notes.append("embedding: missing in some records, the kernel test was not run")
    elif ref_embeddings.shape[1] != cur_embeddings.shape[1]:
        notes.append("embedding: sizes differ from the reference, the kernel test was not run")
    else:
        if len(cur_embeddings) > MAX_KERNEL_SAMPLE:
            rng = np.random.default_rng(seed)
            chosen = rng.choice(len(cur_embeddings), MAX_KERNEL_SAMPLE, replace=False)
            cur_embeddings = cur_embeddings[chosen]
            notes.append(f"embedding: a random {MAX_KERNEL_SAMPLE} of the window tested")
        # A permutation p-value is never below 1 / (permutations + 1): enough of them that the
        # kernel test can reach the Bonferroni threshold (8 tests at alpha 0.01: 3,200).
        permutations = max(permutations, math.ceil(4 * (len(tests) + 1) / alpha))
        statistic, p_value, floor = mmd_test_with_floor(
            ref_embeddings, cur_embeddings, permutations, seed
        )
        centre, direction = _main_direction(ref_embeddings)
        tests.append(
            TestResult(
                "embedding",
                f"MMD, Gaussian kernel, {permutations} permutations",
                statistic,
                p_value,
                ((ref_embeddings - centre) @ direction).tolist(),
                ((cur_embeddings - centre) @ direction).tolist(),
                floor=floor,
            )
        )

    threshold = alpha / len(tests)
    for test in tests:
        test.drift = test.p_value < threshold and (not effect_floor or test.statistic > test.floor)
    score = min(1.0, min(test.p_value for test in tests) * len(tests))
    return DriftResult(
        drift=any(test.drift for test in tests),
        alpha=alpha,
        threshold=threshold,
        score=score,
        tests=tests,
        model_version=version,
        reference_records=len(ref),
        current_records=len(records),
        skipped_lines=current.skipped,
        other_versions=other_versions,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def _main_direction(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's centre and main direction of variation (to plot embeddings on)."""
    centre = reference.mean(0)
    _, _, directions = np.linalg.svd(reference - centre, full_matrices=False)
    return centre, directions[0]
