"""The test command's set-up of system parts (``.ci/install_system.sh``, used by ``.ci/run``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

LIBRARY = ROOT / ".ci" / "install_system.sh"


def _install_system(*args: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``install_system ARGS`` in bash with only ``path`` on PATH."""
    script = f'. "{LIBRARY}"; install_system "$@"; echo carried on'
    return subprocess.run(
        [shutil.which("bash") or "bash", "-c", script, "install_system", *args],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_present_part_is_left_alone(tmp_path: Path):
    (tmp_path / "promtool").symlink_to(shutil.which("true") or "/bin/true")
    done = _install_system("Prometheus", "promtool", "--", "prometheus", path=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "carried on\n", "")


def test_a_part_it_cannot_install_stops_the_run_with_one_sentence(tmp_path: Path):
    # Nothing on PATH: the program is missing and there is no apt-get to install it with.
    done = _install_system("Prometheus", "promtool", "--", "prometheus", path=tmp_path)
    assert done.returncode == 1 and "carried on" not in done.stdout
    [sentence] = done.stderr.strip().splitlines()
    assert sentence.startswith("Prometheus is missing (no promtool)")
    assert "apt-get install prometheus" in sentence
