"""Benchmark: the default training config on the full Kaggle dataset, on this machine's CPUs.

    python benchmarks/train_full.py [--data ../shared/data/hotdog] [--no-dev-sets] [OVERRIDE ...]

Prints, from one process: test accuracy (and, side by side, the evaluation-only development sets
../shared/data/hotdog-stock and hotdog-ood when present: accuracy, per-class recall with counts,
ECE, per-category accuracy), wall-clock time of fit (all epochs, validation
included), training images/s of the full fine-tuning epochs, and the bare forward+backward+step
rate of the same model, batch size and precision on a synthetic batch (the ceiling that data
loading and Lightning overhead are measured against). Needs the full dataset (by default the
copy at ../shared/data/hotdog that the project's CI machines have).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hotdog.callbacks import ThroughputMonitor
from hotdog.train import build_model, train

ROOT = Path(__file__).resolve().parents[1]


def bare_step_rate(cfg, steps: int = 4, repeats: int = 3) -> float:
    """Images/s of forward+backward+optimizer step alone, as the trainer runs them."""
    model = build_model(cfg)
    model.freeze_backbone_epochs = 0
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = model.data_config.train_size
    batch = cfg.data.batch_size
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, len(model.class_names), (batch,))
    bf16 = "bf16" in str(cfg.trainer.precision)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(batch * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "hotdog")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "benchmark" / "train_full")
    parser.add_argument(
        "--no-dev-sets", action="store_true", help="skip the evaluation-only development sets"
    )
    parser.add_argument(
        "--skip-bare-rate",
        action="store_true",
        help="do not measure the bare step rate (saves two epochs' worth of compute)",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    shared = ROOT.parent / "shared" / "data"
    dev_sets = {
        name: (shared / f"hotdog-{name}").resolve()
        for name in ("stock", "ood")
        if (shared / f"hotdog-{name}" / "test").is_dir() and not args.no_dev_sets
    }
    overrides = [
        "data=hotdog",
        f"data.root={args.data.resolve()}",
        "logger=csv",
        f"paths.output_dir={args.output.resolve()}",
        "callbacks.progress_bar=null",
        *(
            ["data.extra_eval_roots={" + ",".join(f"{k}:'{v}'" for k, v in dev_sets.items()) + "}"]
            if dev_sets
            else []
        ),
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)

    bare_before = 0.0 if args.skip_bare_rate else bare_step_rate(cfg)
    start = time.perf_counter()
    metrics, objects = train(cfg)
    total = time.perf_counter() - start
    bare_after = 0.0 if args.skip_bare_rate else bare_step_rate(cfg)
    bare = (bare_before + bare_after) / 2

    monitor = next(c for c in objects["callbacks"] if isinstance(c, ThroughputMonitor))
    full = [r for r in monitor.records if not r.backbone_frozen]
    full_rate = sum(r.images for r in full) / sum(r.seconds for r in full) if full else 0.0
    result = {
        "test_accuracy": round(metrics["test/acc"], 4),
        "test_auroc": round(metrics["test/auroc"], 4),
        "fit_seconds": round(monitor.fit_seconds, 1),
        "total_seconds": round(total, 1),
        "epochs": len(monitor.records),
        "train_images_per_s_full_epochs": round(full_rate, 2),
        "bare_step_images_per_s": round(bare, 2),
        "bare_before_after": [round(bare_before, 2), round(bare_after, 2)],
        "throughput_ratio": round(full_rate / bare, 3) if bare else None,
        "epochs_detail": [
            [r.epoch, r.images, round(r.images_per_s, 1), r.backbone_frozen]
            for r in monitor.records
        ],
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "overrides": args.overrides,
    }
    summary = args.output / "eval_summary.json"
    if dev_sets and summary.is_file():
        result["evaluation_sets"] = json.loads(summary.read_text())
        result["ood_per_category"] = json.loads(
            (args.output / "extra" / "ood" / "metrics.json").read_text()
        ).get("per_category")
    print(json.dumps(result, indent=2))
    (args.output / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
