"""Training end to end: fast_dev_run, runs on the shipped sample, CLI, multirun, DDP, sweeps."""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from hotdog.core.artifact import CHECKPOINT_KEY, VALIDATION_FILES_KEY
from hotdog.train import train
from tests.conftest import copy_sample, run_cli, tiny


def test_fast_dev_run(compose_train, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="hotdog.models.classifier")
    cfg = compose_train("debug=fdr")
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.fast_dev_run and trainer.global_step == 1
    assert "test/acc" in metrics
    assert not list(tmp_path.rglob("*.ckpt"))
    assert "No best checkpoint" not in caplog.text  # fast_dev_run never saves one: no warning
    # 8 validation photos at the default share of 5 %: no threshold, and the run says so.
    assert "8 validation photos are too few for model.unsure_share=0.05 (it needs 20)" in (
        caplog.text
    )
    assert objects["model"].unsure_below == 0.0


def test_metrics_do_not_warn_on_batches_of_one_class(compose_train):
    # One photo per validation batch: AUROC is computed over the epoch, never per batch.
    overrides = ("data.eval_batch_size=1", "test=false")  # 8 validation photos, both classes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compose_train(*overrides, "model.freeze_backbone_epochs=1", "callbacks=none"))
    said = [str(warning.message) for warning in caught]
    assert not [text for text in said if "samples in target" in text or "samples found" in text]


def test_run_folder_holds_config_checkpoints_and_metrics(trained_run: Path):
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    config = (trained_run / "config.yaml").read_text()
    assert "${" not in config and "tf_efficientnet_lite0" in config  # resolved
    run = json.loads((trained_run / "run.json").read_text())
    assert run["git"]["commit"] is None or len(run["git"]["commit"]) == 40
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["counts"]["images"] == 40
    assert metrics["checkpoint"].endswith("best.ckpt")
    # Two epochs on 32 photos already beat chance clearly on the 40 held-out ones.
    assert metrics["accuracy"] >= 0.75, metrics["accuracy"]


def test_training_logs_metrics_per_stage(trained_run: Path):
    with (trained_run / "csv" / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    columns = set(rows[0])
    for name in [
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/auroc",
        "val/acc_best",
        "test/acc",
        "test/f1",
        "test/auroc",
        "train/images_per_s",
    ]:
        assert name in columns, name
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert losses[-1] < losses[0]


def test_training_is_reproducible(compose_train):
    overrides = ("model.freeze_backbone_epochs=0", "callbacks=none", "data.batch_size=8")
    overrides += ("+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1")
    first, _ = train(compose_train(*overrides, "test=false"))
    second, _ = train(compose_train(*overrides, "test=false"))
    assert first["val/loss"] == pytest.approx(second["val/loss"], abs=1e-6)
    assert first["train/loss"] == pytest.approx(second["train/loss"], abs=1e-6)


def test_train_returns_the_metric_sweepers_optimise(compose_train):
    metrics, _ = train(compose_train("debug=fdr", "optimizer=sgd", "scheduler=cosine"))
    assert 0.0 <= metrics["val/acc_best"] <= 1.0


def test_wandb_runs_offline_without_a_key(compose_train, tmp_path: Path, capfd):
    # Not fast_dev_run: it swaps every logger for a dummy.
    cfg = compose_train(
        "logger=wandb",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "test=false",
        "model.freeze_backbone_epochs=1",
    )
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].glob("*.wandb"))
    printed = "".join(capfd.readouterr())
    assert "offline" in printed and "anonymous setting" not in printed


def test_resume_from_last_checkpoint(compose_train, trained_run: Path):
    cfg = compose_train(
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_epochs=3",
        "model.freeze_backbone_epochs=1",
        "test=false",
    )
    _, objects = train(cfg)
    assert objects["trainer"].current_epoch == 3
    assert objects["trainer"].global_step == 3  # 2 epochs restored + 1 more, one batch each


ANOTHER_MODEL_AND_OPTIMIZER = (
    "model=resnet18",
    "model.pretrained=false",
    "optimizer=adam",
    "debug=fdr",
    "model.image_size=64",
)


def test_trains_another_model_and_optimizer(run_main, tmp_path: Path):
    done = run_main(
        "hotdog.train",
        *ANOTHER_MODEL_AND_OPTIMIZER,
        f"paths.output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = (tmp_path / "config.yaml").read_text()
    assert "resnet18" in config and "Adam" in config


@pytest.mark.slow  # the real command in a child process; the test above runs the same code
def test_cli_trains_another_model_and_optimizer(tmp_path: Path):
    done = run_cli(
        "-m",
        "hotdog.train",
        *ANOTHER_MODEL_AND_OPTIMIZER,
        f"paths.output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "config.yaml").read_text().count("resnet18") >= 1
    # The output is the project's own: none of the third-party lines runs used to print.
    printed = done.stdout + done.stderr
    noises = ("litlogger", "LeafSpec", "log_every_n_steps", "gcsfs", "stepping batches")
    for noise in (*noises, "No best checkpoint"):
        assert noise not in printed, noise


def test_cli_bad_data_root_is_one_sentence_and_leaves_nothing(run_main, tmp_path: Path):
    run_folder = tmp_path / "run"
    done = run_main(
        "hotdog.train",
        f"data.root={tmp_path / 'nowhere'}",
        "logger=wandb",
        f"hydra.run.dir={run_folder}",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]  # nothing printed after the error
    assert last_line.startswith(f"error: Data root {tmp_path / 'nowhere'} does not exist")
    assert "wandb" not in done.stdout + done.stderr  # no experiment was started
    assert not run_folder.exists()


def test_cli_pretrained_weights_unavailable_is_one_sentence(run_main, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    done = run_main(
        "hotdog.train",
        "model=mobilenetv3_small_100",
        "logger=none",
        f"paths.output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Pretrained weights for mobilenetv3_small_100 cannot be downloaded" in done.stderr


@pytest.mark.slow
def test_cli_multirun_sweeps_a_grid(tmp_path: Path):
    done = run_cli(
        "-m",
        "hotdog.train",
        "-m",
        *tiny("optimizer=adam,sgd", "optimizer.lr=1e-3,3e-4", "debug=fdr"),
        f"paths.log_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # debug=fdr names the task "debug"
    configs = sorted((tmp_path / "debug" / "multirun").glob("*/*/config.yaml"))
    assert len(configs) == 4
    text = [c.read_text() for c in configs]
    assert sum("torch.optim.SGD" in t for t in text) == 2
    assert sum("lr: 0.0003" in t for t in text) == 2


@pytest.mark.slow
def test_ddp_runs_two_cpu_processes(tmp_path: Path):
    data = copy_sample(tmp_path / "data", per_class=4)
    next((data / "test" / "hot_dog").iterdir()).unlink()  # 7 test photos: ranks get padded
    out = tmp_path / "run"
    done = run_cli(
        "-m",
        "hotdog.train",
        *tiny(
            "trainer=ddp",
            f"data.root={data}",
            "data.batch_size=2",
            "data.val_fraction=0.25",
            "trainer.max_epochs=2",  # a frozen epoch, then a full one, several steps each
            "model.freeze_backbone_epochs=1",
            "model.unsure_share=0.5",  # one of the two validation photos
            "logger=csv",
            f"paths.output_dir={out}",
        ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log
    assert "Starting with 2 processes" in log or "MEMBER: 2/2" in log
    metrics = json.loads((out / "metrics.json").read_text())
    # Each test photo counts once, although DistributedSampler repeats one to pad the ranks.
    assert metrics["counts"]["images"] == 7
    checkpoint = torch.load(out / "checkpoints" / "best.ckpt", weights_only=False)
    # Both ranks' validation photos, each once: the threshold is the surer photo's confidence.
    assert len(checkpoint[VALIDATION_FILES_KEY]) == 2
    assert 0.5 <= checkpoint[CHECKPOINT_KEY]["unsure_below"] <= 1.0
    assert "hydra.run.dir" not in (out / "run.json").read_text()  # written by rank 0 only


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials(tmp_path: Path):
    done = run_cli(
        "-m",
        "hotdog.train",
        *tiny(
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "debug=fdr",
            f"paths.log_dir={tmp_path}",
        ),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = next((tmp_path / "debug" / "multirun").iterdir())
    result = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in result and "best_value" in result
    assert len(list(sweep.glob("*/config.yaml"))) == 2


def test_checkpoint_weights_are_finite(trained_run: Path):
    state = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_no_callbacks_means_no_checkpoints(compose_train, tmp_path: Path):
    overrides = ("trainer.max_epochs=1", "model.freeze_backbone_epochs=1", "test=false")
    train(compose_train("callbacks=none", *overrides))
    assert not list(tmp_path.rglob("*.ckpt"))
    train(compose_train(*overrides))  # the same run with the default callbacks does write them
    assert {p.name for p in tmp_path.rglob("*.ckpt")} == {"best.ckpt", "last.ckpt"}


def test_resume_from_a_missing_checkpoint_is_one_sentence(compose_train, tmp_path: Path):
    from hotdog.core.errors import HotdogError

    with pytest.raises(HotdogError, match="does not exist"):
        train(compose_train(f"ckpt_path={tmp_path / 'gone.ckpt'}"))


def test_resume_from_a_truncated_or_remote_checkpoint_is_one_sentence(
    compose_train, trained_run: Path, tmp_path: Path
):
    from hotdog.core.errors import HotdogError

    truncated = tmp_path / "last.ckpt"
    whole = (trained_run / "checkpoints" / "last.ckpt").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])  # a copy cut short
    with pytest.raises(HotdogError, match=r"is truncated or not a checkpoint; pass the last.ckpt"):
        train(compose_train(f"ckpt_path={truncated}"))
    with pytest.raises(HotdogError, match=r"gs://bucket/last.ckpt is not on this machine"):
        train(compose_train("ckpt_path=gs://bucket/last.ckpt"))


@pytest.mark.parametrize("module", ["hotdog.train", "hotdog.evaluate"])
def test_an_output_folder_that_is_a_file_is_one_sentence(
    run_main, trained_run: Path, tmp_path: Path, module: str
):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    run = [f"ckpt_path={checkpoint}"] if module == "hotdog.evaluate" else ["debug=limit"]
    done = run_main(module, *run, f"paths.output_dir={taken}", f"hydra.run.dir={tmp_path / 'r'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{taken} exists and is not a folder; pass another folder with paths.output_dir" in (
        done.stderr
    )
    assert taken.read_text() == "not a folder"


@pytest.mark.slow
@pytest.mark.parametrize("option", ["limit", "overfit", "profiler"])
def test_debug_configs_run(compose_train, option):
    metrics, objects = train(compose_train(f"debug={option}", "trainer.max_epochs=2"))
    assert objects["trainer"].current_epoch == 2
    assert "test/acc" in metrics
