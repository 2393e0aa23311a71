"""The test command's set-up of system parts (``.ci/install_system.sh``, used by ``.ci/run``)."""

from __future__ import annotations

import shlex
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


# Programs .ci/run installs that the GitHub workflow provides another way or does not need.
NOT_IN_WORKFLOW = {
    "python3.11": "actions/setup-python",
    "dockerd": "the container tests, which only .ci/run runs",
    "debootstrap": "the container tests, which only .ci/run runs",
}


def test_the_github_workflow_provides_what_the_pytest_step_of_ci_run_uses():
    """A system part added to .ci/run for the plain pytest run must reach ci.yml too."""
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    programs = []
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        if line.startswith("install_system "):
            words = shlex.split(line)[2:]  # after the function and the part's name
            programs += words[: words.index("--")]
    assert {"chromium", "chromedriver", "prometheus", "promtool"} <= set(programs)
    missing = [p for p in programs if p not in NOT_IN_WORKFLOW and p not in workflow]
    assert not missing, f"ci.yml does not install {missing}, which .ci/run installs"
