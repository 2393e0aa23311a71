"""The project as a user outside the source tree gets it: a wheel, installed into a fresh venv."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

# The smallest training that still composes every config group the CLI needs.
TINY_TRAINING = [
    "debug=fdr",
    "logger=csv",
    "model=mobilenetv3_small_100",
    "model.pretrained=false",
    "model.image_size=64",
    "model.tta_hflip=false",
    "trainer.precision=32-true",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build-tree")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            out,
            ROOT,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "TMPDIR": str(build)},
    )
    (path,) = out.glob("hotdog-*.whl")
    return path


def test_wheel_carries_every_hydra_config(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            n for n in archive.namelist() if n.startswith("hotdog/configs/") and n.endswith(".yaml")
        }
    expected = {
        "hotdog/configs/" + p.relative_to(ROOT / "configs").as_posix()
        for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert expected and shipped == expected


@pytest.mark.slow
def test_train_cli_from_a_wheel_in_a_fresh_venv(wheel: Path, tmp_path: Path):
    """`hotdog-train` outside the source tree finds its configs and trains one batch.

    The venv is new and the wheel is installed without dependencies; a .pth file lends it this
    interpreter's site-packages (PyTorch is ~6 GB), after its own, so `hotdog` comes from the wheel.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(
        subprocess.run(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",  # pip's option: before the command
            venv / "bin" / "python",
            "install",
            "-q",
            "--no-deps",
            wheel,
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    # After the install, or pip would take the shared editable install for this one.
    (purelib / "zz_shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import hotdog; print(hotdog.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(purelib), where.stdout
    result = subprocess.run(
        [venv / "bin" / "hotdog-train", *TINY_TRAINING, f"data.root={SAMPLE}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Hydra's run folder lands under the working directory, as from a source checkout.
    (report,) = (workdir / "runs" / "debug").glob("*/metrics.json")
    assert "accuracy" in report.read_text()


# A console script, the extras a user installs for it (README), and arguments that run it
# without a cloud: its imports and, for hotdog-vertex, the whole job composition.
SCRIPTS_AND_EXTRAS = [
    (
        "hotdog.cloud.vertex_job",
        ["gcp"],
        [
            "--dry-run",
            "vertex.project=p",
            "vertex.staging_bucket=gs://b",
            "vertex.image_uri=europe-west4-docker.pkg.dev/p/r/train:1",
            "model=efficientnet_lite0",
        ],
    ),
    ("hotdog.cloud.release", ["serve", "gcp"], ["--help"]),
    ("hotdog.serve.__main__", ["serve"], ["--help"]),
    ("hotdog.monitor", ["monitor"], ["drift", "--help"]),
]

# Run in a child: hide every installed third-party package outside the allowed distributions,
# then run the script's main() as its console script would.
ONLY_DECLARED = """
import importlib.abc, importlib.metadata, json, runpy, sys
allowed, module, argv = json.loads(sys.argv[1])
allowed = set(allowed)
owners = importlib.metadata.packages_distributions()

def canonical(name):
    return name.lower().replace("_", "-").replace(".", "-")

class Undeclared(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        dists = owners.get(top)
        if top != "hotdog" and dists and not {canonical(d) for d in dists} & allowed:
            raise ModuleNotFoundError(f"{top} is not a dependency of the extras", name=top)
        return None

sys.meta_path.insert(0, Undeclared())
sys.argv = [module, *argv]
runpy.run_module(module, run_name="__main__")
"""


def _declared_distributions(extras: list[str]) -> set[str]:
    """Every distribution the project's base dependencies and ``extras`` pull in, recursively:
    hotdog's own from pyproject.toml (the source of truth), the rest from installed metadata."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo: list[Requirement] = [Requirement(r) for r in project["dependencies"]]
    wanted, done_extras = list(extras), set()
    while wanted:
        extra = wanted.pop()
        if extra in done_extras:
            continue
        done_extras.add(extra)
        for line in project["optional-dependencies"][extra]:
            requirement = Requirement(line)
            if requirement.name == "hotdog":
                wanted += list(requirement.extras)
            else:
                todo.append(requirement)
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": extra}) for extra in {"", *requirement.extras}
            ):
                todo.append(sub)
    return seen


@pytest.mark.parametrize(("module", "extras", "argv"), SCRIPTS_AND_EXTRAS)
def test_a_console_script_runs_with_only_the_extras_the_readme_names(
    module: str, extras: list[str], argv: list[str], tmp_path: Path
):
    """`pip install -e '.[gcp]'` must be enough for hotdog-vertex, and so on: every package a
    script imports is declared in its extras (or pulled in by what they declare)."""
    import json

    allowed = sorted(_declared_distributions(extras))
    assert "torch" not in allowed  # none of these needs PyTorch
    result = subprocess.run(
        [sys.executable, "-c", ONLY_DECLARED, json.dumps([allowed, module, argv])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
