"""Benchmark: recipe variants measured on the Kaggle test split and the development sets.

    python benchmarks/generalisation_variants.py --checkpoint RUN/checkpoints/best.ckpt

Frozen-feature variants cost seconds once the pooled features of each model are cached
(``--cache``, one file per model, resolution and set), so they are measured here rather than by
fine-tuning runs:
- ``fine-tuned``: the checkpoint (the default recipe), single view;
- ``linear probe``: logistic regression on the frozen ImageNet features of the same backbone;
- ``ImageNet 934``: the ImageNet head's "hotdog" probability, threshold fitted on the train part
  (the trap: ImageNet photos, hence ``hotdog-ood``, are what that head was trained on);
- ``probe + ImageNet logits``: the probe given the 1000 ImageNet logits too (leans on the head);
- ``ensemble``: fine-tuned and probe probabilities averaged;
- ``WiSE-FT a``: the weights ``a * fine-tuned + (1 - a) * (pretrained backbone + probe head)``;
- ``probe, 224+320``: the probe averaged over two test resolutions.

Every choice (the probe's L2 strength, ensemble weight, WiSE-FT mix) is made on the validation
split of the Kaggle train folder; the development sets are only evaluated. Test-time flips are
off for every variant, so the rows compare like with like.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from hotdog.data import HotdogDataModule
from hotdog.data.datamodule import PictureDataset
from hotdog.data.transforms import eval_transform
from hotdog.models import HotdogClassifier, load_classifier
from hotdog.models.backbones import bundled_weights_path
from hotdog.report import accuracy_per_category, expected_calibration_error

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("train", "val", "test", "stock", "ood")
EVALUATED = ("val", "stock", "ood", "test")
OOD_FILES: dict[str, list[Path]] = {}  # file names of the development sets (categories)


def load_sets(model: HotdogClassifier, data: Path, image_size: int) -> dict[str, PictureDataset]:
    """The Kaggle train part, validation split and test split, and both development sets."""
    config = model.data_config
    if image_size != config.input_size:
        from dataclasses import replace

        config = replace(config, input_size=image_size)
    kaggle = HotdogDataModule(data, config, cache_dir="~/.cache/hotdog")
    kaggle.setup("fit")
    sets = {"train": kaggle.train_set, "val": kaggle.val_set, "test": kaggle.test_set}
    sets["train"] = PictureDataset(
        sets["train"].pictures, sets["train"].labels, eval_transform(config)
    )
    for name in ("stock", "ood"):
        extra = kaggle.for_root(SHARED / f"hotdog-{name}")
        extra.setup("test")
        sets[name] = extra.test_set
        OOD_FILES[name] = extra.files["test"]
    return sets  # type: ignore[return-value]


@torch.inference_mode()
def pooled_features(net: torch.nn.Module, dataset: PictureDataset) -> torch.Tensor:
    net.eval()
    out = []
    for start in range(0, len(dataset), 32):
        batch = torch.stack([dataset[i][0] for i in range(start, min(start + 32, len(dataset)))])
        features = net.forward_features(batch.contiguous(memory_format=torch.channels_last))
        out.append(net.forward_head(features, pre_logits=True))
    return torch.cat(out)


def cached_features(
    cache: Path, key: str, net: torch.nn.Module, sets: dict[str, PictureDataset], names
) -> dict[str, torch.Tensor]:
    result = {}
    for name in names:
        path = cache / f"{key}-{name}.pt"
        if not path.is_file():
            start = time.perf_counter()
            torch.save(pooled_features(net, sets[name]), path)
            print(f"features {key}/{name}: {time.perf_counter() - start:.0f} s", flush=True)
        result[name] = torch.load(path)
    return result


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.nn.Linear:
    """Two-class softmax regression with L2, fitted by L-BFGS on standardised features."""
    head = torch.nn.Linear(x.shape[1], 2)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x), y) + l2 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def figures(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    predictions = probabilities.argmax(-1)
    row = {
        "accuracy": round((predictions == labels).float().mean().item(), 4),
        "correct": f"{int((predictions == labels).sum())}/{len(labels)}",
        "ece": round(expected_calibration_error(probabilities, labels), 4),
        "log_loss": round(F.nll_loss(probabilities.clamp_min(1e-7).log(), labels).item(), 4),
    }
    for label, name in enumerate(("hot_dog", "not_hot_dog")):
        members = labels == label
        row[f"recall_{name}"] = f"{int((predictions[members] == label).sum())}/{int(members.sum())}"
    return row


def combine_with_fine_tuned(
    tuned, pretrained, head, sets, labels, args, size, record, probabilities
):
    """The ensemble and WiSE-FT rows (need the fine-tuned checkpoint)."""
    tag = args.checkpoint.resolve().parent.parent.name
    # Ensemble weight chosen on validation log-loss.
    best = None
    for weight in (0.25, 0.5, 0.75):
        mixed = {
            n: weight * probabilities["fine-tuned"][n]
            + (1 - weight) * probabilities["linear probe"][n]
            for n in EVALUATED
        }
        loss = F.nll_loss(mixed["val"].log(), labels["val"]).item()
        if best is None or loss < best[0]:
            best = (loss, weight, mixed)
    record(f"ensemble (fine-tuned weight {best[1]})", best[2])  # type: ignore[index]

    for alpha in args.wise:
        state_ft = tuned.net.state_dict()
        state_0 = pretrained.net.state_dict()
        classifier = pretrained.net.pretrained_cfg.get("classifier", "classifier")
        state_0[f"{classifier}.weight"] = head.weight.detach()
        state_0[f"{classifier}.bias"] = head.bias.detach()
        mixed_state = {
            k: (alpha * v.float() + (1 - alpha) * state_0[k].float()).to(v.dtype)
            if v.is_floating_point()
            else v
            for k, v in state_ft.items()
        }
        wise = HotdogClassifier(backbone=tuned.hparams.backbone, image_size=size, pretrained=False)
        wise.net.load_state_dict(mixed_state)
        feats = cached_features(args.cache, f"{tag}-wise{alpha}-{size}", wise.net, sets, EVALUATED)
        with torch.no_grad():
            fc = wise.net.get_classifier()
            record(
                f"WiSE-FT {alpha}",
                {n: F.linear(feats[n], fc.weight, fc.bias).softmax(-1) for n in EVALUATED},
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="a default-recipe run; without it, frozen variants only"
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite2")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--data", type=Path, default=SHARED / "hotdog")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "benchmark" / "features")
    parser.add_argument("--wise", type=float, nargs="*", default=[0.5])
    parser.add_argument("--multiscale", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "benchmark" / "variants")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(True)

    tuned = load_classifier(args.checkpoint) if args.checkpoint else None
    backbone = tuned.hparams.backbone if tuned else args.backbone
    size = tuned.data_config.input_size if tuned else args.image_size
    pretrained = HotdogClassifier(backbone=backbone, image_size=size)
    sets = load_sets(pretrained, args.data, size)
    labels = {name: torch.tensor(sets[name].labels) for name in SETS}
    base = cached_features(args.cache, f"pretrained-{size}", pretrained.net, sets, SETS)

    source = torch.load(bundled_weights_path(backbone), weights_only=True)
    imagenet = torch.nn.Linear(source["_fc.weight"].shape[1], 1000)
    imagenet.load_state_dict({"weight": source["_fc.weight"], "bias": source["_fc.bias"]})

    rows: dict[str, dict[str, dict]] = {}
    probabilities: dict[str, dict[str, torch.Tensor]] = {}

    def record(variant: str, probs: dict[str, torch.Tensor], seconds: float | None = None) -> None:
        probabilities[variant] = probs
        rows[variant] = {name: figures(probs[name], labels[name]) for name in EVALUATED}
        categories = accuracy_per_category(OOD_FILES["ood"], probs["ood"].argmax(-1), labels["ood"])
        rows[variant]["ood"]["per_category"] = {  # type: ignore[index]
            name: f"{row['correct']}/{row['images']}" for name, row in (categories or {}).items()
        }
        rows[variant]["fit_seconds"] = None if seconds is None else round(seconds, 1)  # type: ignore[assignment]
        print(
            variant,
            json.dumps({k: v["accuracy"] for k, v in rows[variant].items() if isinstance(v, dict)}),
            flush=True,
        )

    if tuned is not None:
        tag = args.checkpoint.resolve().parent.parent.name
        fine = cached_features(args.cache, f"{tag}-{size}", tuned.net, sets, EVALUATED)
        fc = tuned.net.get_classifier()
        with torch.no_grad():
            probs = {n: F.linear(fine[n], fc.weight, fc.bias).softmax(-1) for n in EVALUATED}
        record("fine-tuned", probs)

    def probe(features: dict[str, torch.Tensor]) -> tuple[torch.nn.Linear, float, float]:
        mean = features["train"].mean(0)
        std = features["train"].std(0) + 1e-6
        best = None
        start = time.perf_counter()
        for l2 in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
            head = fit_logistic((features["train"] - mean) / std, labels["train"], l2)
            with torch.no_grad():
                val = F.cross_entropy(head((features["val"] - mean) / std), labels["val"]).item()
            if best is None or val < best[0]:
                best = (val, l2, head)
        seconds = time.perf_counter() - start
        _, l2, head = best  # type: ignore[misc]
        # Fold the standardisation into the layer, so it applies to raw features.
        folded = torch.nn.Linear(head.in_features, 2)
        with torch.no_grad():
            folded.weight.copy_(head.weight / std)
            folded.bias.copy_(head.bias - (head.weight / std) @ mean)
        return folded, l2, seconds

    head, l2, seconds = probe(base)
    with torch.no_grad():
        record("linear probe", {n: head(base[n]).softmax(-1) for n in SETS}, seconds)
    print("probe l2", l2)

    with torch.no_grad():
        p934 = {n: imagenet(base[n]).softmax(-1)[:, 934] for n in SETS}
        candidates = torch.linspace(0, 1, 1001)
        train_hot = labels["train"] == 0
        accuracy = [((p934["train"] >= t) == train_hot).float().mean() for t in candidates]
        threshold = candidates[int(torch.stack(accuracy).argmax())].item()
        # As two-class probabilities: p(hot dog) = 0.5 at the threshold, monotone in p934.
        zero_shot = {}
        for n in SETS:
            logit = torch.logit(p934[n].clamp(1e-6, 1 - 1e-6)) - torch.logit(
                torch.tensor(threshold)
            )
            hot = torch.sigmoid(logit)
            zero_shot[n] = torch.stack([hot, 1 - hot], -1)
        record("ImageNet 934 (zero-shot)", zero_shot)

        with_logits = {n: torch.cat([base[n], imagenet(base[n])], -1) for n in SETS}
    head_trap, _, seconds = probe(with_logits)
    with torch.no_grad():
        record(
            "probe + ImageNet logits",
            {n: head_trap(with_logits[n]).softmax(-1) for n in SETS},
            seconds,
        )

    if tuned is not None:
        combine_with_fine_tuned(
            tuned, pretrained, head, sets, labels, args, size, record, probabilities
        )
    if args.multiscale:
        small = load_sets(pretrained, args.data, 224)
        base224 = cached_features(args.cache, "pretrained-224", pretrained.net, small, EVALUATED)
        if tuned is not None:
            tag = args.checkpoint.resolve().parent.parent.name
            fine224 = cached_features(args.cache, f"{tag}-224", tuned.net, small, EVALUATED)
            fc = tuned.net.get_classifier()
            with torch.no_grad():
                record(
                    "fine-tuned, 224+320",
                    {
                        n: (
                            probabilities["fine-tuned"][n]
                            + F.linear(fine224[n], fc.weight, fc.bias).softmax(-1)
                        )
                        / 2
                        for n in EVALUATED
                    },
                )
        with torch.no_grad():
            record("linear probe at 224", {n: head(base224[n]).softmax(-1) for n in EVALUATED})
            record(
                "linear probe, 224+320",
                {
                    n: (head(base[n]).softmax(-1) + head(base224[n]).softmax(-1)) / 2
                    for n in EVALUATED
                },
            )

    (args.output / "variants.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = [
        "variant",
        "Kaggle test",
        "stock",
        "stock recall hd / not",
        "OOD",
        "OOD recall hd / not",
        "ECE test / stock / OOD",
        "val",
        "fit s",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for variant, row in rows.items():
        test, stock, ood = row["test"], row["stock"], row["ood"]
        seconds = row["fit_seconds"]
        cells = [
            variant,
            f"{test['accuracy']:.1%} ({test['correct']})",
            f"{stock['accuracy']:.1%} ({stock['correct']})",
            f"{stock['recall_hot_dog']} / {stock['recall_not_hot_dog']}",
            f"{ood['accuracy']:.1%} ({ood['correct']})",
            f"{ood['recall_hot_dog']} / {ood['recall_not_hot_dog']}",
            f"{test['ece']:.3f} / {stock['ece']:.3f} / {ood['ece']:.3f}",
            f"{row['val']['accuracy']:.1%}",
            "" if seconds is None else str(seconds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.output / "variants.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
