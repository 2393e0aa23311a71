"""Train on Vertex AI with the training image: ``hotdog-vertex [--dry-run] [OVERRIDES ...]``.

Overrides that start with ``vertex`` choose and change the job (``configs/vertex/``); every
other one is a training override, checked by composing the training config here, then passed to
the container as its arguments, exactly as ``docker run IMAGE OVERRIDES`` would. ``--dry-run``
prints the CustomJob after validating it against Vertex AI's own API type and submits nothing.

    hotdog-vertex --dry-run vertex=gpu_ddp vertex.project=my-project model=efficientnet_lite0
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from hotdog.core.errors import HotdogError, exit_on_user_error, first_line
from hotdog.core.overrides import check_override_types, hydra_error_sentence

CONFIG_MODULE = "hotdog.configs"
# Machine families Vertex AI custom training offers, and the family each GPU needs.
MACHINE_TYPE = re.compile(r"^(n1|n2|n2d|e2|c2|c2d|c3|a2|a3|g2|m1)-[a-z]+(-[a-z0-9]+)?-\d+[a-z]?$")
GPU_FAMILY = {
    "NVIDIA_TESLA_T4": "n1",
    "NVIDIA_TESLA_V100": "n1",
    "NVIDIA_TESLA_P100": "n1",
    "NVIDIA_TESLA_P4": "n1",
    "NVIDIA_TESLA_A100": "a2",
    "NVIDIA_A100_80GB": "a2",
    "NVIDIA_L4": "g2",
    "NVIDIA_H100_80GB": "a3",
}
REQUIRED = {
    "project": "GOOGLE_CLOUD_PROJECT",
    "region": "HOTDOG_REGION",
    "staging_bucket": "HOTDOG_BUCKET",
    "image_uri": "HOTDOG_TRAIN_IMAGE",
}


class JobSpecError(HotdogError):
    """The job's settings are missing or not something Vertex AI accepts."""


class VertexJobError(HotdogError):
    """The job could not be submitted: no credentials, or Vertex AI refused it."""


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(job overrides, training overrides)."""
    job = [o for o in overrides if o.lstrip("+~").split("=", 1)[0].split(".")[0] == "vertex"]
    return job, [o for o in overrides if o not in job]


def compose_job(job_overrides: Sequence[str], training_overrides: Sequence[str]) -> DictConfig:
    """The job settings; the training overrides are composed too, so a typo fails here."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose("vertex_job", overrides=list(job_overrides))
            training = compose("train", overrides=list(training_overrides))
            check_override_types("train", training_overrides, training)
    except HydraException as error:
        raise JobSpecError(hydra_error_sentence(error)) from None
    return cfg.vertex


def check_settings(job: DictConfig) -> None:
    for name, variable in REQUIRED.items():
        if not job.get(name):
            raise JobSpecError(
                f"vertex.{name} is not set; pass vertex.{name}=... or set {variable} "
                "(defaults in configs/vertex/_job.yaml)."
            )
    if not str(job.staging_bucket).startswith("gs://"):
        raise JobSpecError(f"vertex.staging_bucket={job.staging_bucket} must be a gs:// URI.")
    if not isinstance(job.replica_count, int) or job.replica_count < 1:
        raise JobSpecError(
            f"vertex.replica_count={job.replica_count} is not a number of replicas; use 1 or more."
        )
    if not MACHINE_TYPE.match(str(job.machine_type)):
        raise JobSpecError(
            f"vertex.machine_type={job.machine_type} is not a Vertex AI machine type; use one like "
            "n1-standard-8, g2-standard-8 or a2-highgpu-1g."
        )
    gpu, count = job.accelerator_type, job.accelerator_count
    if bool(gpu) != bool(count):
        raise JobSpecError(
            "vertex.accelerator_type and vertex.accelerator_count go together; set both "
            "(e.g. NVIDIA_TESLA_T4 and 1) or neither."
        )
    if gpu:
        family = GPU_FAMILY.get(str(gpu))
        if family is None:
            raise JobSpecError(
                f"vertex.accelerator_type={gpu} is not a GPU this command knows; use one of "
                f"{', '.join(sorted(GPU_FAMILY))}."
            )
        if not str(job.machine_type).startswith(family + "-"):
            raise JobSpecError(
                f"{gpu} runs on {family}- machines, not {job.machine_type}; change "
                "vertex.machine_type."
            )


def container_args(job: DictConfig, training_overrides: Sequence[str]) -> list[str]:
    """The training command's arguments in each replica."""
    args: list[str] = []
    gpus = int(job.accelerator_count or 0)
    if job.replica_count > 1:
        args += ["trainer=vertex_ddp", f"trainer.num_nodes={job.replica_count}"]
        if gpus:
            args += ["trainer.accelerator=gpu", f"trainer.devices={gpus}"]
            args += ["trainer.precision=16-mixed"]
    elif gpus:
        args += ["trainer=gpu", f"trainer.devices={gpus}"]
    if job.data_root:
        args.append(f"data.root={job.data_root}")
    # The user's overrides come last, so they win.
    return args + list(training_overrides)


def build_custom_job(
    job: DictConfig, training_overrides: Sequence[str], job_name: str | None = None
) -> dict[str, Any]:
    """The CustomJob resource as a dict in the API's field names; checked by :func:`validate`."""
    check_settings(job)
    job_name = job_name or f"{job.display_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    machine: dict[str, Any] = {"machine_type": job.machine_type}
    if job.accelerator_type:
        machine |= {
            "accelerator_type": job.accelerator_type,
            "accelerator_count": int(job.accelerator_count),
        }
    env = [{"name": "WANDB_PROJECT", "value": "hotdog"}]
    if job.wandb_key_secret:
        env.append({"name": "HOTDOG_WANDB_KEY_SECRET", "value": str(job.wandb_key_secret)})
    pool = {
        "machine_spec": machine,
        "disk_spec": {"boot_disk_type": "pd-ssd", "boot_disk_size_gb": job.boot_disk_size_gb},
        "container_spec": {
            "image_uri": job.image_uri,
            "args": container_args(job, training_overrides),
            "env": env,
        },
    }
    pools = [pool | {"replica_count": 1}]
    if job.replica_count > 1:
        pools.append(pool | {"replica_count": job.replica_count - 1})
    spec: dict[str, Any] = {
        "worker_pool_specs": pools,
        "base_output_directory": {
            "output_uri_prefix": f"{str(job.staging_bucket).rstrip('/')}/vertex/{job_name}"
        },
        # A replaced worker breaks the DDP ring: restart the whole job, which resumes.
        "scheduling": {"restart_job_on_worker_restart": True},
    }
    if job.spot:
        spec["scheduling"]["strategy"] = "SPOT"
    if job.service_account:
        spec["service_account"] = job.service_account
    return {"display_name": job_name, "job_spec": spec}


def validate(custom_job: dict[str, Any]) -> Any:
    """Parse into ``aiplatform_v1.CustomJob``: unknown fields and bad enum values fail."""
    try:
        from google.cloud import aiplatform_v1
        from google.protobuf import json_format
    except ImportError:
        raise JobSpecError(
            "Vertex AI jobs need google-cloud-aiplatform; install the gcp extra: "
            "pip install 'hotdog[gcp]'."
        ) from None
    message = aiplatform_v1.CustomJob.pb()()
    try:
        json_format.ParseDict(custom_job, message)
    except json_format.ParseError as error:
        raise JobSpecError(f"The CustomJob is not valid for Vertex AI: {error}.") from None
    pools = message.job_spec.worker_pool_specs
    if pools[0].replica_count != 1:
        raise JobSpecError("Worker pool 0 must have exactly one replica (the primary).")
    return aiplatform_v1.CustomJob.wrap(message)


def submit(custom_job: Any, project: str, region: str) -> str:
    """Create the job on Vertex AI; a missing credential or a refusal is one sentence."""
    from google.api_core import exceptions as api_errors
    from google.auth import exceptions as auth_errors
    from google.cloud import aiplatform_v1

    try:
        client = aiplatform_v1.JobServiceClient(
            client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
        )
        created = client.create_custom_job(
            parent=f"projects/{project}/locations/{region}", custom_job=custom_job
        )
    except auth_errors.DefaultCredentialsError:
        raise VertexJobError(
            "No Google Cloud credentials were found; run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, then "
            "submit again."
        ) from None
    except (auth_errors.GoogleAuthError, api_errors.GoogleAPIError) as error:
        reason = first_line(error) or type(error).__name__
        raise VertexJobError(
            f"Vertex AI did not accept the job in project {project}, region {region} "
            f"({reason}); check the project, the region and the account's roles, or try "
            "--dry-run to see the job."
        ) from error
    return created.name


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="hotdog-vertex", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="print the job, submit nothing")
    parser.add_argument("overrides", nargs="*", help="vertex.KEY=VALUE and training overrides")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        job_overrides, training_overrides = split_overrides(args.overrides)
        job = compose_job(job_overrides, training_overrides)
        custom_job = validate(build_custom_job(job, training_overrides))
        if args.dry_run:
            from google.protobuf import json_format

            print(json.dumps(json_format.MessageToDict(custom_job._pb), indent=2))
            return
        name = submit(custom_job, job.project, job.region)
        print(f"submitted {name}")
        print(
            f"logs: https://console.cloud.google.com/vertex-ai/locations/{job.region}/training/"
            f"{name.rsplit('/', 1)[-1]}?project={job.project}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
