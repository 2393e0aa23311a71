"""From an exported model to what Cloud Run serves: ``hotdog-release publish|deploy|rollback``.

- ``publish EXPORT_DIR --bucket gs://B``: the gated int8 export (``hotdog.export`` refuses an
  int8 model that loses accuracy) and its sidecar go to an immutable ``gs://B/models/VERSION/``.
- ``deploy VERSION``: checks that version (checksum against its sidecar), records it in
  ``gs://B/models/releases.json`` and writes the Cloud Run service for it
  (``gcloud run services replace`` applies it; Cloud Build does both).
- ``rollback``: the same for the version deployed before the current one.

The service reads the model from the URI at start, so pointing at a version is the deployment,
and the release log is the one record of what ran when.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hotdog.core.artifact import sidecar_uri
from hotdog.core.errors import (
    HotdogError,
    exit_on_user_error,
    first_line,
    problem,
    silence_gcsfs_failures,
)
from hotdog.serve.model_store import ModelNotFoundError, fetch_model, read_bytes

MODEL_NAME = "model.int8.onnx"
SERVICE_TEMPLATE = Path("deploy/cloudrun/service.yaml")


class ReleaseError(HotdogError):
    """A release step cannot go ahead."""


def _fs(uri: str) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(uri)[0]


@contextmanager
def _writing(bucket: str) -> Iterator[None]:
    """Turn a failed write to the bucket into one sentence (gcsfs raises many types for auth,
    network and permission failures)."""
    try:
        yield
    except HotdogError:
        raise
    except Exception as error:
        reason = first_line(error)
        raise ReleaseError(
            f"Cannot write to {bucket} ({type(error).__name__}{': ' + reason if reason else ''}); "
            "check that the bucket exists and that credentials with write access to it are "
            "available (GOOGLE_APPLICATION_CREDENTIALS or gcloud auth application-default login)."
        ) from error


def version_uri(bucket: str, version: str) -> str:
    return f"{bucket.rstrip('/')}/models/{version}"


def releases_uri(bucket: str) -> str:
    return f"{bucket.rstrip('/')}/models/releases.json"


def publish(export_dir: Path, bucket: str, version: str | None = None) -> str:
    """Upload the checked int8 model and its sidecar to a new version; return its folder URI."""
    model = export_dir / MODEL_NAME
    try:
        artifact = fetch_model(str(model))  # the checks the service does at start
    except HotdogError as error:
        raise ReleaseError(f"Nothing to publish: {error}") from None
    version = version or time.strftime("%Y%m%d-%H%M%S-") + artifact.metadata.sha256[:8]
    target = version_uri(bucket, version)
    with _writing(bucket):
        fs = _fs(target)
        if fs.exists(f"{target}/{MODEL_NAME}"):
            raise ReleaseError(
                f"{target} already exists and versions are immutable; publish under a new "
                "--version."
            )
        # The sidecar last: a version without its sidecar is never mistaken for a complete one.
        with fs.open(f"{target}/{MODEL_NAME}", "wb") as out:
            out.write(artifact.data)
        with fs.open(sidecar_uri(f"{target}/{MODEL_NAME}"), "wb") as out:
            out.write(read_bytes(sidecar_uri(str(model))))
    return target


def read_releases(bucket: str) -> list[dict[str, str]]:
    """The release history; empty before the first deploy. A bucket that cannot be read is an
    error in one sentence, never an empty history."""
    try:
        return json.loads(read_bytes(releases_uri(bucket)))
    except ModelNotFoundError:
        return []  # no release yet


def record_release(bucket: str, entry: dict[str, str]) -> None:
    releases = [*read_releases(bucket), entry | {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}]
    with _writing(bucket), _fs(bucket).open(releases_uri(bucket), "w") as out:
        json.dump(releases, out, indent=1)


def prediction_log_uri(bucket: str) -> str:
    """Where the deployed service writes its prediction log (batched objects, one folder a day)."""
    return f"{bucket.rstrip('/')}/predictions"


def render_service(
    template: str, image: str, model_uri: str, service_account: str, prediction_log: str
) -> str:
    values = {
        "API_IMAGE": image,
        "MODEL_URI": model_uri,
        "API_SERVICE_ACCOUNT": service_account,
        "PREDICTION_LOG_URI": prediction_log,
    }
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    return template


def deploy(
    bucket: str, version: str, image: str, service_account: str, out: Path, template: Path
) -> str:
    """Check the version, write the service that serves it, record it; return the model URI."""
    model_uri = f"{version_uri(bucket, version)}/{MODEL_NAME}"
    try:
        fetch_model(model_uri)
    except ModelNotFoundError as error:
        raise ReleaseError(
            f"Version {version} cannot be deployed ({problem(error)}); publish the model with "
            "`hotdog-release publish` (under a new version), or deploy another published one."
        ) from None
    except HotdogError as error:  # unreachable bucket, missing credentials, a damaged copy
        raise ReleaseError(f"Version {version} cannot be deployed: {error}") from None
    out.write_text(
        render_service(
            template.read_text(), image, model_uri, service_account, prediction_log_uri(bucket)
        )
    )
    record_release(bucket, {"version": version, "image": image})
    return model_uri


def previous_release(bucket: str) -> dict[str, str]:
    releases = read_releases(bucket)
    if not releases:
        raise ReleaseError(f"{releases_uri(bucket)} records no release; deploy one first.")
    current = releases[-1]["version"]
    for entry in reversed(releases):
        if entry["version"] != current:
            return entry
    raise ReleaseError(
        f"Only version {current} was ever deployed; there is nothing to roll back to."
    )


def bucket_uri(text: str) -> str:
    """``gs://BUCKET`` (optionally with a folder), for ``--bucket``."""
    if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/.*)?", text):
        raise argparse.ArgumentTypeError(f"must be gs://BUCKET, not {text!r}")
    return text


def version_name(text: str) -> str:
    """A version's folder name: letters, digits, '.', '-' and '_'."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(
            f"may contain only letters, digits, '.', '-' and '_', not {text!r}"
        )
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hotdog-release", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    publishing = commands.add_parser("publish", help="upload an export as a new model version")
    publishing.add_argument("export_dir", type=Path)
    publishing.add_argument("--version", type=version_name, help="default: time and checksum")
    for name, text in [("deploy", "serve VERSION"), ("rollback", "serve the previous version")]:
        command = commands.add_parser(name, help=text)
        if name == "deploy":
            command.add_argument("version", type=version_name)
        command.add_argument("--image", required=True, help="the API image to run")
        command.add_argument("--service-account", required=True, help="the service's identity")
        command.add_argument("--out", type=Path, default=Path("service.yaml"))
        command.add_argument("--template", type=Path, default=SERVICE_TEMPLATE)
    for command in commands.choices.values():
        command.add_argument(
            "--bucket", type=bucket_uri, required=True, help="gs://BUCKET holding models/"
        )
    args = parser.parse_args(argv)
    silence_gcsfs_failures()
    with exit_on_user_error():
        if args.command == "publish":
            print(publish(args.export_dir, args.bucket, args.version))
            return
        version = args.version if args.command == "deploy" else None
        if version is None:
            version = previous_release(args.bucket)["version"]
        uri = deploy(
            args.bucket, version, args.image, args.service_account, args.out, args.template
        )
        print(f"{args.out} serves {uri}; apply it: gcloud run services replace {args.out}")


if __name__ == "__main__":
    main()
