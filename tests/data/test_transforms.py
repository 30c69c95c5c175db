"""The training / evaluation transforms: alignment, mmseg semantics, determinism."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from algm_cli.data.transforms import (
    eval_resize, hsv_to_rgb, normalize, photometric_distortion, random_crop, rescale_size,
    rgb_to_hsv, train_transform,
)

# classes 0..5 get saturated, far-apart colours; index 6 (black) stands for ignore = 255,
# which is also what padding writes (image 0, label 255)
COLOURS = torch.tensor([[230, 25, 25], [25, 230, 25], [25, 25, 230], [230, 230, 25],
                        [230, 25, 230], [25, 230, 230], [0, 0, 0]], dtype=torch.float32)


def planted(h: int = 40, w: int = 56) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (image uint8 (3,h,w), label (h,w)) where each pixel's colour encodes its label."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    label = ((ys // 7) * 3 + xs // 9) % 6
    label[20:26, 30:40] = 255
    index = torch.where(label == 255, 6, label)
    return COLOURS[index].permute(2, 0, 1).to(torch.uint8), label


def decode(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (class each pixel's colour is nearest to, distance to that colour), both (H, W)."""
    pixels = image.permute(1, 2, 0).reshape(-1, 3).float()
    dist, index = torch.cdist(pixels, COLOURS).min(dim=1)
    cls = torch.where(index == 6, 255, index)
    return cls.view(image.shape[1:]), dist.view(image.shape[1:])


def assert_aligned(image: torch.Tensor, label: torch.Tensor) -> None:
    """Assert the label matches the colour-coded image, allowing one pixel at class borders."""
    cls, dist = decode(image)
    assert (cls == label).float().mean() > 0.9
    shifted = F.pad(label, (1, 1, 1, 1), value=-1).unfold(0, 3, 1).unfold(1, 3, 1)  # (H,W,3,3)
    near = (shifted == cls[..., None, None]).flatten(2).any(-1)
    clean = dist < 40  # pixels not blended by bilinear interpolation
    assert near[clean].all()


def gen(seed: int) -> torch.Generator:
    """Return a CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


PLAIN = dict(photometric=False)


@pytest.mark.parametrize("seed", range(12))
def test_label_stays_aligned_through_resize_crop_flip_pad(seed):
    image, label = planted()
    out_image, out_label = train_transform(image, label, crop_size=32, scale=(64, 48),
                                           generator=gen(seed), **PLAIN)
    assert out_image.shape == (3, 32, 32) and out_image.dtype == torch.uint8
    assert out_label.shape == (32, 32) and out_label.dtype == torch.int64
    assert_aligned(out_image, out_label)


def test_planted_check_catches_a_misaligned_label():
    image, label = planted()
    with pytest.raises(AssertionError):
        assert_aligned(image, label.roll(3, dims=1))
    with pytest.raises(AssertionError):
        assert_aligned(image, label.flip(-1))


@pytest.mark.parametrize("seed", range(4))
def test_flip_mirrors_image_and_label_together(seed):
    image, label = planted()
    kwargs = dict(crop_size=32, scale=(112, 80), ratio_range=(1.0, 1.0), **PLAIN)  # no padding
    a_img, a_lab = train_transform(image, label, flip_prob=0.0, generator=gen(seed), **kwargs)
    b_img, b_lab = train_transform(image, label, flip_prob=1.0, generator=gen(seed), **kwargs)
    assert torch.equal(b_img, a_img.flip(-1)) and torch.equal(b_lab, a_lab.flip(-1))


def test_same_seed_same_sample_and_seeds_differ():
    image, label = planted()
    kwargs = dict(crop_size=32, scale=(64, 48))
    runs = [train_transform(image, label, generator=gen(s), **kwargs) for s in (5, 5, 6, 7)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert any(not torch.equal(runs[0][0], other[0]) for other in runs[2:])


def test_photometric_changes_only_the_image():
    image, label = planted()
    kwargs = dict(crop_size=32, scale=(64, 48))
    changed = 0
    for seed in range(6):
        plain = train_transform(image, label, generator=gen(seed), photometric=False, **kwargs)
        photo = train_transform(image, label, generator=gen(seed), photometric=True, **kwargs)
        assert torch.equal(plain[1], photo[1])
        changed += not torch.equal(plain[0], photo[0])
    assert changed >= 3


def test_padding_uses_zero_and_ignore():
    image, label = planted()
    out_image, out_label = train_transform(image, label, crop_size=64, scale=(56, 40),
                                           ratio_range=(1.0, 1.0), generator=gen(0), **PLAIN)
    assert out_image.shape == (3, 64, 64)
    assert (out_label[40:] == 255).all() and (out_label[:, 56:] == 255).all()
    assert (out_image[:, 40:] == 0).all() and (out_image[:, :, 56:] == 0).all()
    inside = out_label[:40, :56]
    assert torch.equal(inside, label) or torch.equal(inside, label.flip(-1))
    grey = train_transform(image, label, crop_size=64, scale=(56, 40), ratio_range=(1.0, 1.0),
                           generator=gen(0), pad_value=128, **PLAIN)[0]
    assert (grey[:, 40:] == 128).all()


def _crop_is_balanced(label: torch.Tensor, ratio: float = 0.75) -> bool:
    """Return True if the label has >1 class and none covers `ratio` of its labelled pixels."""
    _, counts = torch.unique(label[label != 255], return_counts=True)
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_cat_max_ratio_retries_for_crops_without_a_dominant_class():
    """A 10-px band of class 1 in a 128-px-wide class-0 image: ~1/4 of 32-px crops qualify."""
    label = torch.zeros(32, 128, dtype=torch.long)
    label[:, 60:70] = 1
    image = torch.zeros(3, 32, 128, dtype=torch.uint8)
    kwargs = dict(crop_size=32, scale=(128, 32), ratio_range=(1.0, 1.0), flip_prob=0.0, **PLAIN)
    with_check = [train_transform(image, label, cat_max_ratio=0.75, generator=gen(s), **kwargs)[1]
                  for s in range(20)]
    without = [train_transform(image, label, cat_max_ratio=1.0, generator=gen(s), **kwargs)[1]
               for s in range(20)]
    assert sum(map(_crop_is_balanced, with_check)) >= 16
    assert sum(map(_crop_is_balanced, without)) <= 10


def test_crop_without_a_qualifying_position_keeps_the_last_try():
    label = torch.zeros(40, 56, dtype=torch.long)
    image = torch.zeros(3, 40, 56, dtype=torch.uint8)
    crop_image, crop_label = random_crop(image, label, 32, 0.75, 255, gen(0))
    assert crop_image.shape == (3, 32, 32) and crop_label.shape == (32, 32)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 70), w=st.integers(8, 70), crop=st.integers(8, 48),
       seed=st.integers(0, 2**31 - 1), photometric=st.booleans())
def test_shapes_and_label_values_for_any_input(h, w, crop, seed, photometric):
    """Output is always (3,c,c) / (c,c); nearest resizing never invents label values."""
    image = torch.randint(0, 256, (3, h, w), generator=gen(seed), dtype=torch.uint8)
    label = torch.randint(0, 4, (h, w), generator=gen(seed + 1))
    label[0, 0] = 255
    out_image, out_label = train_transform(image, label, crop_size=crop, scale=(64, 32),
                                           photometric=photometric, generator=gen(seed))
    assert out_image.shape == (3, crop, crop) and out_image.dtype == torch.uint8
    assert out_label.shape == (crop, crop) and out_label.dtype == torch.int64
    assert set(out_label.unique().tolist()) <= {0, 1, 2, 3, 255}


def test_bad_inputs_are_rejected():
    image, label = planted()
    with pytest.raises(ValueError, match="uint8"):
        train_transform(image.float(), label, crop_size=8, scale=(64, 48), generator=gen(0))
    with pytest.raises(ValueError, match="sizes differ"):
        train_transform(image, label[:-1], crop_size=8, scale=(64, 48), generator=gen(0))


# ----------------------------------------------------------------------------- resize rules
@pytest.mark.parametrize("hw, scale, expected", [
    ((512, 683), (2048, 512), (512, 683)),      # ADE20K: short side 512
    ((300, 3000), (2048, 512), (205, 2048)),    # very wide: the long side limits
    ((1024, 2048), (2048, 1024), (1024, 2048)),  # Cityscapes at its base scale
    ((1024, 2048), (1024, 512), (512, 1024)),   # ... at ratio 0.5
    ((512, 683), (1024, 256), (256, 342)),      # mmseg rounding int(x + 0.5)
    ((40, 56), (56, 40), (40, 56)),             # scale given (long, short) either way
    ((40, 56), (40, 56), (40, 56)),
])
def test_rescale_size_follows_the_keep_ratio_rule(hw, scale, expected):
    assert rescale_size(*hw, scale) == expected


@pytest.mark.parametrize("seed", range(6))
def test_random_resize_stays_within_the_ratio_range(seed):
    """Without cropping (crop larger than any result), the unpadded part has the resized size."""
    image, label = planted()
    _, out_label = train_transform(image, label, crop_size=200, scale=(56, 40),
                                   ratio_range=(0.5, 2.0), cat_max_ratio=1.0, flip_prob=0.0,
                                   generator=gen(seed), **PLAIN)
    padded = out_label == 255
    h = int((~padded).any(1).sum())
    w = int((~padded).any(0).sum())
    assert 20 <= h <= 80 and 28 <= w <= 112
    assert abs(w / h - 56 / 40) < 0.1


def test_eval_resize_rules_and_label_untouched():
    image, label = planted(40, 56)
    assert eval_resize(image, short_side=20).shape == (3, 20, 28)
    assert eval_resize(image, scale=(2048, 80)).shape == (3, 80, 112)
    assert eval_resize(image, scale=(100, 80)).shape == (3, 71, 100)  # long side limits
    resized, same = eval_resize(image, label, short_side=80)
    assert resized.shape == (3, 80, 112) and same is label
    assert torch.equal(eval_resize(image), image)
    with pytest.raises(ValueError, match="not both"):
        eval_resize(image, short_side=20, scale=(100, 80))


def test_eval_resize_keeps_colours_in_place():
    image, label = planted(40, 56)
    resized = eval_resize(image, short_side=80)  # x2
    big_label = F.interpolate(label[None, None].float(), scale_factor=2, mode="nearest")[0, 0]
    assert_aligned(resized, big_label.long())


def test_normalize():
    image = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = normalize(image)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    assert torch.allclose(out[:, 0, 0], torch.tensor([-1.0, 1.0, -0.6]))
    custom = normalize(image, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert torch.allclose(custom[:, 0, 0], torch.tensor([0.0, 1.0, 0.2]))


# ----------------------------------------------------------------------------- colour
def test_hsv_matches_colorsys_and_round_trips():
    rgb = torch.rand(3, 6, 7, generator=gen(0))
    rgb[:, 0, 0] = 0.0  # black
    rgb[:, 0, 1] = 0.5  # grey
    rgb[:, 0, 2] = torch.tensor([0.8, 0.8, 0.1])  # tie between red and green
    hsv = rgb_to_hsv(rgb)
    for y, x in [(0, 0), (0, 1), (0, 2), (3, 4), (5, 6)]:
        want = colorsys.rgb_to_hsv(*rgb[:, y, x].tolist())
        assert torch.allclose(hsv[:, y, x], torch.tensor(want, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(hsv_to_rgb(hsv), rgb, atol=1e-6)


def test_hue_rotation_by_a_third_turns_red_into_green():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    hsv = rgb_to_hsv(red)
    hsv[0] = (hsv[0] + 1 / 3) % 1
    assert torch.allclose(hsv_to_rgb(hsv).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_photometric_keeps_grey_grey_and_within_bounds(seed):
    grey = torch.full((3, 6, 6), 128, dtype=torch.uint8)
    out = photometric_distortion(grey, gen(seed))
    assert out.dtype == torch.uint8 and out.shape == grey.shape
    assert (out[0] == out[1]).all() and (out[1] == out[2]).all()  # no colour appears
    assert 48 <= int(out.min()) and int(out.max()) <= 240  # (128 -+ 32) * [0.5, 1.5]


def test_photometric_is_deterministic_and_varied():
    image = planted()[0]
    outs = [photometric_distortion(image, gen(s)) for s in range(8)]
    assert torch.equal(outs[0], photometric_distortion(image, gen(0)))
    assert len({tuple(o.float().mean((1, 2)).round().tolist()) for o in outs}) >= 4
