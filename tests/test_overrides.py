"""Overrides with a value of the wrong type or range stop a run in one sentence
(hotdog.core.overrides)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from hotdog.core.overrides import OverrideTypeError, check_override_types


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
        ("data.val_fraction=1.5", "data.val_fraction must be between 0 and 1;"),
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
            "data.root=/somewhere",
            "model.weights=null",
            "+extra.key=abc",
            "~callbacks",
        ]
    )
