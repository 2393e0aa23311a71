"""Every option of every config group composes, and the composed objects are what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONFIGS

# Folders starting with "_" hold bases that options include; they are not groups to choose from.
# vertex/ configures the Vertex AI job around a training run (vertex_job.yaml), not the run itself.
GROUPS = sorted(
    p.name
    for p in CONFIGS.iterdir()
    if p.is_dir() and p.name not in {"hydra", "vertex"} and p.name[0] != "_"
)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if not p.stem.startswith("_"))


CASES = [(group, option) for group in GROUPS for option in _options(group)]


def test_every_group_has_options():
    expected = {
        "data": {"sample", "hotdog"},
        "model": {"efficientnet_lite0", "resnet18", "mobilenetv3_small_100"},
        "optimizer": {"adam", "adamw", "sgd"},
        "scheduler": {"none", "cosine", "onecycle"},
        "trainer": {"cpu", "gpu", "ddp"},
        "logger": {"wandb", "csv", "none"},
        "hparams_search": {"optuna"},
    }
    for group, options in expected.items():
        assert options <= set(_options(group)), group
    assert {"callbacks", "paths", "debug", "experiment"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(compose_train, group, option):
    cfg = compose_train(f"{group}={option}")
    # Resolving every interpolation proves the option fits the rest of the config.
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["task_name"]
    assert container["model"]["class_names"] == ["hot_dog", "not_hot_dog"]


def test_a_typo_lists_only_real_options(compose_train):
    with pytest.raises(MissingConfigException) as caught:
        compose_train("model=efficientnet_lite9")
    message = str(caught.value)
    assert "efficientnet_lite0" in message and "resnet18" in message
    assert "classifier" not in message  # the shared base is not a model


def test_eval_config_composes(compose_train):
    cfg = compose_train("ckpt_path=some.ckpt", config_name="eval")
    assert cfg.ckpt_path == "some.ckpt"
    assert cfg.data.root.endswith("data/sample")


def test_group_choice_changes_the_object(compose_train):
    cfg = compose_train("optimizer=sgd", "scheduler=cosine", "data=hotdog", "trainer=ddp")
    factory = instantiate(cfg.optimizer)
    assert factory.func.__name__ == "SGD" and factory.keywords["momentum"] == 0.9
    assert instantiate(cfg.scheduler).func.__name__ == "warmup_cosine"
    assert cfg.data.root.endswith("data/raw")
    assert cfg.trainer.strategy.startswith("ddp") and cfg.trainer.devices == 2


def test_strong_augmentation_experiment_builds_its_transforms(compose_train):
    from hotdog.data.transforms import DataConfig, train_transform

    cfg = compose_train("experiment=strong_aug", recipe=True)
    assert cfg.trainer.max_epochs == 8 and cfg.model.freeze_backbone_epochs == 3
    data = instantiate(cfg.data, data_config=DataConfig(input_size=64).to_dict())
    steps = {
        type(step).__name__
        for step in train_transform(data.data_config, data.augmentation).transforms
    }
    assert {"TrivialAugmentWide", "RandomErasing", "RandomResizedCrop"} <= steps
    assert data.augmentation.scale == (0.25, 1.0)


def test_hparams_search_uses_optuna_and_the_optimized_metric(compose_train):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert "OptunaSweeper" in cfg.hydra.sweeper._target_
    assert cfg.hydra.sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc_best"


def test_model_options_build_their_backbone(compose_train):
    for option, backbone in [
        ("resnet18", "ResNet"),
        ("mobilenetv3_small_100", "MobileNetV3"),
    ]:
        cfg = compose_train(f"model={option}", "model.pretrained=false")
        model = instantiate(cfg.model)
        assert type(model.net).__name__ == backbone
        assert model.net.get_classifier().out_features == 2


def test_paths_follow_hotdog_root(compose_train, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HOTDOG_ROOT", str(tmp_path))
    cfg = compose_train()
    assert cfg.paths.data_dir == f"{tmp_path}/data"
    assert cfg.data.root == f"{tmp_path}/data/sample"
