"""Pose data: COCO keypoints crops (bad annotations skipped and counted), synthetic figures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from algm_cli.data import DatasetError
from algm_cli.data.pose import CocoKeypoints, SyntheticPose, crop_person


def test_crop_maps_keypoints_and_box_into_the_crop():
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    image[:, 40:60, 90:110] = 255  # a white square around (100, 50)
    kps = np.array([[100.0, 50.0, 2], [0.0, 0.0, 0]])
    sample = crop_person(image, kps, np.array([80.0, 30.0, 40.0, 40.0]), size=50)
    # side = 1.25 * 40 = 50 -> scale 1; crop origin (75, 25)
    assert sample["keypoints"].tolist() == [[25.0, 25.0, 2.0], [0.0, 0.0, 0.0]]
    assert sample["bbox"].tolist() == [5.0, 5.0, 40.0, 40.0]
    assert sample["area"] == pytest.approx(1600.0)
    assert sample["image"][0, 25, 25] == 255 and sample["image"][0, 2, 2] == 0


def _coco(tmp_path, annotations):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(tmp_path / "val2017" / "a.jpg")
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 60}],
            "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(data))


def test_coco_loader_skips_and_counts_bad_annotations(tmp_path):
    good = [10, 10, 2] + [0, 0, 0] * 16
    _coco(tmp_path, [
        {"id": 1, "image_id": 1, "bbox": [5, 5, 20, 30], "keypoints": good, "num_keypoints": 1},
        {"id": 2, "image_id": 1, "bbox": [5, 5, 20, 30], "keypoints": [1, 2], "num_keypoints": 1},
        {"id": 3, "image_id": 1, "bbox": [500, 5, 20, 30], "keypoints": good, "num_keypoints": 1},
        {"id": 4, "image_id": 1, "bbox": [5, 5, 20, 30], "keypoints": good, "num_keypoints": 1,
         "iscrowd": 1},
        {"id": 5, "image_id": 1, "bbox": [5, 5, 20, 30], "keypoints": [0] * 51, "num_keypoints": 0},
    ])
    with pytest.warns(UserWarning, match="skipped 2 bad person annotations"):
        data = CocoKeypoints(tmp_path, "val2017", size=32)
    assert len(data) == 1 and data.skipped == 2
    sample = data[0]
    assert sample["image"].shape == (3, 32, 32) and sample["keypoints"].shape == (17, 3)


def test_coco_loader_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="person_keypoints_val2017.json"):
        CocoKeypoints(tmp_path, "val2017", size=32)


def test_synthetic_pose_is_deterministic_with_joints_inside_the_box():
    data = SyntheticPose(4, 64, seed=3)
    a, b = data[2], SyntheticPose(4, 64, seed=3)[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["keypoints"], b["keypoints"])
    kps, box = a["keypoints"], a["bbox"]
    assert a["image"].shape == (3, 64, 64) and kps.shape == (17, 3)
    seen = kps[:, 2] > 0
    assert seen.sum() >= 15
    assert (kps[seen, 0] >= box[0]).all() and (kps[seen, 0] <= box[0] + box[2]).all()
    assert not torch.equal(data[0]["image"], data[1]["image"])
