"""Evaluate a checkpoint on a test split: ``python -m hotdog.evaluate ckpt_path=CKPT``.

Writes ``metrics.json``, ``confusion_matrix.png`` and ``misclassified.csv`` into the run folder
(or ``output_dir=...``). The model and its preprocessing come from the checkpoint. ``data.root``
may be an evaluation-only folder (``test/<class>/`` and no ``train/``); the sets named in
``data.extra_eval_roots`` are reported under ``extra/<name>/`` and side by side in
``eval_summary.md``; ``corruptions=true`` adds the robustness table (``hotdog.robustness``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from hotdog.core.cli import output_folder
from hotdog.core.errors import HotdogError, exit_on_user_error
from hotdog.core.overrides import check_override_types, refuse_bad_command_line
from hotdog.data import HotdogDataModule
from hotdog.models import HotdogClassifier, load_classifier
from hotdog.report import write_report
from hotdog.utils.instantiate import quiet_console
from hotdog.utils.quiet import quiet_third_parties
from hotdog.utils.run_info import discard_run_folder_on_error, save_run_files

log = logging.getLogger(__name__)


def test_and_report(
    trainer: L.Trainer,
    model: HotdogClassifier,
    datamodule: HotdogDataModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Run the test loop once and write the report (on the main process only)."""
    trainer.test(
        model=model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=not quiet_console()
    )
    if not trainer.is_global_zero or model.test_predictions is None:
        return None
    indices, probabilities = model.test_predictions
    labels = torch.tensor(datamodule.test_set.labels)[indices]  # type: ignore[union-attr]
    files = [datamodule.files["test"][i] for i in indices.tolist()]
    skipped = [
        str(path) for path, _ in datamodule.skipped if path.is_relative_to(datamodule.root / "test")
    ]
    extra = {"data_root": str(datamodule.root), "skipped_files": skipped} | (extra or {})
    return write_report(
        output_dir, probabilities, labels, files, model.class_names, extra, model.unsure_below
    )


SUMMARY_FILE = "eval_summary"
MAIN_SET = "test"


def test_and_report_all(
    trainer: L.Trainer,
    model: HotdogClassifier,
    datamodule: HotdogDataModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The test split's report (as :func:`test_and_report`), then one report per evaluation-only
    set of ``datamodule.extra_eval_roots`` and a side-by-side summary of them all."""
    report = test_and_report(trainer, model, datamodule, output_dir, ckpt_path, extra)
    if not datamodule.extra_eval_roots:
        return report
    if report is None:  # DDP ranks other than 0
        return None
    reports = {MAIN_SET: report}
    bf16 = "bf16" in str(trainer.precision)
    for name, root in datamodule.extra_eval_roots.items():
        # A plain inference loop, not trainer.test: the run's test/* metrics stay the test split's.
        data = datamodule.for_root(root)
        data.setup("test")
        test_set = data.test_set
        assert test_set is not None, "setup('test') builds the test set"
        probabilities = predict_probabilities(model, test_set, data.eval_batch_size, bf16)
        labels = torch.tensor(test_set.labels)
        reports[name] = write_report(
            output_dir / "extra" / name,
            probabilities,
            labels,
            data.files["test"],
            model.class_names,
            {"data_root": str(root), "checkpoint": (extra or {}).get("checkpoint")},
            model.unsure_below,
        )
        for logger in trainer.loggers:
            logger.log_metrics({f"{name}/acc": reports[name]["accuracy"]})
    write_summary(output_dir, reports)
    return report


@torch.inference_mode()
def predict_probabilities(
    model: HotdogClassifier, dataset: Dataset, batch_size: int, bf16: bool = False
) -> torch.Tensor:
    """Class probabilities of every item of ``dataset`` (in order), as the test loop computes
    them (evaluation mode, flip average if the model has it; bfloat16 autocast if asked)."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        for images, *_ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
            outputs.append(logits.float().softmax(-1))
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def summary_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated set: accuracy, each class's recall with counts, ECE, AUROC, and the
    unsure answers with the wrong answers still given with confidence."""
    rows = []
    for name, report in reports.items():
        row: dict[str, Any] = {
            "set": name,
            "images": report["counts"]["images"],
            "correct": report["counts"]["correct"],
            "accuracy": round(report["accuracy"], 4),
        }
        for cls, figures in report["per_class"].items():
            row[f"recall_{cls}"] = round(figures["recall"], 4)
            row[f"correct_{cls}"] = f"{figures['correct']}/{figures['support']}"
        row |= {"ece": round(report["ece"], 4), "auroc": round(report["auroc"], 4)}
        unsure = report["unsure"]
        row |= {
            "unsure_below": round(unsure["unsure_below"], 4),
            "unsure": unsure["unsure_answers"],
            "wrong_when_sure": unsure["wrong_when_sure"],
        }
        rows.append(row)
    return rows


def write_summary(output_dir: Path, reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``eval_summary.json`` and a Markdown table of every set, side by side; logs the table."""
    rows = summary_rows(reports)
    (output_dir / f"{SUMMARY_FILE}.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    for name, report in reports.items():
        for category, figures in (report.get("per_category") or {}).items():
            lines.append(
                f"\n{name} / {category}: {figures['correct']}/{figures['images']} "
                f"({figures['accuracy']:.1%})"
            )
    table = "\n".join(lines) + "\n"
    (output_dir / f"{SUMMARY_FILE}.md").write_text(table)
    log.info("Evaluation sets side by side:\n%s", table)
    return rows


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``; the report (empty on DDP ranks other than 0)."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise HotdogError("No checkpoint given; pass ckpt_path=RUN/checkpoints/best.ckpt.")
    quiet_third_parties()
    model = load_classifier(cfg.ckpt_path)
    output_dir = output_folder(cfg.paths.output_dir, "paths.output_dir")
    save_run_files(cfg, output_dir)
    datamodule = instantiate(
        cfg.data, data_config=model.data_config.to_dict(), classes=model.class_names
    )
    options: dict[str, Any] = {"logger": False, "callbacks": []}
    if quiet_console():
        options |= {"enable_progress_bar": False, "enable_model_summary": False}
    trainer: L.Trainer = instantiate(cfg.trainer, **options)
    report = test_and_report_all(
        trainer, model, datamodule, output_dir, extra={"checkpoint": str(cfg.ckpt_path)}
    )
    if report and cfg.get("corruptions"):
        from hotdog.robustness import robustness_report

        robustness_report(
            model,
            datamodule,
            output_dir,
            images=cfg.get("corruption_images"),
            precision=str(cfg.trainer.get("precision", "32-true")),
        )
    return report or {}


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error(), discard_run_folder_on_error():
        check_override_types("eval", HydraConfig.get().overrides.task, cfg)
        report = evaluate(cfg)
    if report:
        summary = {key: report[key] for key in ("accuracy", "f1", "auroc")}
        print(json.dumps(summary | {"report": str(cfg.paths.output_dir)}))


def cli() -> None:
    """``python -m hotdog.evaluate`` and its console script: a mistyped config option or key is
    refused in one sentence before Hydra runs :func:`main`."""
    refuse_bad_command_line("eval")
    main()


if __name__ == "__main__":
    cli()
