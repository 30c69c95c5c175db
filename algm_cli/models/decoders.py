"""Segmenter's decoders, acting per token so they run on merged tokens.

Both map patch tokens (B, N', C) to per-token class scores (B, N', K); the caller unmerges the
scores to the full grid afterwards (the paper's placement: the mask transformer decodes the merged
tokens and each original patch receives the masks of the token it was merged into). Module names
follow the official Segmenter code so its checkpoints load unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn


class LinearDecoder(nn.Module):
    """One linear layer from each patch token to class scores."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """Return per-token class scores (B, N, K)."""
        return self.head(tokens)


class MaskTransformer(nn.Module):
    """Segmenter's mask transformer: class embeddings attend jointly with the patch tokens.

    d_model = encoder dim, heads = dim / 64, FFN 4x, dropout 0.1, 2 blocks; patch and class
    outputs are projected, L2-normalised, multiplied into masks, and LayerNorm-ed over classes.
    norm_eps: LayerNorm eps of the blocks; 1e-5 is Segmenter's `nn.LayerNorm` (official logits),
    1e-6 timm's Block default (this project's behaviour before it matched the official code).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        depth: int = 2,
        dropout: float = 0.1,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        heads = max(1, dim // 64)
        self.scale = dim**-0.5
        self.proj_dec = nn.Linear(dim, dim)
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, proj_drop=dropout, attn_drop=dropout,
                  drop_path=drop_path, norm_layer=partial(nn.LayerNorm, eps=norm_eps))
            for _ in range(depth)
        )
        self.proj_patch = nn.Parameter(self.scale * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(self.scale * torch.randn(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """Return per-token class masks (B, N, K)."""
        B, N, _ = tokens.shape
        x = torch.cat([self.proj_dec(tokens), self.cls_emb.expand(B, -1, -1)], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        patches = F.normalize(x[:, :N] @ self.proj_patch, dim=-1)
        classes = F.normalize(x[:, N:] @ self.proj_classes, dim=-1)
        return self.mask_norm(patches @ classes.transpose(1, 2))


DECODERS = {"linear": LinearDecoder, "mask": MaskTransformer}
