"""Small independent re-derivations of the released SETR and SegViT inference forwards.

Written from the released code's description (fudan-zvg/SETR `backbones/vit.py`, `vit_mla.py`,
`decode_heads/vit_up_head.py`, `vit_mla_head.py`, `vit_mla_auxi_head.py`; zbwxp/SegVit
`configs/_base_/models/seg_vit-b16.py`, `decode_heads/atm_head.py` on mmseg's `VisionTransformer`)
as plain tensor operations on a state dict in the RELEASED key layout; nothing here imports the
project's models. `released_*_state` draw random weights (fixed seed) under the released names,
including the keys the release keeps but never uses at inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH = 16
SETR_WIDTH, MLA_HEAD_WIDTH = 256, 128
# released depth-12 layouts (0-based block indices): SETR_Naive_Base / SETR_PUP_DeiT /
# SETR_MLA_DeiT configs, SegViT's seg_vit-b16 base config
NAIVE_AUX_12, PUP_AUX_12 = (2, 5, 8), (4, 7, 9, 11)
MLA_TAPS_12, SEGVIT_TAPS_12 = (2, 5, 8, 11), (5, 7, 11)

# ViT parameter names: fudan-zvg/SETR (timm's) and mmseg's VisionTransformer (SegViT)
TIMM = {"blocks": "blocks", "patch": "patch_embed.proj", "norm1": "norm1", "norm2": "norm2",
        "qkv": "attn.qkv.", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
MMSEG = {"blocks": "layers", "patch": "patch_embed.projection", "norm1": "ln1", "norm2": "ln2",
         "qkv": "attn.attn.in_proj_", "proj": "attn.attn.out_proj", "fc1": "ffn.layers.0.0",
         "fc2": "ffn.layers.1"}


# ----------------------------------------------------------------------------- random weights


class Weights(dict):
    """A state dict filled with seeded random tensors by layer kind."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int, scale: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=self.gen) * scale

    def linear(self, name: str, n_out: int, n_in: int, bias: bool = True) -> None:
        self[f"{name}.weight"] = self.randn(n_out, n_in, scale=n_in ** -0.5)
        if bias:
            self[f"{name}.bias"] = self.randn(n_out, scale=0.1)

    def conv(self, name: str, c_out: int, c_in: int, k: int, bias: bool = True) -> None:
        self[f"{name}.weight"] = self.randn(c_out, c_in, k, k, scale=(c_in * k * k) ** -0.5)
        if bias:
            self[f"{name}.bias"] = self.randn(c_out, scale=0.1)

    def layer_norm(self, name: str, c: int) -> None:
        self[f"{name}.weight"] = 1 + self.randn(c, scale=0.2)
        self[f"{name}.bias"] = self.randn(c, scale=0.2)

    def batch_norm(self, name: str, c: int) -> None:
        self.layer_norm(name, c)
        self[f"{name}.running_mean"] = self.randn(c, scale=0.2)
        self[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=self.gen)
        self[f"{name}.num_batches_tracked"] = torch.tensor(100)

    def vit(self, names: dict, dim: int, depth: int, grid: int) -> None:
        """Add a patch-16 ViT under `backbone.` (position embeddings for 1 + grid^2 tokens)."""
        self.conv(f"backbone.{names['patch']}", dim, 3, PATCH)
        self["backbone.cls_token"] = self.randn(1, 1, dim, scale=0.5)
        self["backbone.pos_embed"] = self.randn(1, 1 + grid * grid, dim, scale=0.5)
        for i in range(depth):
            b = f"backbone.{names['blocks']}.{i}."
            self.layer_norm(b + names["norm1"], dim)
            self[b + names["qkv"] + "weight"] = self.randn(3 * dim, dim, scale=dim ** -0.5)
            self[b + names["qkv"] + "bias"] = self.randn(3 * dim, scale=0.1)
            self.linear(b + names["proj"], dim, dim)
            self.layer_norm(b + names["norm2"], dim)
            self.linear(b + names["fc1"], 4 * dim, dim)
            self.linear(b + names["fc2"], dim, 4 * dim)


def released_setr_state(decoder: str, dim: int, depth: int, classes: int, grid: int,
                        seed: int = 0) -> dict:
    """Return random weights of a released SETR (naive / pup / mla) under its mmseg 0.x names."""
    w = Weights(seed)
    w.vit(TIMM, dim, depth, grid)
    if decoder == "mla":
        for k in range(4):
            w.layer_norm(f"backbone.norm_{k}", dim)
            for name, c_in, size in ((f"mla_p{k + 2}_1x1", dim, 1),
                                     (f"mla_p{k + 2}", SETR_WIDTH, 3)):
                w.conv(f"backbone.mla.{name}.0", SETR_WIDTH, c_in, size, bias=False)
                w.batch_norm(f"backbone.mla.{name}.1", SETR_WIDTH)
            head = f"decode_head.mlahead.head{k + 2}"
            w.conv(f"{head}.0", MLA_HEAD_WIDTH, SETR_WIDTH, 3, bias=False)
            w.batch_norm(f"{head}.1", MLA_HEAD_WIDTH)
            w.conv(f"{head}.3", MLA_HEAD_WIDTH, MLA_HEAD_WIDTH, 3, bias=False)
            w.batch_norm(f"{head}.4", MLA_HEAD_WIDTH)
            w.conv(f"auxiliary_head.{k}.aux", classes, SETR_WIDTH, 1, bias=False)
            w.conv(f"auxiliary_head.{k}.conv_seg", classes, 512, 1)  # unused default classifier
        w.conv("decode_head.cls", classes, 4 * MLA_HEAD_WIDTH, 3)
        w.conv("decode_head.conv_seg", classes, 512, 1)
        return dict(w)
    main = (1, 1) if decoder == "naive" else (3, 4)  # (kernel, conv stages before the classifier)
    aux = (1, 1) if decoder == "naive" else (3, 1)
    taps = NAIVE_AUX_12 if decoder == "naive" else PUP_AUX_12
    for prefix, (kernel, stages) in [("decode_head", main)] + [
            (f"auxiliary_head.{j}", aux) for j in range(len(taps))]:
        w.layer_norm(f"{prefix}.norm", dim)
        for k in range(stages):
            w.conv(f"{prefix}.conv_{k}", SETR_WIDTH, dim if k == 0 else SETR_WIDTH, kernel)
            w.batch_norm(f"{prefix}.syncbn_fc_{k}", SETR_WIDTH)
        w.conv(f"{prefix}.conv_{stages}", classes, SETR_WIDTH, 1)
        w.conv(f"{prefix}.conv_seg", classes, 512, 1)
    return dict(w)


def released_segvit_state(dim: int, depth: int, heads: int, classes: int, grid: int,
                          seed: int = 0, levels: int = 3, layers: int = 3) -> dict:
    """Return random weights of a released SegViT (mmseg ViT + ATM head) under its names."""
    w = Weights(seed)
    w.vit(MMSEG, dim, depth, grid)
    d = dim // 2  # the released configs: embed_dims = in_channels // 2
    for level in range(1, levels + 1):
        w.linear(f"decode_head.input_proj_{level}", d, dim)
        w.layer_norm(f"decode_head.proj_norm_{level}", d)
        for j in range(layers):
            p = f"decode_head.decoder_{level}.layers.{j}."
            w[p + "self_attn.in_proj_weight"] = w.randn(3 * d, d, scale=d ** -0.5)
            w[p + "self_attn.in_proj_bias"] = w.randn(3 * d, scale=0.1)
            w.linear(p + "self_attn.out_proj", d, d)
            for name in ("q", "k", "v", "proj"):
                w.linear(p + f"multihead_attn.{name}", d, d)
            w.linear(p + "linear1", 4 * d, d)
            w.linear(p + "linear2", d, 4 * d)
            for n in (1, 2, 3):
                w.layer_norm(p + f"norm{n}", d)
    w["decode_head.q.weight"] = w.randn(classes, d)
    w.linear("decode_head.class_embed", classes + 1, d)
    empty = torch.ones(classes + 1)
    empty[-1] = 0.1
    w["decode_head.loss_decode.criterion.empty_weight"] = empty  # ATMLoss's buffer
    return dict(w)


# ----------------------------------------------------------------------------- operations


def layer_norm(x: Tensor, sd: dict, name: str, eps: float) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def dense(x: Tensor, sd: dict, name: str) -> Tensor:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def heads_of(x: Tensor, heads: int) -> Tensor:
    """(B, L, C) -> (B, heads, L, C / heads)."""
    B, L, C = x.shape
    return x.reshape(B, L, heads, C // heads).permute(0, 2, 1, 3)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, L, d) -> (B, L, heads * d)."""
    B, h, L, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, L, h * d)


def softmax_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Return (softmax(q k^T / sqrt(d)) v, the scaled logits q k^T / sqrt(d))."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return logits.softmax(dim=-1) @ v, logits


def conv_bn_relu(x: Tensor, sd: dict, conv: str, bn: str) -> Tensor:
    """Conv (same padding, bias if stored) + BatchNorm (running statistics) + ReLU."""
    weight = sd[f"{conv}.weight"]
    x = F.conv2d(x, weight, sd.get(f"{conv}.bias"), padding=weight.shape[-1] // 2)
    scale = sd[f"{bn}.weight"] / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5)
    x = (x - sd[f"{bn}.running_mean"][:, None, None]) * scale[:, None, None]
    return torch.relu(x + sd[f"{bn}.bias"][:, None, None])


def as_map(tokens: Tensor) -> Tensor:
    """(B, g*g, C) -> (B, C, g, g) (square grids only, as in the released code)."""
    B, N, C = tokens.shape
    g = math.isqrt(N)
    return tokens.transpose(1, 2).reshape(B, C, g, g)


def vit_blocks(sd: dict, names: dict, images: Tensor, heads: int, keep_cls: bool,
               pos_mode: str | None = None) -> list[Tensor]:
    """Return every block's output (B, [1 +] N, C); LayerNorm eps 1e-6, no final norm.

    The class token is concatenated, the position embeddings added (resized with `pos_mode` from
    their stored square grid when it differs from the image's, mmseg's forward rule), and the
    class token dropped before the blocks unless keep_cls.
    """
    w = sd[f"backbone.{names['patch']}.weight"]
    x = F.conv2d(images, w, sd[f"backbone.{names['patch']}.bias"], stride=PATCH)
    B, C, gh, gw = x.shape
    x = torch.cat([sd["backbone.cls_token"].expand(B, -1, -1), x.flatten(2).transpose(1, 2)], 1)
    pos = sd["backbone.pos_embed"]
    if pos.shape[1] != x.shape[1]:
        side = math.isqrt(pos.shape[1] - 1)
        grid = pos[:, 1:].reshape(1, side, side, C).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode=pos_mode, align_corners=False)
        pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    x = x + pos
    if not keep_cls:
        x = x[:, 1:]
    outs = []
    depth = len({k.split(".")[2] for k in sd if k.startswith(f"backbone.{names['blocks']}.")})
    for i in range(depth):
        b = f"backbone.{names['blocks']}.{i}."
        h = layer_norm(x, sd, b + names["norm1"], 1e-6)
        qkv = h @ sd[b + names["qkv"] + "weight"].T + sd[b + names["qkv"] + "bias"]
        q, k, v = (heads_of(t, heads) for t in qkv.chunk(3, dim=-1))
        x = x + dense(merge_heads(softmax_attention(q, k, v)[0]), sd, b + names["proj"])
        h = layer_norm(x, sd, b + names["norm2"], 1e-6)
        x = x + dense(F.gelu(dense(h, sd, b + names["fc1"])), sd, b + names["fc2"])
        outs.append(x)
    return outs


# ----------------------------------------------------------------------------- SETR


def up_head(sd: dict, prefix: str, tokens: Tensor, scales: tuple[int, ...], size: int) -> Tensor:
    """SETR's VisionTransformerUpHead: class token off, LayerNorm, conv stages, classifier."""
    x = layer_norm(tokens[:, 1:], sd, f"{prefix}.norm", 1e-6)  # 1 + g*g is never a multiple of 48
    x = as_map(x)
    for k, scale in enumerate(scales):
        x = conv_bn_relu(x, sd, f"{prefix}.conv_{k}", f"{prefix}.syncbn_fc_{k}")
        if scale > 1:
            x = F.interpolate(x, size=x.shape[-1] * scale, mode="bilinear", align_corners=False)
    last = f"{prefix}.conv_{len(scales)}"  # the classifier
    x = F.conv2d(x, sd[f"{last}.weight"], sd[f"{last}.bias"])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def setr_forward(sd: dict, decoder: str, images: Tensor, heads: int) -> tuple[Tensor, list[Tensor]]:
    """Return the released SETR's (logits (B, K, H, W), [auxiliary logits]) for square images."""
    size = images.shape[-1]
    if decoder == "mla":
        outs = vit_blocks(sd, TIMM, images, heads, keep_cls=False)
        c = [as_map(layer_norm(outs[t], sd, f"backbone.norm_{j}", 1e-6))
             for j, t in enumerate(MLA_TAPS_12)]
        lateral = [conv_bn_relu(c[j], sd, f"backbone.mla.mla_p{j + 2}_1x1.0",
                                f"backbone.mla.mla_p{j + 2}_1x1.1") for j in range(4)]
        summed = [lateral[3]]
        for j in (2, 1, 0):  # p4 = p5 + l4, p3 = p4 + l3, p2 = p3 + l2
            summed.insert(0, summed[0] + lateral[j])
        feats = [conv_bn_relu(summed[j], sd, f"backbone.mla.mla_p{j + 2}.0",
                              f"backbone.mla.mla_p{j + 2}.1") for j in range(4)]
        ups = []
        for j, f in enumerate(feats):
            h = f"decode_head.mlahead.head{j + 2}"
            x = conv_bn_relu(conv_bn_relu(f, sd, f"{h}.0", f"{h}.1"), sd, f"{h}.3", f"{h}.4")
            ups.append(F.interpolate(x, size=4 * f.shape[-1], mode="bilinear", align_corners=True))
        x = F.conv2d(torch.cat(ups, 1), sd["decode_head.cls.weight"], sd["decode_head.cls.bias"],
                     padding=1)
        logits = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        aux = [F.interpolate(F.conv2d(f, sd[f"auxiliary_head.{j}.aux.weight"]), size=size,
                             mode="bilinear", align_corners=False) for j, f in enumerate(feats)]
        return logits, aux
    outs = vit_blocks(sd, TIMM, images, heads, keep_cls=True)
    main, aux_scales, taps = {"naive": ((1,), (1,), NAIVE_AUX_12),
                              "pup": ((2, 2, 2, 1), (4,), PUP_AUX_12)}[decoder]
    logits = up_head(sd, "decode_head", outs[-1], main, size)  # PUP: the last x2 reaches `size`
    aux = [up_head(sd, f"auxiliary_head.{j}", outs[t], aux_scales, size)
           for j, t in enumerate(taps)]
    return logits, aux


# ----------------------------------------------------------------------------- SegViT


def atm_layer(sd: dict, p: str, q: Tensor, memory: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """One released TPN_DecoderLayer (post-norm); returns (queries, head-mean logits (B, Q, N))."""
    qkv = q @ sd[p + "self_attn.in_proj_weight"].T + sd[p + "self_attn.in_proj_bias"]
    a, b, c = (heads_of(t, heads) for t in qkv.chunk(3, dim=-1))
    out = dense(merge_heads(softmax_attention(a, b, c)[0]), sd, p + "self_attn.out_proj")
    q = layer_norm(q + out, sd, p + "norm1", 1e-5)
    m = p + "multihead_attn."
    out, logits = softmax_attention(heads_of(dense(q, sd, m + "q"), heads),
                                    heads_of(dense(memory, sd, m + "k"), heads),
                                    heads_of(dense(memory, sd, m + "v"), heads))
    q = layer_norm(q + dense(merge_heads(out), sd, m + "proj"), sd, p + "norm2", 1e-5)
    ffn = dense(torch.relu(dense(q, sd, p + "linear1")), sd, p + "linear2")
    return layer_norm(q + ffn, sd, p + "norm3", 1e-5), logits.sum(dim=1) / heads


def segvit_forward(sd: dict, images: Tensor, heads: int, taps=SEGVIT_TAPS_12) -> Tensor:
    """Return the released SegViT's class scores (B, K, H, W) for square images."""
    outs = vit_blocks(sd, MMSEG, images, heads, keep_cls=False, pos_mode="bicubic")
    feats = [outs[t] for t in taps][::-1]  # deepest first
    B = images.shape[0]
    q = sd["decode_head.q.weight"].unsqueeze(0).expand(B, -1, -1)
    masks = []
    layers = len({k.split(".")[3] for k in sd if k.startswith("decode_head.decoder_1.layers.")})
    for level, x in enumerate(feats, start=1):
        memory = layer_norm(dense(x, sd, f"decode_head.input_proj_{level}"), sd,
                            f"decode_head.proj_norm_{level}", 1e-5)
        for j in range(layers):
            q, attn = atm_layer(sd, f"decode_head.decoder_{level}.layers.{j}.", q, memory, heads)
        masks.append(as_map(attn.transpose(1, 2)))  # (B, Q, g, g): the level's last layer
    total = masks[0]
    for m in masks[1:]:
        total = total + F.interpolate(m, size=masks[-1].shape[-2:], mode="bilinear",
                                      align_corners=False)
    total = F.interpolate(total, size=images.shape[-2:], mode="bilinear", align_corners=False)
    probs = dense(q, sd, "decode_head.class_embed").softmax(dim=-1)[..., :-1]  # (B, Q, K)
    return torch.einsum("bqk,bqhw->bkhw", probs, total.sigmoid())
