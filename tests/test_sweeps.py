"""Sweeps that fail loudly: the experiment run is closed whatever happens, a misspelt
optimized_metric stops with one sentence, a failing Optuna trial is recorded and the sweep goes
on. Tiny configs: one batch of the sample, no frozen phase."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hotdog.core.errors import HotdogError
from hotdog.train import optimized_value, train
from tests.conftest import run_cli

ONE_BATCH = (
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "test=false",
    "model.freeze_backbone_epochs=0",
    "model.image_size=128",
    "model.tta_hflip=false",
)


def test_a_failing_run_finishes_its_wandb_run_as_failed(compose_train, tmp_path: Path):
    # A negative learning rate: the optimizer refuses it once fit starts, after W&B started.
    cfg = compose_train("logger=wandb", *ONE_BATCH, "optimizer.lr=-1.0")
    with pytest.raises(ValueError, match="learning rate"):
        train(cfg)
    wandb = sys.modules["wandb"]
    assert wandb.run is None  # finished, not left open for the next trial to reuse
    run = next((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert any(run.glob("*.wandb"))


def test_an_unknown_optimized_metric_is_one_sentence():
    metrics = {"val/acc_best": 0.9, "val/loss": 0.3}
    assert optimized_value(metrics, "val/acc_best") == 0.9
    assert optimized_value(metrics, None) is None
    with pytest.raises(HotdogError, match=r"'val/acc_bst' is not a logged metric; use one of v"):
        optimized_value(metrics, "val/acc_bst")


@pytest.mark.slow
def test_an_unknown_optimized_metric_stops_the_sweep(tmp_path: Path):
    done = run_cli(
        "-m",
        "hotdog.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "optimized_metric=val/acc_bst",
        "logger=csv",
        *ONE_BATCH,
        f"paths.log_dir={tmp_path}",
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "optimized_metric 'val/acc_bst' is not a logged metric" in done.stderr
    assert len(list(tmp_path.rglob("multirun/*/*/config.yaml"))) == 1  # stopped after one


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path):
    done = run_cli(
        "-m",
        "hotdog.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=4",  # its first two draws: lr -1.0 (fails), then 0.003
        'hydra.sweeper.params={optimizer.lr:"choice(-1.0, 0.003)"}',
        "logger=csv",
        *ONE_BATCH,
        f"paths.log_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Failed experiment" in output and "learning rate" in output
    sweep = next(tmp_path.rglob("optimization_results.yaml")).read_text()
    assert "optimizer.lr: 0.003" in sweep
    assert len(list(tmp_path.rglob("multirun/*/*/config.yaml"))) == 2
