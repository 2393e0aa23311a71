"""Check the DVC remote before pushing or pulling: ``python -m hotdog.pipeline.remote``.

    python -m hotdog.pipeline.remote [--remote NAME]     # check only
    python -m hotdog.pipeline.remote pull [DVC OPTIONS]  # check, then `dvc pull` (push, fetch)

DVC's own errors for a missing bucket or missing credentials are cryptic (``b/NAME/o``) or slow:
without credentials ``dvc pull`` retries for minutes. This check reads the remote from DVC's
config and says in one sentence, within seconds, what is wrong: no credentials, a bucket that does
not exist or cannot be read, or an endpoint that does not answer. Given a DVC command, it runs it
only once the remote answered.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from hotdog.core.errors import HotdogError, exit_on_user_error, silence_gcsfs_failures

# gcsfs otherwise probes for hierarchical-namespace buckets and hangs on emulators.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

CREDENTIALS_HINT = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run "
    "`gcloud auth application-default login`, or give the remote one with "
    "`dvc remote modify --local REMOTE credentialpath KEY.json`"
)


def remote_settings(repo_root: Path, name: str | None = None) -> tuple[str, dict]:
    """The remote's name and its settings (url, endpointurl, credentials) from DVC's config."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        config = Repo(str(repo_root)).config
    except NotDvcRepoError:
        raise HotdogError(
            f"{repo_root} is not a DVC repository; run this in the project's folder or pass it "
            "with --repo."
        ) from None
    name = name or config["core"].get("remote")
    if not name or name not in config["remote"]:
        raise HotdogError(
            f"No DVC remote {name or '(default)'} is configured in {repo_root}/.dvc/config; "
            "add one with `dvc remote add -d gcs gs://BUCKET/PATH`."
        )
    return name, dict(config["remote"][name])


def _token(settings: dict) -> object:
    if settings.get("allow_anonymous_login"):
        return "anon"
    key = settings.get("credentialpath") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key:
        if not Path(key).is_file():
            raise HotdogError(f"The credentials file {key} does not exist; {CREDENTIALS_HINT}.")
        return key
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default()
    except DefaultCredentialsError as error:
        raise HotdogError(f"No Google Cloud credentials were found; {CREDENTIALS_HINT}.") from error
    return credentials


def check_remote(repo_root: Path, name: str | None = None, timeout_s: float = 20) -> str:
    """Raise :class:`HotdogError` unless the remote's bucket can be listed; return its URL."""
    name, settings = remote_settings(repo_root, name)
    url = settings.get("url", "")
    parsed = urlparse(url)
    if parsed.scheme != "gs":
        return url  # only Google Cloud Storage is checked here
    endpoint = urlparse(settings.get("endpointurl") or "https://storage.googleapis.com")
    host, port = (
        endpoint.hostname or "",
        endpoint.port or (443 if endpoint.scheme == "https" else 80),
    )
    try:  # fail fast: gcsfs retries a refused connection for about a minute
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise HotdogError(
            f"The storage endpoint {host}:{port} of remote {name} does not answer "
            f"({error.strerror or error}); check the network or the remote's endpointurl."
        ) from error
    # The plain file system, whatever GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT said when gcsfs was first
    # imported: its experimental subclass probes each bucket's type and waits out retries on a
    # bucket that does not exist.
    from gcsfs.core import GCSFileSystem

    silence_gcsfs_failures()
    filesystem = GCSFileSystem(
        token=_token(settings),
        endpoint_url=settings.get("endpointurl"),
        requests_timeout=timeout_s,
        retries=1,
    )
    try:
        exists = filesystem.exists(parsed.netloc)
    except OSError as error:
        raise HotdogError(
            f"The storage endpoint of remote {name} ({settings.get('endpointurl') or 'Google'}) "
            f"did not answer ({error}); check the network or the endpointurl setting."
        ) from error
    except Exception as error:  # gcsfs raises HttpError subclasses for 401/403
        raise HotdogError(
            f"Bucket gs://{parsed.netloc} of remote {name} cannot be read with these credentials "
            f"({error}); {CREDENTIALS_HINT}."
        ) from error
    if not exists:
        raise HotdogError(
            f"Bucket gs://{parsed.netloc} of remote {name} does not exist; create it, or point the "
            f"remote at your own bucket: `dvc remote modify {name} url gs://BUCKET/PATH`."
        )
    return url


DVC_COMMANDS = ("pull", "push", "fetch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotdog-remote", description=__doc__.splitlines()[0])
    parser.add_argument("--remote", help="remote name (default: DVC's default remote)")
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument(
        "command", nargs="?", choices=DVC_COMMANDS, help="then run `dvc COMMAND` in the repo"
    )
    parser.add_argument("dvc_args", nargs=argparse.REMAINDER, help="options for the DVC command")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        url = check_remote(args.repo, args.remote)
    print(f"Remote {url} is reachable.", flush=True)
    if not args.command:
        return 0
    remote = ["--remote", args.remote] if args.remote else []
    command = [sys.executable, "-m", "dvc", args.command, *remote, *args.dvc_args]
    return subprocess.run(command, cwd=args.repo).returncode


if __name__ == "__main__":
    sys.exit(main())
