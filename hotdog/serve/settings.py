"""The service's settings: environment variables with documented defaults, checked at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from hotdog.core.errors import HotdogError

ENV_PREFIX = "HOTDOG_"


class SettingsError(HotdogError):
    """An environment variable has a value the service cannot use."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Each field is read from ``HOTDOG_<FIELD NAME IN CAPITALS>``.

    ``port`` also honours ``PORT``, which Cloud Run sets.
    """

    # Local path or gs:// URI of an exported .onnx model (its .json sidecar next to it), or of
    # a .ckpt checkpoint for the torch backend.
    model_uri: str = "models/export/model.int8.onnx"
    # onnx: onnxruntime, no PyTorch needed. torch: the checkpoint in PyTorch (install [train]).
    backend: str = "onnx"
    host: str = "0.0.0.0"
    port: int = 8000
    # Uvicorn worker processes; each loads its own copy of the model.
    workers: int = 1
    # Cores one inference uses; requests are classified cores / threads at a time. 1 gives the
    # most requests per second; more lowers the latency of a single request on an idle server.
    threads: int = 1
    # Largest request body accepted, in bytes (413 above).
    max_payload_bytes: int = 10 * 1024 * 1024
    # Largest image accepted, in pixels (422 above); refused before decoding.
    max_pixels: int = 40_000_000
    # Most images in one POST /predict/batch.
    max_batch: int = 16
    # Seconds a request may wait for and spend in inference before a 503.
    timeout_s: float = 10.0
    log_level: str = "info"
    # One log line per request; off by default (Cloud Run logs requests itself).
    access_log: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            name = ENV_PREFIX + field.name.upper()
            raw = environ.get(name)
            if raw is None and field.name == "port":
                raw, name = environ.get("PORT"), "PORT"
            if raw is None or raw == "":
                continue
            kind = type(field.default)
            try:
                values[field.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError:
                raise SettingsError(
                    f"{name}={raw!r} is not a valid {kind.__name__}; "
                    f"set it to a value like {field.default!r} or unset it."
                ) from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.backend not in {"onnx", "torch"}:
            raise SettingsError(
                f"HOTDOG_BACKEND={self.backend!r} is not a backend; use 'onnx' or 'torch'."
            )
        positive = {
            "HOTDOG_WORKERS": self.workers,
            "HOTDOG_MAX_PAYLOAD_BYTES": self.max_payload_bytes,
            "HOTDOG_MAX_PIXELS": self.max_pixels,
            "HOTDOG_MAX_BATCH": self.max_batch,
            "HOTDOG_TIMEOUT_S": self.timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(f"{name}={value} must be positive.")
        if self.threads < 1:
            raise SettingsError(f"HOTDOG_THREADS={self.threads} must be 1 or more.")
