"""Every dataset problem a user can fix is a DatasetError whose message names the culprit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from algm_cli.data import ADE20K, DatasetError, build_dataset

from .fakes import FAKES, H, W, save_image, save_label, write_both

NAMES = sorted(FAKES)


@pytest.fixture(params=NAMES)
def fake(request):
    """Yield each dataset's fake layout in turn."""
    return FAKES[request.param]


def error_of(call) -> str:
    """Return the message of the DatasetError raised by call()."""
    with pytest.raises(DatasetError) as info:
        call()
    return str(info.value)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_unknown_dataset_name_lists_the_known_ones(tmp_path):
    message = error_of(lambda: build_dataset("imagenet", tmp_path, "train"))
    assert "imagenet" in message and "ade20k" in message and "coco_stuff10k" in message


def test_unknown_split(fake, tmp_path):
    write_both(fake, tmp_path)
    message = error_of(lambda: build_dataset(fake.name, tmp_path, "test"))
    assert "'test'" in message and "train" in message and "val" in message


def test_missing_root_names_it_and_prints_the_tree(fake, tmp_path):
    root = tmp_path / "nowhere"
    message = error_of(lambda: build_dataset(fake.name, root, "train"))
    assert f"missing folder {root}" in message
    assert "expected layout" in message and fake.tree_hint in message


def test_missing_split_folder_names_it_and_prints_the_tree(fake, tmp_path):
    fake.write(tmp_path, "train", 2)
    if fake.name == "pascal_context":  # one shared image folder; the split is a file
        missing = tmp_path / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt"
    else:
        missing = fake.paths(tmp_path, "val", 0)[0].parent
        if fake.name == "cityscapes":
            missing = missing.parent  # leftImg8bit/val (the city folder is not required)
    message = error_of(lambda: build_dataset(fake.name, tmp_path, "val"))
    assert str(missing) in message
    assert "expected layout" in message and fake.tree_hint in message


def test_missing_label_folder_is_named(fake, tmp_path):
    write_both(fake, tmp_path)
    label_dir = fake.paths(tmp_path, "train", 0)[1].parent
    shutil.rmtree(label_dir)
    if fake.name == "cityscapes":
        label_dir = label_dir.parent
        shutil.rmtree(label_dir)
    assert str(label_dir) in error_of(lambda: build_dataset(fake.name, tmp_path, "train"))


def test_image_without_label_names_both_files(fake, tmp_path):
    write_both(fake, tmp_path)
    image, label = fake.paths(tmp_path, "train", 1)
    label.unlink()
    message = error_of(lambda: build_dataset(fake.name, tmp_path, "train"))
    assert "has no label" in message and str(image) in message and str(label) in message


def test_label_without_image_names_both_files(fake, tmp_path):
    write_both(fake, tmp_path)
    image, label = fake.paths(tmp_path, "train", 1)
    image.unlink()
    message = error_of(lambda: build_dataset(fake.name, tmp_path, "train"))
    assert "has no image" in message and str(label) in message and str(image) in message


def test_empty_split_names_the_folder(fake, tmp_path):
    write_both(fake, tmp_path)
    if fake.name == "pascal_context":
        split_file = tmp_path / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/train.txt"
        split_file.write_text("\n")
        assert str(split_file) in error_of(lambda: build_dataset(fake.name, tmp_path, "train"))
        return
    image_dir = fake.paths(tmp_path, "train", 0)[0].parent
    if fake.name == "cityscapes":
        image_dir = image_dir.parent
    for i in range(3):
        fake.paths(tmp_path, "train", i)[0].unlink()
    message = error_of(lambda: build_dataset(fake.name, tmp_path, "train"))
    assert "no images" in message and str(image_dir) in message


def test_corrupt_image_names_the_file(fake, tmp_path):
    write_both(fake, tmp_path)
    image, _ = fake.paths(tmp_path, "train", 0)
    image.write_bytes(b"this is not an image")
    ds = build_dataset(fake.name, tmp_path, "train")
    message = error_of(lambda: ds[0])
    assert "cannot read image" in message and str(image) in message


def test_truncated_image_names_the_file(tmp_path):
    fake = FAKES["cityscapes"]
    write_both(fake, tmp_path)
    image, _ = fake.paths(tmp_path, "train", 0)
    image.write_bytes(image.read_bytes()[:200])
    ds = build_dataset(fake.name, tmp_path, "train")
    assert str(image) in error_of(lambda: ds[0])


def test_corrupt_label_names_the_file(tmp_path):
    fake = FAKES["coco_stuff10k"]
    write_both(fake, tmp_path)
    _, label = fake.paths(tmp_path, "train", 2)
    label.write_bytes(b"\x89PNG garbage")
    ds = build_dataset(fake.name, tmp_path, "train")
    message = error_of(lambda: ds[2])
    assert "cannot read label" in message and str(label) in message


def test_label_values_out_of_range_name_file_values_and_range(fake, tmp_path):
    write_both(fake, tmp_path)
    _, label = fake.paths(tmp_path, "train", 0)
    k = fake.num_classes
    raw = np.full((H, W), 1, np.uint8)
    raw[0, 0] = k + 1 if fake.reduce_zero_label else k  # one past the last class
    raw[0, 1] = 254
    save_label(label, raw)
    ds = build_dataset(fake.name, tmp_path, "train")
    message = error_of(lambda: ds[0])
    assert str(label) in message
    assert f"outside 0..{k - 1}" in message
    if fake.reduce_zero_label:
        assert f"values [{k}, 253]" in message  # the offending values after remapping
        assert f"[{k + 1}, 254]" in message  # and as stored in the file
    else:
        assert f"values [{k}, 254]" in message


def test_valid_extreme_label_values_pass(fake, tmp_path):
    write_both(fake, tmp_path)
    raw = np.full((H, W), 255, np.uint8)
    raw[0, 0] = fake.raw_values()[1]
    raw[0, 1] = fake.raw_values()[0]
    save_label(fake.paths(tmp_path, "train", 0)[1], raw)
    label = build_dataset(fake.name, tmp_path, "train")[0]["label"]
    assert label[0, 0] == fake.num_classes - 1 and label[0, 1] == 0 and label[5, 5] == 255


def test_image_and_label_of_different_sizes_name_both(tmp_path):
    fake = FAKES["ade20k"]
    write_both(fake, tmp_path)
    image, label = fake.paths(tmp_path, "train", 0)
    save_label(label, np.ones((H + 2, W), np.uint8))
    message = error_of(lambda: build_dataset("ade20k", tmp_path, "train")[0])
    assert str(image) in message and str(label) in message


def test_colour_label_is_rejected(tmp_path):
    fake = FAKES["ade20k"]
    write_both(fake, tmp_path)
    _, label = fake.paths(tmp_path, "train", 0)
    save_image(label, np.ones((H, W, 3), np.uint8))
    message = error_of(lambda: build_dataset("ade20k", tmp_path, "train")[0])
    assert str(label) in message and "single-channel" in message


def test_two_images_with_one_stem_are_named(tmp_path):
    fake = FAKES["ade20k"]
    write_both(fake, tmp_path)
    image, _ = fake.paths(tmp_path, "train", 0)
    save_image(image.with_suffix(".png"), np.zeros((H, W, 3), np.uint8))
    message = error_of(lambda: build_dataset("ade20k", tmp_path, "train"))
    assert str(image) in message and str(image.with_suffix(".png")) in message


def test_cityscapes_without_train_ids_suggests_the_script(tmp_path):
    fake = FAKES["cityscapes"]
    write_both(fake, tmp_path)
    for i in range(3):
        _, label = fake.paths(tmp_path, "train", i)
        label.rename(label.with_name(label.name.replace("labelTrainIds", "labelIds")))
    message = error_of(lambda: build_dataset("cityscapes", tmp_path, "train"))
    assert "csCreateTrainIdLabelImgs" in message


def test_coco_with_raw_mat_annotations_suggests_the_converter(tmp_path):
    fake = FAKES["coco_stuff10k"]
    write_both(fake, tmp_path)
    for i in range(3):
        _, label = fake.paths(tmp_path, "train", i)
        label.unlink()
    (label.parent / "COCO_train2014_000000000000.mat").write_bytes(b"")
    message = error_of(lambda: build_dataset("coco_stuff10k", tmp_path, "train"))
    assert "coco_stuff10k.py" in message and str(label.parent) in message


def test_bad_class_overrides(tmp_path):
    write_both(FAKES["ade20k"], tmp_path)
    assert "2 class names" in error_of(lambda: ADE20K(tmp_path, "train", num_classes=3,
                                                        class_names=["a", "b"]))
    assert "num_classes" in error_of(lambda: ADE20K(tmp_path, "train", num_classes=255))
    assert "palette" in error_of(lambda: ADE20K(tmp_path, "train", num_classes=2,
                                                  palette=[[0, 0, 0]]))


def test_messages_are_single_errors_without_chained_tracebacks(tmp_path):
    fake = FAKES["ade20k"]
    write_both(fake, tmp_path)
    fake.paths(tmp_path, "train", 0)[0].write_bytes(b"nope")
    ds = build_dataset("ade20k", tmp_path, "train")
    with pytest.raises(DatasetError) as info:
        ds[0]
    assert info.value.__cause__ is None and info.value.__suppress_context__
