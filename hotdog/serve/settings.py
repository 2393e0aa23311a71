"""The service's settings: environment variables with documented defaults, checked at start-up.

Each field is read from ``HOTDOG_<FIELD NAME IN CAPITALS>`` (pydantic-settings). The platforms'
own variables are honoured too: ``PORT`` (Cloud Run) and ``AIP_HTTP_PORT`` (Vertex AI) for the
port, ``AIP_STORAGE_URI`` (Vertex AI: the folder holding the model artifacts) for the model,
``AIP_PREDICT_ROUTE`` and ``AIP_HEALTH_ROUTE`` for the Vertex routes. An exec-form container
command expands no variables, so the service reads them itself.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hotdog.core.errors import HotdogError

ENV_PREFIX = "HOTDOG_"
# Vertex AI's shared public endpoints refuse requests over 1.5 MB.
VERTEX_MAX_PAYLOAD_BYTES = 1_500_000


MAX_PORT = 65535
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(HotdogError):
    """An environment variable has a value the service cannot use."""


def _env(name: str, *platform_names: str, default: Any) -> Any:
    """A field read from ``HOTDOG_<NAME>`` first, then from the platforms' variables."""
    choices = AliasChoices(ENV_PREFIX + name.upper(), *platform_names)
    return Field(default, validation_alias=choices)


class Settings(BaseSettings):
    """Every knob of the service, from the environment (or keyword arguments in tests)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, populate_by_name=True, env_ignore_empty=True
    )

    # Local path or gs:// URI of an exported .onnx model (its .json sidecar next to it), or of
    # a .ckpt checkpoint for the torch backend.
    model_uri: str = "models/export/model.int8.onnx"
    # Vertex AI's copy of the Model's artifactUri (a gs:// folder); when set, the model is
    # model_file in it, whatever model_uri says (Vertex expects its artifacts to be served).
    storage_uri: str = _env("storage_uri", "AIP_STORAGE_URI", default="")
    model_file: str = "model.int8.onnx"
    # onnx: onnxruntime, no PyTorch needed. torch: the checkpoint in PyTorch (install [train]).
    backend: str = "onnx"
    host: str = "0.0.0.0"
    port: int = _env("port", "AIP_HTTP_PORT", "PORT", default=8000)
    # One process per container: Cloud Run and Vertex scale by containers, and /metrics then
    # describes the whole process. Only 1 is accepted (use threads for more cores).
    workers: int = 1
    # Cores one inference uses; requests are classified cores / threads + 1 at a time. 1 gives
    # the most requests per second; more lowers the latency of a single request on an idle server.
    threads: int = 1
    # Largest request body accepted, in bytes (413 above).
    max_payload_bytes: int = 10 * 1024 * 1024
    # Largest request body on the Vertex prediction route (JSON with base64 images).
    vertex_max_payload_bytes: int = VERTEX_MAX_PAYLOAD_BYTES
    # Seconds a client may take to send a request body (408 after).
    body_timeout_s: float = 30.0
    # Bytes of request bodies held in memory across all connections; beyond it the bodies that
    # stalled longest are dropped with a 503 (see hotdog.serve.middleware.BodyBudget).
    body_memory_bytes: int = 128 * 1024 * 1024
    # Largest image accepted, in pixels (422 above); refused before decoding.
    max_pixels: int = 40_000_000
    # Most images in one POST /predict/batch or one Vertex request.
    max_batch: int = 16
    # Seconds a request may wait for and spend in inference before a 503.
    timeout_s: float = 10.0
    # Vertex AI / KServe v1 routes (Vertex sets both when it deploys the model).
    predict_route: str = _env(
        "predict_route", "AIP_PREDICT_ROUTE", default="/v1/models/hotdog:predict"
    )
    health_route: str = _env("health_route", "AIP_HEALTH_ROUTE", default="/v1/models/hotdog")
    # Seconds requests in flight get to finish after SIGTERM (Cloud Run allows 10 before SIGKILL).
    shutdown_grace_s: float = 8.0
    # One of LOG_LEVELS, in any case.
    log_level: str = "info"
    # One log line per request; off by default (Cloud Run logs requests itself).
    access_log: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from the environment, or a :class:`SettingsError` in one sentence."""
        try:
            settings = cls()
        except ValidationError as error:
            raise SettingsError(_sentence(error)) from None
        settings.validate_values()
        return settings

    @property
    def model_location(self) -> str:
        """Where the model is read from: Vertex's artifact folder if set, else ``model_uri``."""
        if self.storage_uri:
            return f"{self.storage_uri.rstrip('/')}/{self.model_file}"
        return self.model_uri

    @field_validator("log_level")
    @classmethod
    def _lower_case(cls, level: str) -> str:
        return level.lower()

    @field_validator("predict_route", "health_route")
    @classmethod
    def _absolute_path(cls, route: str) -> str:
        if not route.startswith("/"):
            raise ValueError("must be a path starting with /")
        return route

    def validate_values(self) -> None:
        if self.backend not in {"onnx", "torch"}:
            raise SettingsError(
                f"HOTDOG_BACKEND={self.backend!r} is not a backend; use 'onnx' or 'torch'."
            )
        positive = {
            "HOTDOG_MAX_PAYLOAD_BYTES": self.max_payload_bytes,
            "HOTDOG_VERTEX_MAX_PAYLOAD_BYTES": self.vertex_max_payload_bytes,
            "HOTDOG_MAX_PIXELS": self.max_pixels,
            "HOTDOG_MAX_BATCH": self.max_batch,
            "HOTDOG_TIMEOUT_S": self.timeout_s,
            "HOTDOG_BODY_TIMEOUT_S": self.body_timeout_s,
        }
        for name, value in positive.items():
            if not 0 < value < math.inf:  # also refuses nan
                raise SettingsError(f"{name}={value} must be a positive number.")
        if not 0 <= self.shutdown_grace_s < math.inf:
            raise SettingsError(
                f"HOTDOG_SHUTDOWN_GRACE_S={self.shutdown_grace_s} must be 0 or more seconds."
            )
        largest = max(self.max_payload_bytes, self.vertex_max_payload_bytes)
        if self.body_memory_bytes < largest:
            raise SettingsError(
                f"HOTDOG_BODY_MEMORY_BYTES={self.body_memory_bytes} is less than one upload of "
                f"the largest size allowed ({largest}); raise it or lower the payload limits."
            )
        if self.workers != 1:
            raise SettingsError(
                f"HOTDOG_WORKERS={self.workers} is not supported: the service runs one process "
                "per container so that /metrics counts every request; run more containers (Cloud "
                "Run and Vertex AI scale them) or set HOTDOG_THREADS to use more cores."
            )
        if self.threads < 1:
            raise SettingsError(f"HOTDOG_THREADS={self.threads} must be 1 or more.")
        if not 0 <= self.port <= MAX_PORT:
            raise SettingsError(
                f"Port {self.port} (HOTDOG_PORT, AIP_HTTP_PORT or PORT) is not a TCP port; use "
                f"1 to {MAX_PORT}, or 0 for any free one."
            )
        try:
            socket.getaddrinfo(self.host, None)
        except (OSError, UnicodeError):
            raise SettingsError(
                f"HOTDOG_HOST={self.host!r} cannot be resolved to an address; use 0.0.0.0 (every "
                "interface) or 127.0.0.1 (this machine only)."
            ) from None
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"HOTDOG_LOG_LEVEL={self.log_level!r} is not a log level; use one of "
                f"{', '.join(LOG_LEVELS)}."
            )


def _sentence(error: ValidationError) -> str:
    """The first problem of a validation error, named by the environment variable it came from."""
    problem = error.errors()[0]
    name = str(problem["loc"][0]) if problem["loc"] else ""
    field = Settings.model_fields.get(name) or next(
        (
            candidate
            for candidate in Settings.model_fields.values()
            if isinstance(candidate.validation_alias, AliasChoices)
            and name in candidate.validation_alias.choices
        ),
        None,
    )
    variable = ENV_PREFIX + name.upper()
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        # The first of the field's variables that is set is the one that was read.
        names = [str(choice) for choice in field.validation_alias.choices]
        variable = next((choice for choice in names if os.environ.get(choice)), names[0])
    if field is not None and problem["type"].endswith(("_parsing", "_type")):
        kind = getattr(field.annotation, "__name__", str(field.annotation))
        return (
            f"{variable}={problem['input']!r} is not a valid {kind}; "
            f"set it to a value like {field.default!r} or unset it."
        )
    reason = str(problem["msg"]).removeprefix("Value error, ")
    return f"{variable}={problem['input']!r} {reason}."
