"""Mask2Former's transformer decoder: learned queries, masked cross-attention over the scales.

Layout (facebookresearch/Mask2Former `MultiScaleMaskedTransformerDecoder`; mmdet's layer order
in EVA's config: cross-attention, norm, self-attention, norm, FFN, norm):
- `queries` learned query features and learned query position embeddings;
- layer i cross-attends to the pixel decoder's level i mod 3 (coarsest first), whose keys carry
  the sine position + a learned level embedding; the attention is masked to where the previous
  prediction's mask is >= 0.5 at that level's resolution (a query whose mask is empty anywhere
  attends everywhere);
- a prediction head (LayerNorm, class Linear to K + 1, 3-layer MLP mask embedding dotted with
  the stride-4 mask features) runs before the first layer and after every layer; all but the
  last prediction feed deep supervision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pixel_decoder import sine_position

Prediction = tuple[Tensor, Tensor]  # (class logits (B, Q, K+1), mask logits (B, Q, h4, w4))


class DecoderLayer(nn.Module):
    """Masked cross-attention, self-attention, ReLU FFN; each followed by residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, q: Tensor, qpos: Tensor, memory: Tensor, mpos: Tensor,
                mask: Tensor | None) -> Tensor:
        """Return (B, Q, dim); memory (B, S, dim); mask (B * heads, Q, S) True = not attended."""
        out = self.cross(q + qpos, memory + mpos, memory, attn_mask=mask, need_weights=False)[0]
        q = self.norm1(q + out)
        out = self.self_attn(q + qpos, q + qpos, q, need_weights=False)[0]
        q = self.norm2(q + out)
        return self.norm3(q + self.fc2(F.relu(self.fc1(q))))


class MaskedDecoder(nn.Module):
    """Learned queries refined over `layers` layers; returns every layer's prediction."""

    def __init__(self, dim: int, num_classes: int, queries: int = 100, layers: int = 9,
                 heads: int = 8, ffn: int = 2048, mask_dim: int = 256) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.query_feat = nn.Embedding(queries, dim)
        self.query_pos = nn.Embedding(queries, dim)
        self.level_embed = nn.Embedding(3, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                        nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                        nn.Linear(dim, mask_dim))

    def predict(self, q: Tensor, mask_features: Tensor,
                size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Return (class logits, mask logits (B, Q, h4, w4), attention mask for a level of `size`)."""
        q = self.norm(q)
        classes = self.class_embed(q)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(q), mask_features)
        small = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        blocked = small.sigmoid().flatten(2) < 0.5  # (B, Q, h * w)
        blocked[blocked.all(-1)] = False  # an empty mask attends everywhere
        return classes, masks, blocked.repeat_interleave(self.heads, dim=0).detach()

    def forward(self, maps: list[Tensor], mask_features: Tensor) -> list[Prediction]:
        """Return [(class logits, mask logits)] for the layers 0..L; maps: 3 levels, coarsest first."""
        B = mask_features.shape[0]
        sizes = [(int(m.shape[2]), int(m.shape[3])) for m in maps]
        memories = [m.flatten(2).transpose(1, 2) for m in maps]  # (B, h*w, dim)
        positions = [(sine_position(h, w, self.dim, m.device) + self.level_embed.weight[i])
                     .to(m.dtype)[None] for i, ((h, w), m) in enumerate(zip(sizes, memories))]
        q = self.query_feat.weight[None].expand(B, -1, -1)
        qpos = self.query_pos.weight[None].expand(B, -1, -1)
        classes, masks, blocked = self.predict(q, mask_features, sizes[0])
        out = [(classes, masks)]
        for i, layer in enumerate(self.layers):
            level = i % len(maps)
            q = layer(q, qpos, memories[level], positions[level], blocked)
            classes, masks, blocked = self.predict(q, mask_features, sizes[(i + 1) % len(maps)])
            out.append((classes, masks))
        return out
