"""Evaluate a checkpoint on a test split: ``python -m hotdog.evaluate ckpt_path=CKPT``.

Writes ``metrics.json``, ``confusion_matrix.png`` and ``misclassified.csv`` into the run folder
(or ``output_dir=...``). The model and its preprocessing come from the checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hotdog.core.errors import HotdogError, exit_on_user_error
from hotdog.data import HotdogDataModule
from hotdog.models import HotdogClassifier, load_classifier
from hotdog.report import write_report
from hotdog.utils.instantiate import quiet_console
from hotdog.utils.run_info import save_run_files

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
    return write_report(output_dir, probabilities, labels, files, model.class_names, extra)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``; the report (empty on DDP ranks other than 0)."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise HotdogError("No checkpoint given; pass ckpt_path=RUN/checkpoints/best.ckpt.")
    model = load_classifier(cfg.ckpt_path)
    output_dir = Path(cfg.paths.output_dir)
    save_run_files(cfg, output_dir)
    datamodule = instantiate(
        cfg.data, data_config=model.data_config.to_dict(), classes=model.class_names
    )
    options: dict[str, Any] = {"logger": False, "callbacks": []}
    if quiet_console():
        options |= {"enable_progress_bar": False, "enable_model_summary": False}
    trainer: L.Trainer = instantiate(cfg.trainer, **options)
    report = test_and_report(
        trainer, model, datamodule, output_dir, extra={"checkpoint": str(cfg.ckpt_path)}
    )
    return report or {}


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        report = evaluate(cfg)
    if report:
        summary = {key: report[key] for key in ("accuracy", "f1", "auroc")}
        print(json.dumps(summary | {"report": str(cfg.paths.output_dir)}))


if __name__ == "__main__":
    main()
