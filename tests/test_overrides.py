"""Overrides with a value of the wrong type or range stop a run in one sentence
(hotdog.core.overrides)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from hotdog.core.overrides import (
    OverrideTypeError,
    check_override_types,
    refuse_bad_command_line,
)


def _check(overrides: list[str]) -> None:
    with initialize_config_module("hotdog.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        check_override_types("train", overrides, cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=abc", "In optimizer.lr=abc, optimizer.lr must be a number (its default is"),
        ("trainer.max_epochs=ten", "trainer.max_epochs must be a whole number (its default is 7)"),
        ("model.tta_hflip=maybe", "model.tta_hflip must be true or false (its default is True)"),
        ("data.batch_size=big", "data.batch_size must be a whole number (its default is 32)"),
    ],
)
def test_a_string_where_a_number_or_boolean_belongs_is_refused(override: str, message: str):
    with pytest.raises(OverrideTypeError) as caught:
        _check(["model=efficientnet_lite2", override])
    assert message in str(caught.value) and str(caught.value).endswith("run again.")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "In optimizer.lr=-1, optimizer.lr must be a positive number;"),
        ("optimizer.lr=nan", "optimizer.lr must be a positive number;"),
        ("trainer.max_epochs=-3", "trainer.max_epochs must be 1 or more (-1: no limit);"),
        ("data.batch_size=-2", "data.batch_size must be 1 or more;"),
        ("data.num_workers=-1", "data.num_workers must be 0 or more;"),
        ("data.val_fraction=1.5", "data.val_fraction must be 0 or more and below 1;"),
    ],
)
def test_a_number_out_of_its_range_is_refused(override: str, message: str):
    with pytest.raises(OverrideTypeError) as caught:
        _check([override])
    assert message in str(caught.value) and str(caught.value).endswith("run again.")


def test_evaluation_settings_are_checked_too():
    overrides = ["corruptions=true", "corruption_images=-4"]
    with initialize_config_module("hotdog.configs", version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
        with pytest.raises(OverrideTypeError, match="corruption_images must be 1 or more"):
            check_override_types("eval", overrides, cfg)


def test_good_overrides_and_group_choices_pass():
    # A group choice changes the defaults compared with (debug=fdr sets max_epochs=1), strings
    # stay strings, null stays allowed, and numbers may be given as numbers.
    _check(
        [
            "debug=fdr",
            "model=resnet18",
            "optimizer.lr=0.01",
            "trainer.max_epochs=2",
            "trainer.max_epochs=-1",
            "data.num_workers=0",
            "data.val_fraction=0",
            "data.root=/somewhere",
            "model.weights=null",
            "+extra.key=abc",
            "~callbacks",
        ]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["model=nosuch"],
            "model=nosuch is not an option of model; use one of efficientnet_lite0, efficientnet",
        ),
        (["+experiment=nosuch"], "experiment=nosuch is not an option of experiment; use one of"),
        (["nosuchkey=1"], "nosuchkey is not a setting; check its spelling, or add a new one with"),
        (["hydra/launcher=nosuch"], "hydra/launcher=nosuch is not an option of hydra/launcher"),
    ],
)
def test_hydra_composition_errors_are_one_sentence(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as stop:
        refuse_bad_command_line("train", argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_good_command_lines_and_hydra_flags_pass_through():
    refuse_bad_command_line("train", ["model=resnet18", "optimizer.lr=0.01", "hydra.run.dir=/x"])
    refuse_bad_command_line("eval", ["ckpt_path=x.ckpt", "corruptions=true"])
    # Sweeps are Hydra's to judge: with -m, or hparams_search (a sweep without -m).
    refuse_bad_command_line("train", ["-m", "model=resnet18,efficientnet_lite0"])
    refuse_bad_command_line("train", ["hparams_search=optuna", "model=resnet18,efficientnet_lite0"])
    refuse_bad_command_line(
        "train", ["hparams_search=optuna", 'hydra.sweeper.params={optimizer.lr:"choice(-1.0,0.1)"}']
    )


@pytest.mark.slow  # a child process importing PyTorch; the tests above run the same code
def test_the_console_script_checks_the_command_line_first(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("hotdog-evaluate")  # installed by pip install -e
    done = subprocess.run(
        [str(script), "ckpt_path=x.ckpt", "nosuchkey=1", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: nosuchkey is not a setting; check its spelling, or add a new one with "
        "+nosuchkey=VALUE."
    )


@pytest.mark.slow  # a child process importing PyTorch; the tests above run the same code
def test_python_m_hotdog_train_refuses_a_mistyped_option_in_one_sentence(tmp_path):
    from tests.conftest import run_cli

    done = run_cli("-m", "hotdog.train", "data=nosuch", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: data=nosuch is not an option of data; use one of hotdog, sample."
    )
    assert not (tmp_path / "run").exists()


def test_in_a_sweep_a_value_out_of_range_is_left_to_its_trial():
    """A sweeper records a failed trial and goes on; a refusal here would stop the whole sweep
    (tests/test_sweeps.py runs one)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = ["optimizer.lr=-1"]
    with initialize_config_module("hotdog.configs", version_base="1.3"):
        for mode, refused in (("MULTIRUN", False), ("RUN", True)):
            cfg = compose(
                "train", overrides=[*overrides, f"hydra.mode={mode}"], return_hydra_config=True
            )
            HydraConfig.instance().set_config(cfg)
            try:
                if refused:
                    with pytest.raises(OverrideTypeError, match="must be a positive number"):
                        check_override_types("train", overrides, cfg)
                else:
                    check_override_types("train", overrides, cfg)
            finally:
                HydraConfig.instance().cfg = None
