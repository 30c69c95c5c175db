"""Engine stages on planted inputs: calibration, throughput protocol, store, sliding window, mIoU."""

import math

import pytest
import torch
import torch.nn.functional as F

from algm_cli.engine import store
from algm_cli.engine.calibrate import calibrate, pair_moments
from algm_cli.engine.evaluate import confusion, miou_from_confusion, sliding_window, window_starts
from algm_cli.engine.throughput import make_batches, measure_throughput
from algm_cli.engine.train import poly_lr


def test_pair_moments_match_hand_computation():
    # three tokens: two identical, one orthogonal -> pair similarities 1, 0, 0 (each twice)
    tokens = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    m = pair_moments(tokens)
    assert m.count == 6 and m.mean == pytest.approx(1 / 3)
    assert m.std == pytest.approx(math.sqrt(1 / 3 - 1 / 9))


class PlantedEncoder(torch.nn.Module):
    """Returns fixed 'captured' tokens so the calibration result is known."""

    depth = 2

    def forward(self, images, capture=()):
        class Out:
            captured = {1: torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]).expand(images.shape[0], -1, -1),
                        2: torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).expand(images.shape[0], -1, -1)}
        return Out()


def test_calibration_is_mean_plus_std_over_all_pairs_and_layers():
    result = calibrate(PlantedEncoder(), [torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4)])
    # layer 1 pairs all 1, layer 2 pairs all 0 -> mean 0.5, std 0.5
    assert result.mean == pytest.approx(0.5) and result.std == pytest.approx(0.5)
    assert result.tau == pytest.approx(1.0) and result.images == 3
    assert result.per_layer[1]["mean"] == pytest.approx(1.0)


class CountingModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x


def test_throughput_uses_duplicates_warmup_and_one_timed_batch_per_image():
    images = [torch.full((3, 4, 4), float(i)) for i in range(3)]
    ticks = iter(range(100))
    model = CountingModel()
    out = measure_throughput(model, images, batch=5, warmup=4, clock=lambda: next(ticks))
    assert len(model.seen) == 4 + 3  # warm-up forwards, then one timed batch per image
    timed = model.seen[4:]
    for i, x in enumerate(timed):
        assert x.shape == (5, 3, 4, 4) and torch.all(x == i)  # 5 copies of image i
    assert out["ims"] == pytest.approx(5 / 1) and out["batches"] == 3  # each batch took 1 tick


def test_throughput_rounds_repeat_the_timed_pass():
    images = [torch.full((3, 4, 4), float(i)) for i in range(3)]
    ticks = iter(range(100))
    model = CountingModel()
    out = measure_throughput(model, images, batch=2, warmup=1, clock=lambda: next(ticks), rounds=3)
    timed = model.seen[1:]
    assert [int(x[0, 0, 0, 0]) for x in timed] == [0, 1, 2] * 3 and out["batches"] == 9
    with pytest.raises(ValueError, match="rounds"):
        measure_throughput(model, images, rounds=0)


def test_mixed_batches_hold_different_images():
    images = [torch.full((3, 2, 2), float(i)) for i in range(3)]
    batches = make_batches(images, 4, "mixed")
    assert [b[:, 0, 0, 0].tolist() for b in batches][0] == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="throughput mode"):
        make_batches(images, 4, "shuffled")


def test_window_starts_cover_the_image_and_end_flush():
    assert window_starts(100, 64, 48) == [0, 36]
    assert window_starts(64, 64, 48) == [0]
    assert window_starts(200, 64, 48) == [0, 48, 96, 136]


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    conv = torch.nn.Conv2d(3, 4, 1)
    image = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        whole = conv(image)
        slid, stats = sliding_window(lambda x: (conv(x), {"a": 1.0}), image, 4, 32, 24)
    assert torch.allclose(whole, slid, atol=1e-6) and len(stats) == 3 * 4


def test_miou_from_hand_made_confusion():
    label = torch.tensor([[0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 0]])
    matrix = confusion(pred, label, 3, 255)
    miou, iou = miou_from_confusion(matrix)
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5) and math.isnan(iou[2])
    assert miou == pytest.approx(0.5)


def test_poly_lr_endpoints():
    assert poly_lr(1e-3, 0, 100, 0.9, 1e-5) == pytest.approx(1e-3)
    assert poly_lr(1e-3, 100, 100, 0.9, 1e-5) == pytest.approx(1e-5)


def test_store_is_atomic_and_finds_finished_rows(tmp_path):
    assert store.finished(tmp_path, "abc") is None
    store.write_row(tmp_path, {"run_id": "abc", "miou": 1.0, "status": "ok"})
    assert store.finished(tmp_path, "abc")["miou"] == 1.0
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert store.finished(tmp_path, "bad") is None
