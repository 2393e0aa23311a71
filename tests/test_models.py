"""Backbones (offline weights), the classifier's training behaviour, checkpoints, schedules."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from hotdog.core.artifact import CHECKPOINT_KEY
from hotdog.core.errors import HotdogError
from hotdog.core.images import read_image
from hotdog.data import preprocess
from hotdog.models import HotdogClassifier, PretrainedWeightsUnavailableError, create_backbone
from hotdog.models.backbones import bundled_weights_path, convert_lite_state_dict
from hotdog.models.classifier import load_classifier
from hotdog.models.schedules import one_cycle, warmup_cosine
from tests.conftest import SAMPLE

IMAGENET_HOTDOG = 934


def _classifier(**kwargs) -> HotdogClassifier:
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=1e-3))
    return HotdogClassifier(**kwargs)


def test_bundled_lite0_weights_map_onto_every_timm_tensor():
    import timm

    source = torch.load(bundled_weights_path("tf_efficientnet_lite0"), weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0")
    converted = convert_lite_state_dict(source, model)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(converted) == expected
    model.load_state_dict(converted, strict=False)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_bundled_weights_recognise_hot_dogs_as_imagenet_does(backbone):
    """The converted weights are right: ImageNet's 'hotdog' class wins on the sample's hot dogs."""
    model = create_backbone(backbone, num_classes=1000).eval()
    probe = _classifier(backbone=backbone, pretrained=False)  # for its data config
    files = sorted((SAMPLE / "test" / "hot_dog").glob("*.jpg"))
    batch = torch.stack([preprocess(read_image(f), probe.data_config) for f in files])
    with torch.no_grad():
        top5 = model(batch).topk(5).indices
    hits = sum(IMAGENET_HOTDOG in row for row in top5.tolist())
    assert hits >= 0.8 * len(files), hits


def test_offline_hub_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailableError) as caught:
        create_backbone("resnet18", num_classes=2, pretrained=True)
    assert time.perf_counter() - start < 15
    message = str(caught.value)
    assert "efficientnet_lite0" in message and "model.weights" in message
    assert "model.pretrained=false" in message


def test_local_weights_file_is_loaded(tmp_path: Path):
    reference = create_backbone("resnet18", num_classes=2, pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = create_backbone("resnet18", num_classes=2, pretrained=True, weights=path)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_unreadable_or_foreign_weights_are_one_sentence(tmp_path: Path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(PretrainedWeightsUnavailableError, match="cannot be read"):
        create_backbone("resnet18", num_classes=2, weights=garbage)
    lite0 = bundled_weights_path("tf_efficientnet_lite0")
    with pytest.raises(PretrainedWeightsUnavailableError, match="does not fit"):
        create_backbone("tf_efficientnet_lite2", num_classes=2, weights=lite0)
    with pytest.raises(PretrainedWeightsUnavailableError, match="no model named"):
        create_backbone("resnet_typo", num_classes=2)


def test_weights_for_another_model_are_refused(tmp_path: Path):
    path = tmp_path / "wrong.pth"
    torch.save(nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(PretrainedWeightsUnavailableError, match="does not fit"):
        create_backbone("resnet18", num_classes=2, weights=path)
    with pytest.raises(PretrainedWeightsUnavailableError, match="does not exist"):
        create_backbone("resnet18", num_classes=2, weights=tmp_path / "missing.pth")


def test_data_config_comes_from_the_backbone():
    lite0 = _classifier()
    assert lite0.data_config.mean == (0.5, 0.5, 0.5)
    assert lite0.data_config.interpolation == "bicubic"
    resnet = _classifier(
        backbone="resnet18", pretrained=False, image_size=160, train_image_size=128
    )
    assert resnet.data_config.mean == pytest.approx((0.485, 0.456, 0.406))
    assert resnet.data_config.input_size == 160 and resnet.data_config.train_size == 128


def test_forward_backward_and_zero_head():
    model = _classifier()
    images = torch.randn(4, 3, 224, 224)
    logits = model(images)
    assert logits.shape == (4, 2)
    assert torch.allclose(logits, torch.zeros_like(logits))  # zero-initialised head
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert model.net.get_classifier().weight.grad.abs().sum() > 0


def test_batchnorm_stays_in_eval_mode_while_training():
    model = _classifier(freeze_batchnorm=True).train()
    norms = [m for m in model.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    model(torch.randn(2, 3, 224, 224) * 3)
    assert torch.equal(norms[0].running_mean, before)
    free = _classifier(freeze_batchnorm=False).train()
    assert all(m.training for m in free.net.modules() if isinstance(m, nn.BatchNorm2d))


def test_frozen_backbone_epochs_train_only_the_head():
    model = _classifier(freeze_backbone_epochs=1, drop_rate=0.5)
    with torch.no_grad():
        model.net.get_classifier().weight.normal_()
    model.train()
    model.on_train_epoch_start()  # epoch 0 without a trainer
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    assert not any(m.training for m in model.net.modules() if isinstance(m, nn.BatchNorm2d))
    images = torch.randn(2, 3, 224, 224)
    assert not torch.equal(model(images), model(images))  # the head's dropout is active
    logits = model(torch.randn(2, 3, 224, 224))
    logits.sum().backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    assert model.net.get_classifier().weight.grad is not None
    model.freeze_backbone_epochs = 0  # as when the next epoch unfreezes it
    model.on_train_epoch_start()
    assert all(p.requires_grad for p in model.backbone_parameters())


def test_optimizer_has_a_slower_backbone_group():
    model = _classifier(backbone_lr_scale=0.1)
    model.scheduler_factory = None
    optimizer = model.configure_optimizers()
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs == {"head": 1e-3, "backbone": pytest.approx(1e-4)}


def test_mixup_and_cutmix_train_on_mixed_images_and_soft_targets(monkeypatch):
    torch.manual_seed(0)
    model = _classifier(mixup_alpha=0.4, cutmix_alpha=1.0).train()
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    seen = {}

    def forward(batch):
        seen["images"] = batch
        return torch.zeros(len(batch), 2, requires_grad=True)

    monkeypatch.setattr(model, "forward", forward)
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    monkeypatch.setattr(model, "log_dict", lambda *a, **k: None)
    loss = model.training_step((images, labels, torch.arange(4)), 0)
    assert not torch.equal(seen["images"], images)  # pairs were blended or patched
    assert torch.isfinite(loss) and loss.item() == pytest.approx(torch.log(torch.tensor(2.0)))
    _, targets = model.mixing(images, labels)
    assert targets.shape == (4, 2) and torch.allclose(targets.sum(-1), torch.ones(4))
    assert ((targets > 0) & (targets < 1)).any()  # soft targets, not one-hot
    assert _classifier().mixing is None  # off by default


def test_l2sp_pulls_the_backbone_towards_its_pretrained_weights(monkeypatch):
    batch = (torch.randn(2, 3, 64, 64), torch.tensor([0, 1]), torch.arange(2))
    losses = {}
    for strength in (0.0, 1.0):
        torch.manual_seed(0)
        model = _classifier(l2sp=strength, drop_rate=0.0).train()
        model.setup("fit")  # takes the starting point, as Lightning does before fitting
        monkeypatch.setattr(model, "log", lambda *a, **k: None)
        monkeypatch.setattr(model, "log_dict", lambda *a, **k: None)
        at_start = model.training_step(batch, 0).item()
        with torch.no_grad():
            model.backbone_parameters()[0].add_(0.1)  # the backbone moves away
        losses[strength] = (at_start, model.training_step(batch, 0).item())
    # At the pretrained weights the penalty is zero; once they move it adds strength/2 x |d|^2.
    assert losses[1.0][0] == pytest.approx(losses[0.0][0], abs=1e-6)
    first = _classifier().backbone_parameters()[0]
    assert losses[1.0][1] - losses[0.0][1] == pytest.approx(0.5 * 0.01 * first.numel(), rel=1e-3)
    model = _classifier(l2sp=1.0, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))
    model.setup("fit")
    assert "_start_point" not in "".join(model.state_dict())  # never saved in checkpoints
    model.scheduler_factory = None
    decay = {g["name"]: g["weight_decay"] for g in model.configure_optimizers().param_groups}
    assert decay["backbone"] == 0.0 and decay["head"] > 0  # no pull towards zero as well


def test_schedules_warm_up_then_decay():
    for factory, peak_step in [(warmup_cosine, 10), (one_cycle, 30)]:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = factory(optimizer, total_steps=100)
        lrs = []
        for _ in range(100):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lrs[0] < 0.2 and max(lrs) == pytest.approx(1.0, abs=0.02)
        assert abs(lrs.index(max(lrs)) - peak_step) <= 1
        assert lrs[-1] < 0.05


def test_checkpoint_loads_without_config(tmp_path: Path):
    import lightning as L

    model = _classifier(class_names=["hot_dog", "not_hot_dog"]).eval()
    with torch.no_grad():
        model.net.get_classifier().weight.normal_()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint[CHECKPOINT_KEY]["class_names"] == ["hot_dog", "not_hot_dog"]
    assert checkpoint[CHECKPOINT_KEY]["data_config"]["mean"] == [0.5, 0.5, 0.5]

    loaded = load_classifier(path)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
    assert loaded.data_config == model.data_config


def test_bad_checkpoints_get_one_sentence(tmp_path: Path):
    with pytest.raises(HotdogError, match="does not exist"):
        load_classifier(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for bad in (garbage, empty):
        with pytest.raises(HotdogError) as caught:
            load_classifier(bad)
        message = str(caught.value)
        assert (
            "not a hotdog checkpoint (it is empty, corrupt or not a PyTorch checkpoint)" in message
        )
        assert "\n" not in message and "file an issue" not in message.lower()
    with pytest.raises(HotdogError, match="is a folder; pass the checkpoint file in it"):
        load_classifier(tmp_path)
