"""Class-name lists and palettes."""

from __future__ import annotations

import pytest
import torch

from algm_cli.data.classes import (
    ADE20K_CLASSES, CITYSCAPES_CLASSES, COCO_STUFF_CLASSES, PASCAL_CONTEXT_CLASSES,
    cityscapes_palette, generated_palette,
)


@pytest.mark.parametrize("names, count", [
    (ADE20K_CLASSES, 150), (CITYSCAPES_CLASSES, 19), (PASCAL_CONTEXT_CLASSES, 59),
    (COCO_STUFF_CLASSES, 171),
])
def test_class_lists_have_the_official_sizes_and_unique_names(names, count):
    assert len(names) == count and len(set(names)) == count
    assert all(isinstance(n, str) and n == n.strip() and n for n in names)


def test_known_positions():
    assert ADE20K_CLASSES[12] == "person" and ADE20K_CLASSES[149] == "flag"
    assert CITYSCAPES_CLASSES[11] == "person" and CITYSCAPES_CLASSES[13] == "car"
    assert PASCAL_CONTEXT_CLASSES[0] == "aeroplane" and PASCAL_CONTEXT_CLASSES[-1] == "wood"
    assert "background" not in PASCAL_CONTEXT_CLASSES
    assert COCO_STUFF_CLASSES[0] == "person" and COCO_STUFF_CLASSES[79] == "toothbrush"
    assert COCO_STUFF_CLASSES[80] == "banner" and COCO_STUFF_CLASSES[170] == "wood"


def test_cityscapes_palette_is_official():
    palette = cityscapes_palette()
    assert palette.dtype == torch.uint8 and palette.shape == (19, 3)
    assert palette[0].tolist() == [128, 64, 128]  # road
    assert palette[10].tolist() == [70, 130, 180]  # sky


@pytest.mark.parametrize("k", [1, 8, 59, 150, 171])
def test_generated_palette_is_deterministic_and_distinct(k):
    palette = generated_palette(k)
    assert palette.dtype == torch.uint8 and palette.shape == (k, 3)
    assert torch.equal(palette, generated_palette(k))
    assert len({tuple(c) for c in palette.tolist()}) == k
    if k > 1:
        dist = torch.cdist(palette.float(), palette.float()) + 1e9 * torch.eye(k)
        assert dist.min() >= 40  # well separated even for 171 classes
    assert torch.equal(generated_palette(k + 5)[:k], palette)  # a prefix of any longer one
