"""Shared fixtures: composed configs, tiny datasets cut from the shipped sample, a trained model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SAMPLE = ROOT / "data" / "sample"
CLASSES = ("hot_dog", "not_hot_dog")


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No W&B key or home-folder writes; a private image cache; no GPU."""
    base = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    for name in ("WANDB_API_KEY", "WANDB_MODE", "HOTDOG_ROOT"):
        os.environ.pop(name, None)
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        os.environ[name] = str(base / name.lower())
    os.environ["HOTDOG_CACHE_DIR"] = str(base / "cache")
    os.environ["CI"] = "1"  # quiet progress bars in test logs
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``configs/train.yaml`` as the CLI would, writing into ``tmp_path/run``."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        base = [f"paths.output_dir={tmp_path / 'run'}"]
        if config_name == "train":
            base.append("logger=csv")
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(config_name, overrides=[*base, *overrides])

    return _compose


def copy_sample(destination: Path, per_class: int = 4, splits=("train", "test")) -> Path:
    """A small dataset in the Kaggle layout, made of the first photos of the shipped sample."""
    for split in splits:
        for label in CLASSES:
            target = destination / split / label
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((SAMPLE / split / label).glob("*.jpg"))[:per_class]:
                shutil.copy(path, target / path.name)
    return destination


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    return copy_sample(tmp_path / "data")


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None):
    """Run ``python -m ...`` in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real training run on the shipped sample (a frozen epoch, then two full ones)."""
    from hotdog.train import train

    output = tmp_path_factory.mktemp("trained")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={output}",
                "logger=csv",
                "trainer.max_epochs=3",
                "model.freeze_backbone_epochs=1",
            ],
        )
    train(cfg)
    return output
