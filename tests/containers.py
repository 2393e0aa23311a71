"""A private Docker engine and a local base image, for the container tests.

Nothing here relies on a running daemon or a pulled image: `dockerd` starts with its own data root,
socket and pid file in a temporary folder (stopped by its PID), and the Python base image is made
with debootstrap from Debian's archive, since no registry can be reached. Networking is the host's
(`--bridge none`): several engines may run on one machine, and they must not fight over docker0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Debian's client: the only one here with BuildKit (multi-stage builds skip unused stages).
DOCKER = "/usr/bin/docker"
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP = ("debootstrap", "--variant=minbase", "--include=python3,ca-certificates")
# Tags of the stand-ins for `python:3.11-slim-bookworm` (runtime) and a builder with pip and venv.
RUNTIME_BASE = "hotdog-local/python:3.11-slim"
BUILDER_BASE = "hotdog-local/python:3.11-build"


class EngineUnavailableError(RuntimeError):
    """Docker or debootstrap is missing; `.ci/run` installs them (docker.io, debootstrap)."""


@dataclass
class DockerEngine:
    root: Path
    pid: int

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": self.host,
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.root / "client"),
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 1800, **kwargs
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [DOCKER, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result

    def image_size(self, tag: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", tag).stdout)

    def has_image(self, tag: str) -> bool:
        return self("image", "inspect", tag, check=False).returncode == 0

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            for _ in range(150):
                if _exited(self.pid):
                    break
                time.sleep(0.2)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _unmount_below(self.root)


def _exited(pid: int) -> bool:
    """Whether ``pid`` has ended; reaps it if it is this process's child (a zombie still answers
    a signal)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _unmount_below(root: Path) -> None:
    """Unmount what dockerd left mounted under its folders (its network namespace), deepest
    first: a mount point cannot be deleted, and pytest would fail to clean the folder for ever."""
    prefix = f"{root.resolve()}/"
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


def start_engine(root: Path, timeout: float = 60) -> DockerEngine:
    for tool in (DOCKER, DOCKERD):
        if not Path(tool).exists():
            raise EngineUnavailableError(f"{tool} is missing; install Debian's docker.io package.")
    if os.geteuid() != 0:
        raise EngineUnavailableError("dockerd needs root here; run the container tests as root.")
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "dockerd.log").open("w")
    daemon = subprocess.Popen(
        [
            DOCKERD,
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'dockerd.pid'}",
            f"--host=unix://{root / 'docker.sock'}",
            "--storage-driver=overlay2",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = DockerEngine(root, daemon.pid)
    deadline = time.monotonic() + timeout
    while engine("version", check=False, timeout=10).returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            raise EngineUnavailableError(
                f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}"
            )
        time.sleep(0.5)
    return engine


def debian_mirror() -> str:
    """The archive apt uses on this machine (no other host is reachable)."""
    for path in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def make_base_images(engine: DockerEngine, workdir: Path) -> None:
    """Debian bookworm's Python 3.11 as two local images: a slim runtime, and a builder on it.

    One debootstrap (~60 s) gives the runtime; the builder adds pip and venv to the same tree.
    """
    if engine.has_image(RUNTIME_BASE) and engine.has_image(BUILDER_BASE):
        return
    if shutil.which("debootstrap") is None:
        raise EngineUnavailableError(
            "debootstrap is missing; install Debian's debootstrap package."
        )
    tree = workdir / "rootfs"
    subprocess.run(
        [*DEBOOTSTRAP, DEBIAN_SUITE, str(tree), debian_mirror()],
        check=True,
        capture_output=True,
        timeout=900,
    )
    # Package lists, caches, manuals and translations are not part of an image (as in the
    # registry's slim Python images): ~50 MB.
    for cache in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
        shutil.rmtree(tree / cache, ignore_errors=True)
        (tree / cache).mkdir(parents=True)
    for translations in (tree / "usr/share/locale").iterdir():
        if translations.is_dir():
            shutil.rmtree(translations)
    _import(engine, tree, RUNTIME_BASE)
    subprocess.run(
        [
            "chroot",
            str(tree),
            "sh",
            "-c",
            "apt-get update -qq && apt-get install -y -qq "
            "--no-install-recommends python3-pip python3-venv >/dev/null && apt-get clean",
        ],
        check=True,
        capture_output=True,
        timeout=900,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    _import(engine, tree, BUILDER_BASE)
    shutil.rmtree(tree, ignore_errors=True)


def _import(engine: DockerEngine, tree: Path, tag: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
    engine(
        "import",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        'CMD ["python3"]',
        "-",
        tag,
        stdin=tar.stdout,
    )
    tar.wait()
