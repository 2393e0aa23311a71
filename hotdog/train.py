"""Train a classifier: ``python -m hotdog.train [group=option ...] [key=value ...]``.

``main`` only parses the command line; :func:`train` is a plain function of a composed config,
which tests call directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from hotdog.core.errors import HotdogError, exit_on_user_error
from hotdog.evaluate import test_and_report_all
from hotdog.utils import instantiate_callbacks, instantiate_loggers, save_run_files
from hotdog.utils.instantiate import quiet_console

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig) -> L.LightningModule:
    optimizer = instantiate(cfg.optimizer) if cfg.get("optimizer") else None
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return instantiate(cfg.model, optimizer=optimizer, scheduler=scheduler)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint; return the metrics and the objects used."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    resume = cfg.get("ckpt_path")
    if resume and not Path(resume).is_file():
        raise HotdogError(
            f"Checkpoint {resume} does not exist; pass the last.ckpt of the run to resume."
        )
    info = save_run_files(cfg, output_dir)

    model = build_model(cfg)
    datamodule = instantiate(cfg.data, data_config=model.data_config.to_dict())
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(cfg.get("callbacks"), with_logger=bool(loggers))
    trainer_options: dict[str, Any] = {
        "callbacks": callbacks,
        "logger": loggers or False,
        # Without a configured ModelCheckpoint, Lightning would add one of its own.
        "enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks),
    }
    if quiet_console():
        trainer_options |= {"enable_progress_bar": False, "enable_model_summary": False}
    trainer: L.Trainer = instantiate(cfg.trainer, **trainer_options)
    for logger in trainer.loggers:
        logger.log_hyperparams({"config": _plain(cfg), "run": info})

    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}

    if cfg.get("test", True):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint was saved; testing the current weights.")
        report = test_and_report_all(
            trainer,
            model,
            datamodule,
            output_dir,
            ckpt_path=best or None,
            extra={"checkpoint": best or None, "git": info["git"]},
        )
        metrics |= {key: float(value) for key, value in trainer.callback_metrics.items()}
        if report is not None:
            log.info("Test accuracy %.4f, report in %s", report["accuracy"], output_dir)

    objects = {
        "cfg": cfg,
        "model": model,
        "datamodule": datamodule,
        "trainer": trainer,
        "callbacks": callbacks,
        "loggers": loggers,
    }
    if any(type(logger).__name__ == "WandbLogger" for logger in trainer.loggers):
        import wandb

        wandb.finish()
    return metrics, objects


def _plain(cfg: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        metrics, _ = train(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
