"""HotdogDataModule: layout, split, class order, transforms, cache and every kind of bad file."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from hotdog.core.dataset import DatasetError, stratified_split
from hotdog.core.preprocessing import DataConfig
from hotdog.data import HotdogDataModule
from hotdog.data.datamodule import PictureDataset
from hotdog.data.transforms import eval_transform, resize_short_side
from tests.conftest import CLASSES, SAMPLE, copy_sample

LITE0 = DataConfig(input_size=224, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)


def _datamodule(root: Path, **kwargs) -> HotdogDataModule:
    kwargs.setdefault("cache_dir", None)
    return HotdogDataModule(root=root, data_config=LITE0, **kwargs)


def test_sample_split_sizes_and_class_order():
    dm = _datamodule(SAMPLE)
    dm.setup("fit")
    assert len(dm.train_set) == 32 and len(dm.val_set) == 8 and len(dm.test_set) == 40
    assert Counter(dm.val_set.labels) == {0: 4, 1: 4}
    assert Counter(dm.train_set.labels) == {0: 16, 1: 16}
    for path, label in zip(dm.files["train"], dm.train_set.labels, strict=True):
        assert path.parent.name == CLASSES[label]
    assert not set(dm.files["train"]) & set(dm.files["val"])


def test_split_is_seeded():
    labels = [0] * 50 + [1] * 30
    assert stratified_split(labels, 0.2, seed=1) == stratified_split(labels, 0.2, seed=1)
    assert stratified_split(labels, 0.2, seed=1) != stratified_split(labels, 0.2, seed=2)
    train, val = stratified_split(labels, 0.2, seed=1)
    assert Counter(labels[i] for i in val) == {0: 10, 1: 6}
    assert sorted(train + val) == list(range(80))


def test_batches_have_model_shapes_and_normalisation():
    dm = _datamodule(SAMPLE, batch_size=8)
    dm.setup("fit")
    images, labels, indices = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 224, 224) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and indices.shape == (8,)
    assert images.min() >= -1.0 and images.max() <= 1.0  # mean = std = 0.5
    val_images, *_ = next(iter(dm.val_dataloader()))
    assert val_images.shape[1:] == (3, 224, 224)


def test_evaluation_is_deterministic_and_training_is_augmented():
    dm = _datamodule(SAMPLE)
    dm.setup("fit")
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])
    assert not torch.equal(dm.train_set[0][0], dm.train_set[0][0])


def test_trivial_augment_and_random_erasing_are_training_options():
    from hotdog.data.transforms import Augmentation, train_transform

    torch.manual_seed(0)
    picture = torch.randint(0, 256, (3, 256, 300), dtype=torch.uint8)
    erased = train_transform(LITE0, Augmentation(random_erasing=1.0, color_jitter=0))(picture)
    assert erased.shape == (3, 224, 224)
    assert (erased == 0).all(dim=0).sum() > 224 * 224 * 0.015  # a rectangle set to the mean
    plain = train_transform(LITE0, Augmentation(color_jitter=0))(picture)
    assert (plain == 0).all(dim=0).sum() < 50
    trivial = train_transform(LITE0, Augmentation(trivial_augment=True, hflip=False))
    assert any("TrivialAugmentWide" in type(step).__name__ for step in trivial.transforms)
    torch.manual_seed(0)
    outputs = [trivial(picture) for _ in range(4)]
    assert all(o.shape == (3, 224, 224) and torch.isfinite(o).all() for o in outputs)


def test_low_resolution_blurs_a_crop_as_a_small_photo_would_be():
    from hotdog.data.transforms import RandomLowResolution

    stripes = torch.zeros(3, 96, 96, dtype=torch.uint8)
    stripes[:, :, ::2] = 255  # the finest detail a picture can hold

    def detail(picture: torch.Tensor) -> float:
        return (picture[:, :, 1:].float() - picture[:, :, :-1].float()).abs().mean().item()

    torch.manual_seed(0)
    for _ in range(5):  # a new shrink factor (35-80 %) each time
        blurred = RandomLowResolution(p=1.0)(stripes)
        assert blurred.shape == stripes.shape and blurred.dtype == torch.uint8
        assert detail(blurred) < 0.2 * detail(stripes)
    assert torch.equal(RandomLowResolution(p=0.0)(stripes), stripes)


def test_scene_paste_puts_a_shrunken_crop_into_a_background_class_photo():
    from hotdog.data.transforms import ScenePaste

    torch.manual_seed(0)
    foreground, background = torch.ones(3, 64, 64), -torch.ones(3, 64, 64)
    for _ in range(5):  # a new size (30-60 % of the side) and place each time
        scene = ScenePaste(p=1.0)(foreground, background)
        pasted = (scene > 0).all(dim=0)
        rows, cols = pasted.any(dim=1).sum().item(), pasted.any(dim=0).sum().item()
        assert 0.3 * 64 - 1 <= rows <= 0.6 * 64 + 1 and rows == cols
        assert pasted.sum().item() == rows * cols  # one solid rectangle
    assert torch.equal(background, -torch.ones(3, 64, 64))  # the background photo is untouched

    # In a dataset: any item may be pasted into a background-class photo, and keeps its label.
    hot_dog, not_hot_dog = CLASSES.index("hot_dog"), CLASSES.index("not_hot_dog")
    pictures = [torch.full((3, 32, 32), 200.0), torch.full((3, 32, 32), 50.0)]
    dataset = PictureDataset(
        pictures, [hot_dog, not_hot_dog], lambda x: x.clone(), ScenePaste(p=1.0), not_hot_dog
    )
    assert dataset.backgrounds == [1]
    image, label, index = dataset[0]
    assert (label, index) == (hot_dog, 0)
    assert (image == 200).any() and (image == 50).any()  # the hot dog, small, in the other photo

    # Wired from the config; off by default.
    dm = _datamodule(SAMPLE, augmentation={"scene_paste": 0.5})
    dm.setup("fit")
    assert dm.train_set.paste.p == 0.5
    assert {dm.train_set.labels[i] for i in dm.train_set.backgrounds} == {not_hot_dog}
    assert dm.val_set.paste is None
    plain = _datamodule(SAMPLE)
    plain.setup("fit")
    assert plain.train_set.paste is None


def test_eval_transform_keeps_aspect_ratio():
    # A 2:1 picture with a centred circle-free pattern: a square in the middle must stay square.
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (512, 256), "white")
    ImageDraw.Draw(picture).rectangle((206, 78, 306, 178), fill="black")  # 100 x 100 square
    tensor = eval_transform(LITE0)(resize_short_side(picture, LITE0))
    dark = tensor[0] < 0
    rows, cols = dark.any(dim=1).sum().item(), dark.any(dim=0).sum().item()
    assert abs(rows - cols) <= 2, (rows, cols)


def test_cache_is_reused_and_keyed_by_content(tmp_path: Path, monkeypatch):
    data = copy_sample(tmp_path / "data", per_class=2)
    cache = tmp_path / "cache"
    first = _datamodule(data, cache_dir=cache, val_fraction=0.5)
    first.setup("fit")
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == 8

    # A second setup decodes nothing: every picture comes from the cache, renamed files too.
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    photo = next((data / "train" / "hot_dog").iterdir())
    photo.rename(photo.with_name("renamed.jpg"))
    import hotdog.data.cache

    monkeypatch.setattr(hotdog.data.cache, "decode_image", no_decoding)
    second = _datamodule(data, cache_dir=cache, val_fraction=0.5)
    second.setup("fit")
    assert sorted(cache.rglob("*.npy")) == entries
    assert torch.equal(first.test_set.pictures[0], second.test_set.pictures[0])
    monkeypatch.undo()
    # An edited file is a new entry.
    edited = next((data / "test" / "hot_dog").iterdir())
    from PIL import Image

    with Image.open(edited) as picture:
        picture.load()
        picture.save(edited, quality=50)
    _datamodule(data, cache_dir=cache, val_fraction=0.5).setup("test")
    assert len(sorted(cache.rglob("*.npy"))) == 9
    # Another input size is another cache entry, not a wrong hit.
    bigger = HotdogDataModule(
        data, DataConfig(input_size=256, mean=(0.5,) * 3, std=(0.5,) * 3), cache_dir=cache
    )
    bigger.setup("test")
    assert len(sorted(cache.rglob("*.npy"))) == 13
    assert min(bigger.test_set.pictures[0].shape[1:]) == 292


def test_greyscale_rgba_and_cmyk_files_load(small_dataset: Path):
    from PIL import Image

    folder = small_dataset / "train" / "hot_dog"
    source = Image.open(sorted(folder.glob("*.jpg"))[0])
    source.convert("L").save(folder / "grey.jpg")
    source.convert("RGBA").save(folder / "alpha.png")
    source.convert("CMYK").save(folder / "cmyk.jpg")
    dm = _datamodule(small_dataset, val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.train_set) == 11
    assert all(p.shape[0] == 3 for p in dm.train_set.pictures)


def test_every_bad_file_is_named(small_dataset: Path):
    good = sorted((small_dataset / "train" / "hot_dog").glob("*.jpg"))[0].read_bytes()
    bad = {
        small_dataset / "train" / "hot_dog" / "truncated.jpg": good[:2000],
        small_dataset / "train" / "not_hot_dog" / "notes.txt": b"shopping list",
        small_dataset / "test" / "hot_dog" / "zero.jpg": b"",
    }
    for path, content in bad.items():
        path.write_bytes(content)
    dm = _datamodule(small_dataset)
    with pytest.raises(DatasetError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert "skip_corrupt" in message
    # Train files are named together; the test split is checked in the same setup.
    assert "truncated.jpg" in message and "notes.txt" in message
    dm_test = _datamodule(small_dataset)
    with pytest.raises(DatasetError, match=r"zero\.jpg"):
        dm_test.setup("test")


def test_skip_corrupt_skips_and_lists(small_dataset: Path, caplog):
    (small_dataset / "train" / "hot_dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    dm = _datamodule(small_dataset, skip_corrupt=True, val_fraction=0.25)
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert [path.name for path, _ in dm.skipped] == ["broken.jpg"]
    assert "broken.jpg" in caplog.text
    assert len(dm.train_set) + len(dm.val_set) == 8


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: shutil.rmtree(root), "does not exist"),
        (lambda root: shutil.rmtree(root / "test"), r"test is missing"),
        (lambda root: shutil.rmtree(root / "train" / "hot_dog"), "Class folders"),
        (lambda root: (root / "train" / "pizza").mkdir(), "pizza"),
        (
            lambda root: [p.unlink() for p in (root / "train" / "not_hot_dog").iterdir()],
            "is empty",
        ),
    ],
    ids=["no-root", "no-split", "no-class", "extra-class", "empty-class"],
)
def test_wrong_layout_gets_one_clear_sentence(small_dataset: Path, damage, message):
    damage(small_dataset)
    with pytest.raises(DatasetError, match=message) as caught:
        _datamodule(small_dataset).setup("fit")
    assert "\n" not in str(caught.value)


def test_training_crops_can_be_smaller_than_evaluation_images():
    config = DataConfig(input_size=256, train_input_size=192, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert DataConfig.from_dict(config.to_dict()) == config
    dm = HotdogDataModule(SAMPLE, config, cache_dir=None, batch_size=4, eval_batch_size=4)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape[-2:] == (192, 192)
    assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (256, 256)
