"""What a model says about itself, defined once: in a checkpoint and in an export's sidecar.

A checkpoint written by ``hotdog.train`` carries :class:`InferenceInfo` (classes, backbone,
preprocessing, flip TTA, the "unsure" threshold) under :data:`CHECKPOINT_KEY`. An exported model
``model.onnx`` has a JSON sidecar ``model.onnx.json`` holding :class:`ModelMetadata`: the same
facts plus what the export measured and hashed. Export writes it, the model store checks it, the
service shows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from hotdog.core.errors import HotdogError
from hotdog.core.preprocessing import DataConfig

# Key under which a checkpoint carries what inference needs, readable without Lightning.
CHECKPOINT_KEY = "hotdog_inference"
# Key of the run's validation photos (paths relative to its data root): export refits the
# "unsure" threshold on them for the model it serves, whose preprocessing may differ.
VALIDATION_FILES_KEY = "hotdog_validation_files"
SIDECAR_SUFFIX = ".json"


class ArtifactError(HotdogError):
    """A sidecar or checkpoint lacks the metadata inference needs."""


def sidecar_uri(uri: str) -> str:
    """A model's metadata lives next to it, with ``.json`` appended (``model.onnx.json``)."""
    return uri + SIDECAR_SUFFIX


def model_version(backbone: str, precision: str, sha256: str) -> str:
    """The version string clients see: what the model is and which exact file it is."""
    return f"{backbone}-{precision}-{sha256[:12]}"


@dataclass(frozen=True)
class InferenceInfo:
    """What inference needs to know about a trained model, beyond its weights."""

    class_names: tuple[str, ...]
    backbone: str
    data_config: DataConfig
    tta_hflip: bool
    # Answers whose top probability is below this are "unsure" (hotdog.core.answers); fitted on
    # the validation split in training. 0.0: never (and in models from before it existed).
    unsure_below: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "backbone": self.backbone,
            "data_config": self.data_config.to_dict(),
            "tta_hflip": self.tta_hflip,
            "unsure_below": self.unsure_below,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InferenceInfo:
        return cls(
            class_names=tuple(str(name) for name in raw["class_names"]),
            backbone=str(raw["backbone"]),
            data_config=DataConfig.from_dict(raw["data_config"]),
            tta_hflip=bool(raw["tta_hflip"]),
            unsure_below=float(raw.get("unsure_below", 0.0)),
        )


@dataclass(frozen=True)
class ModelMetadata:
    """A served model's sidecar: :class:`InferenceInfo` plus its identity and measured accuracy.

    Serialised flat (``class_names``, ``data_config`` ... beside ``version``, ``sha256``).
    """

    inference: InferenceInfo
    version: str
    precision: str
    # SHA-256 of the model file; the model store refuses a file that does not match.
    sha256: str
    format: str = "onnx"
    input_name: str = "image"
    output_name: str = "probabilities"
    # The reduced embedding output and the reference profile's file name beside the model, for
    # drift monitoring (hotdog.monitor); absent in models exported before them.
    embedding_name: str | None = None
    embedding_dim: int | None = None
    reference_profile: str | None = None
    opset: int | None = None
    test_accuracy: float | None = None
    test_images: int | None = None
    # {"path": ..., "sha256": ...} of the checkpoint the model was exported from.
    source_checkpoint: dict[str, str] | None = None
    exported_at: str | None = None
    hotdog_version: str | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.inference.class_names)

    @property
    def data_config(self) -> DataConfig:
        return self.inference.data_config

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's JSON object (fields that are not known are left out)."""
        flat: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "inference":
                flat.update(value.to_dict())
            elif value is not None:
                flat[field.name] = value
        return flat

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelMetadata:
        known = {field.name for field in fields(cls)} - {"inference"}
        return cls(
            inference=InferenceInfo.from_dict(raw),
            **{key: value for key, value in raw.items() if key in known},
        )

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> ModelMetadata:
        """Parse a sidecar, or an :class:`ArtifactError` in one sentence naming ``source``."""
        try:
            raw = json.loads(text)
            return cls.from_dict(raw)
        except (ValueError, KeyError, TypeError) as error:
            problem = f"lacks the key {error}" if isinstance(error, KeyError) else "is malformed"
            raise ArtifactError(
                f"{source} is not a model sidecar (it {problem}); re-export the model with "
                "hotdog.export."
            ) from None
