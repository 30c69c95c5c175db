"""SegViT + DToP (ExitSegViT): exits that never fire equal the plain SegViT exactly; tokens
finalised at a stage end are predicted by that stage's head."""

import pytest
import torch
import torch.nn.functional as F

from algm_cli.models.learned.exit_segvit import ExitSegViT
from algm_cli.models.learned.exits import ExitSpec
from algm_cli.models.schedule import NO_MERGE
from algm_cli.models.segvit import SegViT

SMALL = dict(backbone="vit_t", num_classes=3, img_size=64, decoder_layers=1)


@pytest.mark.parametrize("class_token", [False, True])
def test_dtop_that_never_fires_equals_segvit(class_token):
    torch.manual_seed(0)
    plain = SegViT(**SMALL, class_token=class_token).eval()
    model = ExitSegViT(ExitSpec("dtop", (6, 8), 1.0, keep_per_class=5, logits_from="head"),
                       **SMALL, class_token=class_token).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("exit_heads.") for key in missing)
    images = torch.randn(2, 3, 48, 40)  # padded to 48 x 48 inside
    with torch.no_grad():
        out, stats = model.forward_with_stats(images)
        expected = plain(images)
    assert out.shape == expected.shape == (2, 3, 48, 40)
    assert torch.allclose(out, expected, atol=1e-5)
    assert stats == {"L6:dtop": 1.0, "L8:dtop": 1.0}


def test_dtop_at_p0_zero_predicts_with_the_first_stage_head():
    torch.manual_seed(0)
    spec = ExitSpec("dtop", (6, 8), 0.0, keep_per_class=0, logits_from="head")
    model = ExitSegViT(spec, **SMALL).eval()
    images = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        out, stats = model.forward_with_stats(images)
        enc = model.encoder(images, NO_MERGE, outputs=(6,))  # the plain encoder up to layer 6
        logits = model.exit_heads(6, enc.layers[6])  # (1, N, K)
        head = logits.softmax(-1).transpose(1, 2).reshape(1, 3, *enc.grid)
        expected = F.interpolate(head, size=(64, 48), mode="bilinear", align_corners=False)
    assert stats == {"L6:dtop": 0.0, "L8:dtop": 0.0}
    assert torch.allclose(out, expected, atol=1e-5)


def test_dtop_keeps_the_most_confident_token_per_class_and_trains():
    torch.manual_seed(0)
    spec = ExitSpec("dtop", (6, 8), 0.0, keep_per_class=1, logits_from="head")
    model = ExitSegViT(spec, **SMALL)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        enc = model.eval().encoder(images, NO_MERGE, outputs=(6,))
        classes = model.exit_heads(6, enc.layers[6]).argmax(-1).unique().numel()
        _, _, out = model._exit_decode(images)
    assert out.stats["L6:dtop"] == classes / 16  # one token of each predicted class stays
    assert out.exited.sum() == 16 - out.stats["L8:dtop"] * 16
    model.train()
    loss = model.training_loss(images, torch.randint(0, 3, (1, 64, 64)))
    loss.backward()
    assert torch.isfinite(loss) and model.exit_heads.heads["6"][1].weight.grad.abs().sum() > 0


def test_dtop_gflops_count_the_heads_and_drop_with_exits():
    from algm_cli.engine.flops import count_gflops

    torch.manual_seed(0)
    plain = SegViT(**SMALL)
    images = torch.randn(1, 3, 64, 64)
    counts = {}
    for p0, source in ((1.0, "decoder"), (0.0, "head")):
        spec = ExitSpec("dtop", (6, 8), p0, keep_per_class=0, logits_from=source)
        model = ExitSegViT(spec, **SMALL)
        model.load_state_dict(plain.state_dict(), strict=False)
        counts[p0] = count_gflops(model, images)
    # nothing exits: SegViT + two heads on 16 tokens: Linear 192 -> 3, LayerNorm (fvcore: 5 / value)
    heads = 2 * 16 * (192 * 3 + 192 * 5) / 1e9
    assert counts[1.0] - count_gflops(plain, images) == pytest.approx(heads, rel=1e-6)
    assert counts[0.0] < 0.7 * counts[1.0]  # every token leaves after layer 6 of 12
