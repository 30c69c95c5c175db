"""Mask2Former pieces: deformable sampling vs a hand reference, matching, set loss, inference."""

import math

import torch

from algm_cli.models.mask2former.criterion import hungarian_match, set_loss
from algm_cli.models.mask2former.model import semantic_inference
from algm_cli.models.mask2former.msdeform_attn import MSDeformAttn, deform_sample


def bilinear(img, x, y):
    """Sample img (d, h, w) at continuous pixel coords (x, y), zeros outside (by hand)."""
    d, h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(d)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        if 0 <= xi < w and 0 <= yi < h:
            out += (1 - abs(x - xi)) * (1 - abs(y - yi)) * img[:, yi, xi]
    return out


def test_deform_sample_matches_hand_bilinear_reference():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    B, heads, d, Q, P = 1, 2, 3, 2, 2
    value = torch.randn(B, 16, heads, d, generator=g)
    loc = torch.rand(B, Q, heads, 2, P, 2, generator=g) * 1.2 - 0.1  # some points fall outside
    w = torch.rand(B, Q, heads, 2, P, generator=g)
    out = deform_sample(value, shapes, loc, w)  # (B, Q, heads * d)
    ref = torch.zeros(B, Q, heads, d)
    for q in range(Q):
        for h in range(heads):
            start = 0
            for lvl, (hh, ww) in enumerate(shapes):
                img = value[0, start:start + hh * ww, h].T.reshape(d, hh, ww)
                start += hh * ww
                for p in range(P):
                    x, y = loc[0, q, h, lvl, p].tolist()
                    ref[0, q, h] += w[0, q, h, lvl, p] * bilinear(img, x * ww - 0.5, y * hh - 0.5)
    assert torch.allclose(out, ref.reshape(B, Q, heads * d), atol=1e-5)


def test_msdeform_attn_shapes_and_level_check():
    attn = MSDeformAttn(8, heads=2, levels=2, points=3, value_ratio=0.5)
    q, ref, v = torch.randn(2, 5, 8), torch.rand(1, 5, 2), torch.randn(2, 16, 8)
    assert attn(q, ref, v, [(3, 4), (2, 2)]).shape == (2, 5, 8)
    try:
        attn(q, ref, v, [(3, 4)])
    except ValueError as err:
        assert "need" in str(err)
    else:
        raise AssertionError("a token count that does not fit the level shapes must be refused")


def test_hungarian_matching_on_a_hand_case():
    # targets: class 3 on the left half, class 1 on the right half of a 4 x 4 map
    left = torch.zeros(4, 4)
    left[:, :2] = 1
    target_masks = torch.stack([left, 1 - left])
    target_classes = torch.tensor([3, 1])
    big = 10.0
    masks = torch.stack([(1 - left) * 2 * big - big,  # query 0: right half
                         torch.full((4, 4), -big),  # query 1: empty
                         left * 2 * big - big])  # query 2: left half
    classes = torch.full((3, 5), -5.0)
    classes[0, 1] = classes[2, 3] = 5.0
    classes[1, 4] = 5.0  # query 1 says no-object
    rows, cols = hungarian_match(classes, masks, target_classes, target_masks, points=256,
                                 generator=torch.Generator().manual_seed(0))
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 2: 0}


def test_set_loss_is_finite_and_decreases_on_a_tiny_overfit():
    torch.manual_seed(0)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 2
    labels[:, :3, :3] = 255  # ignored pixels
    classes = torch.zeros(1, 4, 4, requires_grad=True)  # 4 queries, K = 3 + no-object
    masks = torch.zeros(1, 4, 8, 8, requires_grad=True)  # stride-2 mask logits
    opt = torch.optim.Adam([classes, masks], lr=0.1)
    losses = []
    for _ in range(40):
        loss = set_loss([(classes, masks)], labels, 3, points=64,
                        generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0]


def test_set_loss_handles_images_without_targets():
    labels = torch.full((2, 8, 8), 255)
    classes = torch.zeros(2, 3, 4, requires_grad=True)
    masks = torch.zeros(2, 3, 4, 4, requires_grad=True)
    loss = set_loss([(classes, masks)], labels, 3, points=16)
    loss.backward()
    assert math.isfinite(loss.item()) and masks.grad is not None


def test_semantic_inference_is_softmax_classes_times_sigmoid_masks():
    classes = torch.randn(1, 2, 4)  # K = 3 + no-object
    masks = torch.randn(1, 2, 2, 2)
    out = semantic_inference(classes, masks, (2, 2), (2, 2))
    probs = classes.softmax(-1)[..., :3]
    expected = (probs[0, :, :, None, None] * masks[0].sigmoid()[:, None]).sum(0)
    assert torch.allclose(out[0], expected, atol=1e-6)
