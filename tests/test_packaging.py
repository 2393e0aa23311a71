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
