"""PCK, OKS and COCO's OKS AP against hand-computed cases."""

import math

import numpy as np
import pytest

from algm_cli.engine.pose import average_precision, oks, oks_ap, pck


def test_pck_normalises_each_axis_by_the_box():
    gt = np.array([[[10.0, 10.0, 2], [20.0, 20.0, 2], [0.0, 0.0, 0]]])
    pred = np.array([[[13.0, 10.0], [20.0, 23.0], [50.0, 50.0]]])
    box = np.array([[0.0, 0.0, 40.0, 20.0]])  # w 40, h 20
    # keypoint 1: 3 / 40 = 0.075; keypoint 2: 3 / 20 = 0.15; keypoint 3 unlabelled
    assert pck(pred, gt, box, 0.1) == pytest.approx(0.5)
    assert pck(pred, gt, box, 0.2) == pytest.approx(1.0)
    assert pck(pred, gt, box, 0.05) == pytest.approx(0.0)


def test_oks_matches_the_coco_formula_by_hand():
    sigmas = (0.1, 0.2)
    gt = np.array([[[0.0, 0.0, 2], [10.0, 0.0, 1]]])
    pred = np.array([[[3.0, 4.0], [10.0, 0.0]]])
    area = np.array([100.0])
    # kp 0: d^2 = 25, var = (0.2)^2 = 0.04 -> e = 25 / 0.04 / 100 / 2 = 3.125; kp 1: exact
    expected = (math.exp(-3.125) + 1.0) / 2
    assert oks(pred, gt, area, sigmas)[0] == pytest.approx(expected, rel=1e-9)
    unlabelled = gt.copy()
    unlabelled[0, 0, 2] = 0
    assert oks(pred, unlabelled, area, sigmas)[0] == pytest.approx(1.0)


def test_average_precision_is_cocos_101_point_interpolation():
    # ranked: TP, FP, TP of 4 positives -> recall 0.25, 0.25, 0.5; precision 1, 0.5, 2/3
    # monotone envelope: 1, 2/3, 2/3; recall points 0..0.25 (26 points) -> 1,
    # 0.26..0.5 (25 points) -> 2/3, above 0.5 -> 0
    tp = np.array([True, False, True])
    scores = np.array([0.9, 0.8, 0.7])
    expected = (26 * 1.0 + 25 * (2 / 3)) / 101
    assert average_precision(tp, scores, 4) == pytest.approx(expected)
    assert average_precision(tp[::-1], scores[::-1], 4) == pytest.approx(expected)  # order by score


def test_oks_ap_perfect_and_ignored_persons():
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(0, 50, (5, 17, 2)), np.full((5, 17, 1), 2.0)], -1)
    area = np.full(5, 900.0)
    scores = rng.uniform(size=5)
    assert oks_ap(gt[..., :2], scores, gt, area)["ap"] == pytest.approx(1.0)
    far = gt[..., :2].copy()
    far[0] += 1000.0  # one hopeless prediction with the highest score
    scores_far = scores.copy()
    scores_far[0] = 2.0
    # at every threshold: FP first, then 4 TPs of 5 -> precision envelope 0.8 up to recall 0.8
    assert oks_ap(far, scores_far, gt, area)["ap"] == pytest.approx(81 * 0.8 / 101)
    unlabelled = gt.copy()
    unlabelled[0, :, 2] = 0  # COCO ignores a person without labelled keypoints
    assert oks_ap(far, scores_far, unlabelled, area)["ap"] == pytest.approx(1.0)
