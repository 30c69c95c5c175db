"""Each loader finds its pairs in the real layout and remaps labels to 0..K-1 / 255."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algm_cli.data import ADE20K, DATASETS, SegmentationFolder, build_dataset
from algm_cli.data.classes import CITYSCAPES_COLOURS

from .fakes import FAKES, H, W, save_image, save_label, write_both

NAMES = sorted(FAKES)


@pytest.fixture(params=NAMES)
def fake(request):
    """Yield each dataset's fake layout in turn."""
    return FAKES[request.param]


def test_registry_names_every_dataset():
    assert set(DATASETS) == {"ade20k", "cityscapes", "pascal_context", "coco_stuff10k"}
    assert all(issubclass(cls, SegmentationFolder) for cls in DATASETS.values())


def test_loader_finds_all_pairs_sorted(fake, tmp_path):
    write_both(fake, tmp_path, train=4, val=2)
    for split, count in (("train", 4), ("val", 2)):
        ds = build_dataset(fake.name, tmp_path, split)
        expected = sorted(fake.paths(tmp_path, split, i) for i in range(count))
        assert ds.pairs == expected
        assert len(ds) == count


def test_sample_types_shapes_and_attributes(fake, tmp_path):
    write_both(fake, tmp_path)
    ds = build_dataset(fake.name, tmp_path, "train")
    sample = ds[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, H, W)
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (H, W)
    assert isinstance(sample["name"], str) and sample["name"]
    assert ds.num_classes == fake.num_classes == len(ds.class_names)
    assert ds.ignore_index == 255
    assert ds.palette.dtype == torch.uint8 and ds.palette.shape == (fake.num_classes, 3)


def test_image_pixels_come_back_as_rgb_channels(fake, tmp_path):
    """A flat (10, 120, 240) image reads as R=10, G=120, B=240 (JPEG within 3 levels)."""
    write_both(fake, tmp_path)
    image_path, _ = fake.paths(tmp_path, "train", 0)
    save_image(image_path, np.broadcast_to(np.uint8([10, 120, 240]), (H, W, 3)).copy())
    image = build_dataset(fake.name, tmp_path, "train")[0]["image"]
    want = torch.tensor([10, 120, 240]).view(3, 1, 1).expand(3, H, W)
    assert (image.int() - want).abs().max() <= (0 if image_path.suffix == ".png" else 3)


@pytest.mark.parametrize("mode", ["L", "P"])
def test_label_remapping_on_hand_made_pixels(fake, tmp_path, mode):
    """reduce_zero_label: 0 -> 255, k -> k-1, 255 stays; otherwise values as stored."""
    write_both(fake, tmp_path)
    k = fake.num_classes
    if fake.reduce_zero_label:
        raw_row, want_row = [0, 1, 2, k, 255], [255, 0, 1, k - 1, 255]
    else:
        raw_row, want_row = [0, 1, 2, k - 1, 255], [0, 1, 2, k - 1, 255]
    raw = np.zeros((H, W), np.uint8)
    want = np.zeros((H, W), np.int64)
    raw[:, :5], want[:, :5] = raw_row, want_row
    raw[:, 5:] = raw_row[1]
    want[:, 5:] = want_row[1]
    save_label(fake.paths(tmp_path, "train", 0)[1], raw, mode=mode)
    label = build_dataset(fake.name, tmp_path, "train")[0]["label"]
    assert torch.equal(label, torch.from_numpy(want))


def test_samples_are_read_the_same_twice(fake, tmp_path):
    write_both(fake, tmp_path)
    ds = build_dataset(fake.name, tmp_path, "val")
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


@pytest.mark.parametrize("name, expected", [
    ("ade20k", "ADE_training_00000000"),
    ("cityscapes", "aachen_000000_000019"),
    ("pascal_context", "2008_000000"),
    ("coco_stuff10k", "COCO_train2014_000000000000"),
])
def test_sample_name_is_the_image_stem_without_layout_suffix(tmp_path, name, expected):
    write_both(FAKES[name], tmp_path)
    assert build_dataset(name, tmp_path, "train")[0]["name"] == expected


def test_ade_root_may_point_at_the_challenge_folder(tmp_path):
    write_both(FAKES["ade20k"], tmp_path)
    a = ADE20K(tmp_path, "val")
    b = ADE20K(tmp_path / "ADEChallengeData2016", "val")
    assert a.pairs == b.pairs and len(b) == 2


def test_pascal_root_may_point_at_voc2010(tmp_path):
    write_both(FAKES["pascal_context"], tmp_path)
    a = build_dataset("pascal_context", tmp_path, "train")
    b = build_dataset("pascal_context", tmp_path / "VOCdevkit" / "VOC2010", "train")
    assert a.pairs == b.pairs


def test_pascal_uses_only_the_ids_of_the_split_file(tmp_path):
    fake = FAKES["pascal_context"]
    write_both(fake, tmp_path, train=3, val=2)  # both splits share the image/label folders
    ds = build_dataset("pascal_context", tmp_path, "val")
    assert [p[0].stem for p in ds.pairs] == ["2008_005000", "2008_005001"]


def test_cityscapes_ignores_other_gtfine_files(tmp_path):
    fake = FAKES["cityscapes"]
    write_both(fake, tmp_path)
    _, label = fake.paths(tmp_path, "train", 0)
    for extra in ("_gtFine_labelIds.png", "_gtFine_color.png", "_gtFine_instanceIds.png"):
        save_label(label.with_name(label.name.replace("_gtFine_labelTrainIds.png", extra)),
                   np.zeros((H, W)))
    assert len(build_dataset("cityscapes", tmp_path, "train")) == 3


def test_ade_layout_with_custom_classes_and_png_images(tmp_path):
    """The synthetic dataset: ADE layout, .png images, its own class count and names."""
    base = tmp_path / "ADEChallengeData2016"
    raw = np.full((H, W), 8, np.uint8)
    raw[0, 0] = 0
    for split in ("training", "validation"):
        save_image(base / "images" / split / "s.png", np.zeros((H, W, 3), np.uint8))
        save_label(base / "annotations" / split / "s.png", raw)
    names = ["a", "b", "c", "d", "e", "f", "g", "h"]
    ds = ADE20K(tmp_path, "train", num_classes=8, class_names=names)
    assert ds.num_classes == 8 and ds.class_names == names and ds.palette.shape == (8, 3)
    label = ds[0]["label"]
    assert label[0, 0] == 255 and label[1, 1] == 7
    assert ADE20K(tmp_path, "val", class_names=names).num_classes == 8
    assert ADE20K(tmp_path, "val", num_classes=8).class_names[7] == "class_7"


def test_official_class_names_and_palettes(tmp_path):
    write_both(FAKES["cityscapes"], tmp_path / "cs")
    write_both(FAKES["ade20k"], tmp_path / "ade")
    cs = build_dataset("cityscapes", tmp_path / "cs", "train")
    assert cs.class_names[0] == "road" and cs.class_names[-1] == "bicycle"
    assert cs.palette.tolist() == [list(c) for c in CITYSCAPES_COLOURS]
    ade = build_dataset("ade20k", tmp_path / "ade", "train")
    assert ade.class_names[:3] == ["wall", "building", "sky"] and ade.class_names[-1] == "flag"


def test_dataset_works_with_a_dataloader(tmp_path):
    write_both(FAKES["ade20k"], tmp_path)
    ds = build_dataset("ade20k", tmp_path, "train")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, H, W) and batch["label"].shape == (3, H, W)


def test_coco_stuff_can_read_zero_based_train_ids(tmp_path):
    """mmseg's converter stores class k as k+1 (default); other conversions store 0..170 / 255."""
    fake = FAKES["coco_stuff10k"]
    write_both(fake, tmp_path)
    raw = np.full((H, W), 255, np.uint8)
    raw[:, :3] = [0, 1, 170]
    save_label(fake.paths(tmp_path, "train", 0)[1], raw)
    default = build_dataset("coco_stuff10k", tmp_path, "train")[0]["label"]
    assert default[0, :4].tolist() == [255, 0, 169, 255]
    zero_based = DATASETS["coco_stuff10k"](tmp_path, "train", reduce_zero_label=False)
    assert zero_based[0]["label"][0, :4].tolist() == [0, 1, 170, 255]
