"""The mask transformer equals official Segmenter's decoder arithmetic (nn.LayerNorm, eps 1e-5).

The reference re-derives rstrudel/segmenter's MaskTransformer forward (segm/model/decoder.py,
segm/model/blocks.py) from its description with plain tensor operations on the same parameters:
pre-norm blocks (LayerNorm eps 1e-5, softmax(q k^T / sqrt(d_head)) v, GELU MLP), final LayerNorm,
projections, L2 normalisation, masks and the LayerNorm over classes.
"""

import math

import torch
import torch.nn.functional as F

from algm_cli.models.decoders import MaskTransformer


def ln(x, mod, eps):
    """LayerNorm over the last dimension with `mod`'s affine parameters."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * mod.weight + mod.bias


def official_decoder(dec: MaskTransformer, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """Return official Segmenter's mask-transformer output (B, N, K) with `dec`'s parameters."""
    B, N, C = tokens.shape
    x = torch.cat([tokens @ dec.proj_dec.weight.T + dec.proj_dec.bias,
                   dec.cls_emb.expand(B, -1, -1)], dim=1)
    d = C // heads
    for blk in dec.blocks:
        h = ln(x, blk.norm1, 1e-5)
        qkv = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).reshape(B, -1, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, -1, C)
        x = x + a @ blk.attn.proj.weight.T + blk.attn.proj.bias
        h = ln(x, blk.norm2, 1e-5)
        h = F.gelu(h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        x = x + h @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    x = ln(x, dec.decoder_norm, 1e-5)
    patches, classes = x[:, :N] @ dec.proj_patch, x[:, N:] @ dec.proj_classes
    patches = patches / patches.norm(dim=-1, keepdim=True)
    classes = classes / classes.norm(dim=-1, keepdim=True)
    return ln(patches @ classes.transpose(1, 2), dec.mask_norm, 1e-5)


def randomised(dec: MaskTransformer) -> MaskTransformer:
    """Give every parameter (LayerNorms included) random values; return dec in eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0) * 0.1)
    return dec.eval()


def test_mask_transformer_equals_official_with_eps_1e5():
    dec = randomised(MaskTransformer(128, 7, depth=2))
    tokens = torch.randn(2, 20, 128) * 0.05
    with torch.no_grad():
        ours, ref = dec(tokens), official_decoder(dec, tokens, heads=2)
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)  # float32: measured 9.6e-6
        dec, tokens = dec.double(), tokens.double()
        ours, ref = dec(tokens), official_decoder(dec, tokens, heads=2)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)


def test_timm_eps_is_one_option_away_and_differs():
    dec = randomised(MaskTransformer(128, 7, depth=2, norm_eps=1e-6)).double()
    tokens = torch.randn(2, 20, 128, dtype=torch.float64) * 0.05
    assert all(blk.norm1.eps == 1e-6 for blk in dec.blocks)
    with torch.no_grad():
        diff = (dec(tokens) - official_decoder(dec, tokens, heads=2)).abs().max()
    assert diff > 1e-6
