"""What a run records about itself: the resolved config, the code version, the command."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import hotdog


def git_revision(cwd: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout, or ``None`` values outside a git checkout."""
    cwd = cwd or Path(hotdog.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def run_info() -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "git": git_revision(),
        "hotdog": hotdog.__version__,
        "torch": str(torch.__version__),  # a str subclass that YAML writers refuse
        "python": platform.python_version(),
        "host_cpus": torch.get_num_threads(),
    }


def save_run_files(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Write ``config.yaml`` (resolved) and ``run.json`` into the run folder.

    Only the first process writes: DDP re-runs the command for the others with extra arguments.
    """
    info = run_info()
    if int(os.environ.get("LOCAL_RANK", "0")) != 0 or int(os.environ.get("NODE_RANK", "0")) != 0:
        return info
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (output_dir / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


@contextmanager
def discard_run_folder_on_error() -> Iterator[None]:
    """Remove the run folder Hydra made for this command if the run fails before writing any
    result (only Hydra's ``.hydra/``, the log and :func:`save_run_files`' bookkeeping are there),
    so a typo leaves no run behind."""
    try:
        yield
    except Exception:
        from hydra.core.hydra_config import HydraConfig

        folder = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
        if folder is not None and folder.is_dir() and _holds_only_bookkeeping(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


_BOOKKEEPING = {".hydra", "config.yaml", "run.json"}


def _holds_only_bookkeeping(folder: Path) -> bool:
    return all(path.name in _BOOKKEEPING or path.suffix == ".log" for path in folder.iterdir())
