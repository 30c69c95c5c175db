"""Plain-ViT options as released: class token dropped after the position embeddings, bicubic resize."""

import torch
import torch.nn.functional as F

from algm_cli.models.segvit import SegViT
from algm_cli.models.setr import SETR
from algm_cli.models.vit import ViTEncoder


def test_dropped_class_token_and_bicubic_resize_equal_mmseg_arithmetic():
    torch.manual_seed(0)
    enc = ViTEncoder("vit_t", 64, class_token=False, pos_resize="bicubic").eval()
    images = torch.randn(2, 3, 48, 80)  # a 3 x 5 grid: the 4 x 4 embeddings are resized
    with torch.no_grad():
        out = enc(images)
        patches = enc.patch_embed.proj(images).flatten(2).transpose(1, 2)  # (2, 15, 192)
        grid = enc.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False)
        x = patches + pos.flatten(2).transpose(1, 2)  # the class token never enters the blocks
        for blk in enc.blocks:
            x = blk(x)
        ref = enc.norm(x)
    assert out.cls.shape[1] == 0
    torch.testing.assert_close(out.tokens, ref, atol=1e-5, rtol=0)


def test_released_class_token_choices_per_family():
    assert SETR("vit_t", 3, "naive", 64).encoder.prefix == 1
    assert SETR("vit_t", 3, "mla", 64).encoder.prefix == 0
    assert SETR("vit_t", 3, "mla", 64, class_token=True).encoder.prefix == 1
    segvit = SegViT("vit_t", 3, 64)
    assert segvit.encoder.prefix == 0 and segvit.encoder.pos_resize == "bicubic"
