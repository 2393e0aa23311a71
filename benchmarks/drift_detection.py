"""How often does the drift report raise an alarm, with and without drift?

    python benchmarks/drift_detection.py --model models/export/model.int8.onnx \
        --data ../shared/data/hotdog --ood ../shared/data/hotdog-ood \
        --stock ../shared/data/hotdog-stock

The reference profile is the one exported next to the model (a matched half of the test
split; ``--reference`` compares another). "No drift" is the other half of the test split, which
the profile does not contain (its records name their photos); drift is the OOD and stock photo
sets and the held-out half darkened, blurred or JPEG-degraded. Each trial draws one window of N
photos without replacement from a set, runs the same ``detect_drift`` as ``python -m
hotdog.monitor drift`` and counts a detection when it says drift. Windows of different trials
overlap: two windows of N from 250 photos share N^2/250 photos on average (160 of 200 at
N = 200), so a fixed-reference row at large N measures nearly one comparison many times, and its
95 % interval (Wilson, which assumes independent windows) is too narrow there. And the
held-out half is made of the reference photos' nearest twins, so it flatters the test. The row
"fresh photos" avoids both: each trial leaves a random 40 % of the test split out, makes a
matched split of the rest (a reference of 150 photos instead of 250) and draws its window from
the fresh photos.
Prints a Markdown table and writes it as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from hotdog.core.dataset import list_split
from hotdog.core.images import read_image
from hotdog.core.preprocessing import DataConfig, preprocess_array
from hotdog.monitor.drift import ALPHA, detect_drift
from hotdog.monitor.profile import (
    RecordSet,
    image_statistics,
    matching_features,
    prediction_record,
    read_records,
    reference_uri,
    split_reference_half,
)


def _jpeg(image: Image.Image, quality: int = 8) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


SHIFTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "darkened (x0.6)": lambda image: ImageEnhance.Brightness(image).enhance(0.6),
    "blurred (radius 2)": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "JPEG quality 8": _jpeg,
}


class Profiler:
    """Records for photos, made as the service makes them (same model, same features)."""

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort

        sidecar = json.loads(Path(f"{model}.json").read_text())
        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.config = DataConfig.from_dict(sidecar["data_config"])
        self.classes = sidecar["class_names"]
        self.version = sidecar["version"]

    def records(self, paths: list[Path], shift=None) -> list[dict]:
        records = []
        for path in paths:
            image = read_image(path, min_short_side=self.config.resize_size)
            if shift is not None:
                image = shift(image)
            array = preprocess_array(image, self.config)
            probabilities, embedding = self.session.run(None, {"image": array[None]})
            records.append(
                prediction_record(
                    model_version=self.version,
                    class_names=self.classes,
                    probabilities=probabilities[0],
                    statistics=image_statistics(array, self.config),
                    embedding=embedding[0],
                    width=image.width,
                    height=image.height,
                )
            )
        return records


def wilson_interval(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a rate from ``hits`` of ``trials`` independent trials (Wilson score)."""
    rate = hits / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials**2)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def detection_rate(
    reference: RecordSet,
    pool: list[dict],
    window: int,
    trials: int,
    seed: int,
    alpha: float,
    effect_floor: bool = True,
) -> float | None:
    if len(pool) < window:
        return None
    rng = np.random.default_rng(seed)
    alarms = sum(
        window_alarm(reference, pool, window, rng, alpha, effect_floor) for _ in range(trials)
    )
    return alarms / trials


def window_alarm(
    reference: RecordSet,
    pool: list[dict],
    window: int,
    rng: np.random.Generator,
    alpha: float,
    effect_floor: bool,
) -> bool:
    """Whether the drift report calls one window of ``pool`` (drawn without replacement) drift."""
    chosen = rng.choice(len(pool), window, replace=False)
    current = RecordSet([pool[index] for index in chosen], skipped=0, files=1)
    return detect_drift(reference, current, alpha=alpha, effect_floor=effect_floor).drift


def profile_sets(args: argparse.Namespace, reference: RecordSet) -> dict[str, list[dict]]:
    profiler = Profiler(args.model)
    sources = {record.get("source") for record in reference.records}
    if None in sources:
        raise SystemExit(
            "The reference profile does not say which photos it holds (no 'source' field); "
            "export the model again with `python -m hotdog.export`."
        )
    test = list_split(args.data, "test", profiler.classes)
    held_out = [s.path for s in test if s.path.relative_to(args.data).as_posix() not in sources]
    if len(held_out) != len(test) - len(sources):
        raise SystemExit(
            f"{len(test) - len(held_out)} of the reference profile's {len(sources)} photos are "
            f"in {args.data}/test; pass the --data the model was exported with."
        )
    sets = {"no drift (held-out test half)": profiler.records(held_out)}
    for record, path in zip(sets["no drift (held-out test half)"], held_out, strict=True):
        record["source"] = path.relative_to(args.data).as_posix()
    for name, shift in SHIFTS.items():
        sets[f"held-out half, {name}"] = profiler.records(held_out, shift)
    for name, root in (("OOD set", args.ood), ("stock set", args.stock)):
        if root:
            photos = [s.path for s in list_split(root, "test", profiler.classes)]
            sets[f"{name} ({root.name})"] = profiler.records(photos)
    return sets


FRESH_SHARE = 0.4  # of each class of the test split, left out of the split as fresh photos


def class_of(record: dict) -> str:
    """The true class of a test photo's record, from its ``source`` (``test/<class>/<photo>``)."""
    return record["source"].split("/")[1]


def fresh_count(tests: list[dict]) -> int:
    """How many fresh photos each trial of :func:`fresh_false_alarms` draws from ``tests``."""
    names = [class_of(record) for record in tests]
    return sum(int(names.count(name) * FRESH_SHARE) for name in set(names))


def fresh_false_alarms(
    reference: RecordSet,
    held_out: list[dict],
    window: int,
    trials: int,
    seed: int,
    alpha: float,
    effect_floor: bool = True,
) -> float | None:
    """False alarms on fresh photos of the source, which the reference's split never saw.

    The fixed held-out half is made of the reference photos' nearest twins, so windows drawn
    from it look more like the reference than new traffic would. Here each trial draws a random
    FRESH_SHARE of each class of the whole test split as the stream, makes a matched split of
    the rest (its own seed; matched on this model's records, where the export matches on the
    float32 model's, and half of 60 % of the photos where the export keeps half of all) and
    tests one window of the fresh photos against that reference: independent trials, with a
    smaller reference than the shipped one. N = 200 needs the whole 500-photo test split.
    """
    tests = reference.records + held_out
    names = [class_of(record) for record in tests]
    classes = sorted(set(names))
    rng = np.random.default_rng(seed)
    alarms = 0
    for trial in range(trials):
        fresh: list[dict] = []
        rest: list[dict] = []
        for name in classes:
            members = [r for r, own in zip(tests, names, strict=True) if own == name]
            order = rng.permutation(len(members))
            cut = int(len(members) * FRESH_SHARE)
            fresh += [members[i] for i in order[:cut]]
            rest += [members[i] for i in order[cut:]]
        if len(fresh) < window:
            return None
        labels = [classes.index(class_of(record)) for record in rest]
        own, _ = split_reference_half(rest, labels, trial, matching_features(rest))
        alarms += window_alarm(RecordSet(own, 0, 1), fresh, window, rng, alpha, effect_floor)
    return alarms / trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ood", type=Path)
    parser.add_argument("--stock", type=Path)
    parser.add_argument("--windows", default="50,100,200")
    parser.add_argument("--trials", type=int, default=100, help="no-drift windows per size")
    parser.add_argument("--drift-trials", type=int, default=50, help="windows per drift set")
    parser.add_argument("--seed", type=int, default=0, help="seeds the windows")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, help="keep the photos' records here for reruns")
    parser.add_argument(
        "--reference", type=Path, help="another reference profile (default: the model's)"
    )
    parser.add_argument("--alpha", type=float, default=ALPHA, help="the verdict's alpha")
    parser.add_argument(
        "--no-floor", action="store_true", help="judge by p-values alone (no effect-size floor)"
    )
    parser.add_argument("--no-drift-only", action="store_true", help="skip the drifted sets")
    args = parser.parse_args()

    started = time.perf_counter()
    reference = read_records(args.reference or Path(reference_uri(str(args.model))))
    floor = not args.no_floor
    print(
        f"reference: {len(reference.records)} records; alpha {args.alpha}; "
        f"effect-size floor {'on' if floor else 'off'}"
    )
    # The cache holds one model's records of the held-out half of one reference and of the
    # drift sets: reused only for the same model, reference and photo folders.
    key = {
        "model_version": reference.records[0]["model_version"] if reference.records else None,
        "reference_sources": sorted(str(record.get("source")) for record in reference.records),
        "folders": [str(folder) for folder in (args.data, args.ood, args.stock)],
    }
    cached = json.loads(args.cache.read_text()) if args.cache and args.cache.is_file() else {}
    if cached.get("key") == key:
        sets: dict[str, list[dict]] = cached["sets"]
    else:
        sets = profile_sets(args, reference)
        if args.cache:
            args.cache.write_text(json.dumps({"key": key, "sets": sets}))
    print(
        f"profiled {sum(map(len, sets.values()))} photos in {time.perf_counter() - started:.0f} s"
    )

    windows = [int(size) for size in args.windows.split(",")]
    table: dict[str, dict[str, float | None]] = {}
    for name, pool in sets.items():
        no_drift = name.startswith("no drift")
        if args.no_drift_only and not no_drift:
            continue
        trials = args.trials if no_drift else args.drift_trials
        table[name] = {
            str(size): detection_rate(
                reference, pool, size, trials, args.seed + size, args.alpha, floor
            )
            for size in windows
        }
        table[name]["photos"] = len(pool)
        table[name]["trials"] = trials
        print(name, table[name], flush=True)
    name = "no drift, fresh photos (a new split per window)"
    held_out = sets["no drift (held-out test half)"]
    table[name] = {
        str(size): fresh_false_alarms(
            reference, held_out, size, args.trials, args.seed + size, args.alpha, floor
        )
        for size in windows
    }
    table[name]["photos"] = fresh_count(reference.records + held_out)
    table[name]["trials"] = args.trials
    print(name, table[name], flush=True)

    print("\n| stream | photos | windows | " + " | ".join(f"N={size}" for size in windows) + " |")
    print("|---|---|---|" + "---|" * len(windows))
    for name, row in table.items():
        cells = []
        for size in windows:
            rate = row[str(size)]
            if rate is None:
                cells.append("n/a")
            elif name.startswith("no drift"):  # false alarms: with a 95 % interval
                low, high = wilson_interval(round(rate * row["trials"]), int(row["trials"]))
                cells.append(f"{rate:.0%} ({low:.0%}-{high:.0%})")
            else:
                cells.append(f"{rate:.0%}")
        print(f"| {name} | {row['photos']} | {row['trials']} | " + " | ".join(cells) + " |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
