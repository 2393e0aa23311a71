"""Run the whole pipeline on the sample in git, offline: ``python -m hotdog.pipeline.sample``.

    python -m hotdog.pipeline.sample [-S key=value ...] [--workspace runs/pipeline-sample]

A trial run must neither reach for the cloud nor touch the committed results. This copies the
working tree (tracked and untracked files that git does not ignore, so uncommitted code changes
are included) into a separate workspace, a fresh git repository under ``runs/`` (which git
ignores), removes every DVC remote there, and runs ``dvc exp run -S prepare.raw=data/sample``
in it. The checkout's ``dvc.lock``, ``params.yaml`` and ``reports/`` stay as they are; the
workspace keeps the sample run's ``dvc.lock``, ``reports/`` and models for inspection
(``dvc exp show``, ``dvc plots diff`` inside it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hotdog.core.errors import HotdogError, exit_on_user_error

# The 80 sample photos, and a recipe short enough for a trial run (~1 minute on two cores):
# one frozen epoch then one full one, no test-time flips. Later -S options override these.
SAMPLE_OVERRIDES = (
    "prepare.raw=data/sample",
    "trainer.max_epochs=2",
    "model.freeze_backbone_epochs=1",
    "model.tta_hflip=false",
    "export.calibration_images=16",
)
DEFAULT_WORKSPACE = Path("runs") / "pipeline-sample"


def _run(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise HotdogError(
            f"`{' '.join(command)}` failed in {cwd}: {(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def _source_files(repo: Path) -> list[str]:
    """The working tree's files as a clone with uncommitted changes would have them."""
    if not (repo / "dvc.yaml").is_file():
        raise HotdogError(f"{repo} has no dvc.yaml; run this from the project's root folder.")
    listing = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo
    )
    # A symbolic link is listed as it is (hotdog/configs points at configs/).
    return [
        name
        for name in listing.split("\0")
        if name and ((repo / name).is_file() or (repo / name).is_symlink())
    ]


def make_workspace(repo: Path, workspace: Path) -> Path:
    """A fresh git repository at ``workspace`` with the working tree of ``repo`` and no DVC
    remote."""
    files = _source_files(repo)
    if workspace.exists():
        shutil.rmtree(workspace)
    for name in files:
        target = workspace / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (repo / name).is_symlink():
            target.symlink_to((repo / name).readlink())
        else:
            shutil.copy2(repo / name, target)
    dvc = [sys.executable, "-m", "dvc"]
    config = _run([*dvc, "remote", "list"], cwd=workspace)
    for line in config.splitlines():
        _run([*dvc, "remote", "remove", line.split()[0]], cwd=workspace)
    git = ["git", "-c", "user.name=hotdog", "-c", "user.email=hotdog@localhost"]
    _run(["git", "init", "-q"], cwd=workspace)
    _run([*git, "add", "-A"], cwd=workspace)
    _run([*git, "commit", "-qm", "Working tree for a sample pipeline run"], cwd=workspace)
    return workspace


def run_sample(
    repo: Path, workspace: Path, overrides: Sequence[str] = (), stream: bool = True
) -> subprocess.CompletedProcess:
    """Run the pipeline on the sample in a fresh workspace; ``overrides`` are ``-S`` values."""
    make_workspace(repo, workspace)
    options = [arg for value in (*SAMPLE_OVERRIDES, *overrides) for arg in ("-S", value)]
    # The stages call `python`: the one running this, as in an activated virtualenv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", *options],
        cwd=workspace,
        env={**os.environ, "PATH": path},
        text=True,
        capture_output=not stream,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotdog-sample", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    parser.add_argument("--workspace", type=Path, default=None, help=f"default {DEFAULT_WORKSPACE}")
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    workspace = (args.workspace or args.repo / DEFAULT_WORKSPACE).resolve()
    start = time.monotonic()
    with exit_on_user_error():
        done = run_sample(args.repo.resolve(), workspace, args.overrides)
    if done.returncode != 0:
        message = f"The sample pipeline failed (exit {done.returncode}) in {workspace}."
        print(message, file=sys.stderr)
        return done.returncode
    print(f"Sample pipeline done in {time.monotonic() - start:.0f} s; results in {workspace}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
