"""``python -m hotdog.pipeline.remote`` against a real GCS API server: one sentence per problem."""

from __future__ import annotations

from pathlib import Path

import pytest


def _repo(tmp_path: Path, remote: str | None) -> Path:
    """A DVC project without git (what ``dvc init --no-scm`` writes), with ``remote`` as gcs."""
    (tmp_path / ".dvc").mkdir()
    config = "[core]\n    no_scm = True\n"
    if remote is not None:
        config += f"    remote = gcs\n['remote \"gcs\"']\n{remote}"
    (tmp_path / ".dvc" / "config").write_text(config)
    return tmp_path


def _gcs(url: str, endpoint: str) -> str:
    return f"    url = {url}\n    endpointurl = {endpoint}\n    allow_anonymous_login = true\n"


def test_a_reachable_bucket_is_confirmed(run_main, tmp_path: Path, gcs_server: str):
    repo = _repo(tmp_path, _gcs("gs://hotdog-models/dvc", gcs_server))
    done = run_main("hotdog.pipeline.remote", "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    assert "Remote gs://hotdog-models/dvc is reachable." in done.stdout


@pytest.mark.parametrize(
    ("remote", "message"),
    [
        (None, "No DVC remote (default) is configured"),
        ("NO-SUCH-BUCKET", "Bucket gs://no-such-bucket of remote gcs does not exist"),
        ("DEAD-ENDPOINT", "The storage endpoint 127.0.0.1:9 of remote gcs does not answer"),
    ],
)
def test_problems_are_one_sentence(run_main, tmp_path: Path, gcs_server: str, remote, message):
    settings = {
        None: None,
        "NO-SUCH-BUCKET": _gcs("gs://no-such-bucket/dvc", gcs_server),
        "DEAD-ENDPOINT": _gcs("gs://hotdog-models/dvc", "http://127.0.0.1:9"),
    }[remote]
    done = run_main("hotdog.pipeline.remote", "--repo", str(_repo(tmp_path, settings)))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_folder_that_is_not_a_dvc_repository_is_one_sentence(run_main, tmp_path: Path):
    done = run_main("hotdog.pipeline.remote", "--repo", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path} is not a DVC repository; run this in the project's folder" in done.stderr
