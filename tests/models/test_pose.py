"""Pose heads: heatmap targets, loss, sub-pixel decoding; the downsampling baseline."""

import pytest
import torch

from algm_cli.models.downsample import DownsampledSegformer
from algm_cli.models.pose import (
    DownsampledSegformerPose, SegformerPose, decode_heatmaps, heatmap_loss, keypoint_heatmaps,
)
from algm_cli.models.segformer import Segformer, segformerpp_preset


def test_heatmap_targets_peak_at_the_keypoint_and_weight_unlabelled_zero():
    kps = torch.tensor([[[8.0, 12.0, 2.0], [4.0, 4.0, 0.0], [200.0, 4.0, 2.0]]])  # input pixels
    heat, weights = keypoint_heatmaps(kps, (8, 8), sigma=1.0)
    assert heat.shape == (1, 3, 8, 8)
    assert heat[0, 0, 3, 2] == pytest.approx(1.0)  # (x 8, y 12) / 4 -> column 2, row 3
    assert heat[0, 0, 3, 3] == pytest.approx(torch.exp(torch.tensor(-0.5)).item())
    assert weights.tolist() == [[1.0, 0.0, 0.0]]  # unlabelled; outside the heatmap


def test_loss_ignores_weighted_out_keypoints():
    pred = torch.zeros(1, 2, 4, 4)
    target = torch.ones(1, 2, 4, 4)
    assert heatmap_loss(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)


def test_decoding_argmax_with_quarter_offsets():
    heat = torch.zeros(1, 2, 6, 6)
    heat[0, 0, 2, 3] = 1.0
    heat[0, 0, 2, 4] = 0.5  # right neighbour larger: x + 0.25
    heat[0, 0, 1, 3] = 0.3  # upper neighbour larger: y - 0.25
    heat[0, 1, 0, 5] = 0.9  # border peak: no shift
    xy, scores = decode_heatmaps(heat)
    assert xy[0, 0].tolist() == [pytest.approx(3.25 * 4), pytest.approx(1.75 * 4)]
    assert xy[0, 1].tolist() == [20.0, 0.0]
    assert scores[0].tolist() == pytest.approx([1.0, 0.9])


def test_pose_model_outputs_quarter_resolution_heatmaps_and_trains():
    torch.manual_seed(0)
    model = SegformerPose("b0", num_keypoints=5, merge=segformerpp_preset("hq"))
    images = torch.randn(2, 3, 64, 64)
    assert model(images).shape == (2, 5, 16, 16)
    kps = torch.cat([torch.rand(2, 5, 2) * 60, torch.full((2, 5, 1), 2.0)], -1)
    loss = model.training_loss(images, kps)
    loss.backward()
    assert loss.item() > 0 and model.encoder.stages[0].patch_embed.proj.weight.grad is not None
    xy, scores = model.predict_keypoints(images)
    assert xy.shape == (2, 5, 2) and scores.shape == (2, 5)


def test_downsampling_by_one_is_the_plain_model_and_shares_parameters():
    torch.manual_seed(0)
    plain = Segformer("b0", 3).eval()
    down = DownsampledSegformer("b0", 3, factor=1.0).eval()
    down.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(down(x), plain(x))
    half = DownsampledSegformer("b0", 3, factor=0.5).eval()
    half.load_state_dict(plain.state_dict())
    logits, stats = half.forward_with_stats(x)
    assert logits.shape == (1, 3, 64, 64) and stats["input"] == 0.25
    # the reduced model = the plain model on the nearest-downsampled input, upsampled back
    small = torch.nn.functional.interpolate(x, size=(32, 32))
    feats, _ = plain.encoder(small, plain.merge)
    ref = torch.nn.functional.interpolate(plain.decode_head(feats), size=(64, 64), mode="bilinear")
    torch.testing.assert_close(logits, ref)
    pose = DownsampledSegformerPose("b0", 4, factor=0.5)
    assert pose(x).shape == (1, 4, 16, 16)


@pytest.mark.parametrize("kwargs", [{"factor": 0.0}, {"factor": 1.5}, {"interpolation": "area"}])
def test_bad_downsampling_settings_are_errors(kwargs):
    with pytest.raises(ValueError, match="merge"):
        DownsampledSegformer("b0", 3, **kwargs)
