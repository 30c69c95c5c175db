"""The models' own training losses: SETR's auxiliary heads and SegViT's ATM set loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from algm_cli.models.base import TrainingObjective
from algm_cli.models.segmenter import Segmenter
from algm_cli.models.segvit import NO_OBJECT_WEIGHT, SegViT, atm_loss
from algm_cli.models.setr import SETR


def test_default_loss_is_cross_entropy_with_the_ignore_index():
    torch.manual_seed(0)
    model = Segmenter("vit_t", num_classes=3, decoder="linear", img_size=32).eval()
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    labels[0, :4] = 255
    expected = F.cross_entropy(model(images), labels, ignore_index=255)
    assert TrainingObjective(model)(images, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_setr_loss_adds_each_auxiliary_head_at_weight_0_4():
    torch.manual_seed(0)
    model = SETR("vit_t", num_classes=4, decoder="naive", img_size=32).eval()
    images, labels = torch.randn(1, 3, 32, 32), torch.randint(0, 4, (1, 32, 32))
    main, aux, _ = model.forward_with_aux(images)
    assert len(aux) == 3  # naive, 12 layers: heads on layers 3, 6, 9
    expected = F.cross_entropy(main, labels) + 0.4 * sum(F.cross_entropy(a, labels) for a in aux)
    assert model.training_loss(images, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_atm_class_loss_targets_present_classes_and_no_object():
    # one level, one image, K = 2 classes: class 0 covers the image, class 1 is absent.
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    classes = torch.zeros(1, 1, 2, 3)  # uniform class logits: CE = log 3 for every query
    masks = torch.full((1, 1, 2, 1, 1), 30.0)  # confident "on" masks everywhere
    loss = atm_loss(classes, masks, labels, num_classes=2)
    # weighted CE: query 0 -> class 0 (weight 1), query 1 -> no-object (weight 0.1); the mean is
    # weighted, so both carry log 3. Mask of class 0 is all on: focal ~ 0, dice ~ 0.
    assert loss.item() == pytest.approx(math.log(3), abs=1e-3)
    # a wrong mask for the present class costs focal x 20 + dice
    wrong = atm_loss(classes, -masks, labels, num_classes=2)
    assert wrong.item() > math.log(3) + 0.9


def test_atm_loss_ignores_ignore_pixels_in_targets_and_sums_levels():
    labels = torch.full((1, 8, 8), 255)
    labels[0, :4] = 1
    classes = torch.randn(3, 1, 2, 3)
    masks = torch.randn(3, 1, 2, 1, 1)
    total = atm_loss(classes, masks, labels, num_classes=2)
    per_level = sum(atm_loss(classes[i:i + 1], masks[i:i + 1], labels, 2) for i in range(3))
    assert total.item() == pytest.approx(per_level.item(), rel=1e-5)
    target = torch.tensor([[2, 1]])  # class 0 absent -> no-object (index 2); class 1 present
    weight = torch.tensor([1.0, 1.0, NO_OBJECT_WEIGHT])
    ce = F.cross_entropy(classes[0].transpose(1, 2), target, weight)
    assert atm_loss(classes[:1], masks[:1] * 0 + 50, labels, 2).item() >= ce.item() - 1e-6


def test_segvit_trains_on_its_atm_loss():
    torch.manual_seed(0)
    model = SegViT("vit_t", num_classes=3, img_size=32)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(8):
        optimizer.zero_grad()
        loss = model.training_loss(images, labels)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


def test_atm_class_loss_weights_no_object_queries_by_0_1():
    # query 0 -> class 0 (present, weight 1), query 1 -> no-object (weight 0.1); masks perfect
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    classes = torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 0.0, math.log(4.0)]]]])  # (1, 1, 2, 3)
    masks = torch.full((1, 1, 2, 1, 1), 30.0)
    expected = (math.log(3.0) + 0.1 * math.log(1.5)) / 1.1
    assert atm_loss(classes, masks, labels, num_classes=2).item() == pytest.approx(expected,
                                                                                   abs=1e-3)
