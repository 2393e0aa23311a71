"""Train a classifier: ``python -m hotdog.train [group=option ...] [key=value ...]``.

``main`` only parses the command line; :func:`train` is a plain function of a composed config,
which tests call directly.
"""

from __future__ import annotations

import functools
import logging
import sys
import zipfile
from collections.abc import Callable
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from hotdog.cloud.vertex_runtime import adapt_to_vertex, save_model_outputs
from hotdog.core.cli import local_only, output_folder
from hotdog.core.errors import HotdogError, exit_on_user_error
from hotdog.core.overrides import check_override_types, refuse_bad_command_line
from hotdog.evaluate import test_and_report_all
from hotdog.models import HotdogClassifier
from hotdog.utils import instantiate_callbacks, instantiate_loggers, save_run_files
from hotdog.utils.instantiate import quiet_console
from hotdog.utils.quiet import quiet_third_parties
from hotdog.utils.run_info import discard_run_folder_on_error

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig) -> HotdogClassifier:
    optimizer = instantiate(cfg.optimizer) if cfg.get("optimizer") else None
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return instantiate(cfg.model, optimizer=optimizer, scheduler=scheduler)


def _closes_experiment_run(function: Callable[..., Any]) -> Callable[..., Any]:
    """Finish the W&B run ``function`` started whatever happens, marked failed on an error, so
    that a failed sweep trial does not leave its run open (and the next trial's logger reuse it)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
        except BaseException:
            _finish_wandb(exit_code=1)
            raise
        _finish_wandb(exit_code=0)
        return result

    return wrapper


def _finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")  # not imported: no run to finish
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def check_resumable(checkpoint: str) -> None:
    """A checkpoint to resume from: a local file that is a whole PyTorch archive (a zip), checked
    before the model and data are built, so a wrong or truncated file costs one sentence."""
    path = local_only(checkpoint, "Checkpoint")
    if not path.is_file():
        raise HotdogError(
            f"Checkpoint {path} does not exist; pass the last.ckpt of the run to resume."
        )
    if not zipfile.is_zipfile(path):
        raise HotdogError(
            f"Checkpoint {path} is truncated or not a checkpoint; pass the last.ckpt of the run "
            "to resume, or train from the start without ckpt_path."
        )


@_closes_experiment_run
def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint; return the metrics and the objects used."""
    adapt_to_vertex(cfg)  # inside a Vertex AI job: its checkpoint, model and log directories
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = output_folder(cfg.paths.output_dir, "paths.output_dir")
    resume = cfg.get("ckpt_path")
    if resume:
        check_resumable(resume)
    quiet_third_parties()

    model = build_model(cfg)
    datamodule = instantiate(cfg.data, data_config=model.data_config.to_dict())
    # Read the data now: a missing folder or a bad photo stops the run before anything is
    # written or an experiment logger starts.
    datamodule.setup("fit" if cfg.get("train", True) else "test")
    info = save_run_files(cfg, output_dir)
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
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if not best and not cfg.trainer.get("fast_dev_run"):  # fast_dev_run saves none
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

    save_model_outputs(output_dir, trainer.is_global_zero)  # to AIP_MODEL_DIR when set
    objects = {
        "cfg": cfg,
        "model": model,
        "datamodule": datamodule,
        "trainer": trainer,
        "callbacks": callbacks,
        "loggers": loggers,
    }
    return metrics, objects


def _plain(cfg: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error(), discard_run_folder_on_error():
        check_override_types("train", HydraConfig.get().overrides.task, cfg)
        metrics, _ = train(cfg)
        # Only a fit logs the metric: evaluating a checkpoint (train=false) optimises nothing.
        return optimized_value(metrics, cfg.get("optimized_metric") if cfg.get("train") else None)


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The metric a sweeper optimises; a name that is not a logged metric stops the run."""
    if not name:
        return None
    if name not in metrics:
        raise HotdogError(
            f"optimized_metric {name!r} is not a logged metric; use one of "
            f"{', '.join(sorted(metrics))}."
        )
    return metrics[name]


def cli() -> None:
    """``python -m hotdog.train`` and its console script: a mistyped config option or key is
    refused in one sentence before Hydra runs :func:`main`."""
    refuse_bad_command_line("train")
    main()


if __name__ == "__main__":
    cli()
