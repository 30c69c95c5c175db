"""Ragged (packed) execution: adaptive merging at batch size > 1 without the batch minimum.

With `batching="min"` (the paper's rule, default) every image of a batch merges the batch
minimum of the per-image counts. With `batching="ragged"` each image merges exactly what it would
merge alone (batch size 1), and the batch is stored packed: all kept tokens of all images in one
(sum L_i, C) tensor plus per-image lengths. LayerNorms, qkv, projections and MLPs run once on the
packed tensor, so no work is spent on padding; attention runs per image.

Attention choice: one scaled_dot_product_attention call per image on views of the packed qkv.
Attention is the only per-image part, so a loop of B fused calls costs B kernel launches and no
padded work; padding to the longest image with an additive key mask (one SDPA call) would spend
attention work on padding, and CPU builds of torch have no varlen kernel. (Not measured against
the padded form; scripts/bench_ragged.py measures the end-to-end effect.)
Merge steps also run per image (each on a (1, L_i, C) view with the batch-size-1 merge core), which
is what makes every image's merges identical to its batch-size-1 merges; they are a few
milliseconds per forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..merge import MergeState
from .blocks import embed, mlp_residual, packed_attention, packed_block
from .schedule import apply_step


def _merge_each(spec, schedule, x, lengths, states, grid, parts):
    """Merge every image's patch tokens on its own; return (packed x, lengths, states)."""
    pieces, new_states = [], []
    for i, (chunk, state) in enumerate(zip(x.split(lengths), states)):
        metric = None
        if schedule.metric != "tokens":
            q, k, v = parts[i]
            metric = {"queries": q, "keys": k, "values": v}[schedule.metric].mean(1)[:, 1:]
        patches, state = apply_step(spec, schedule, chunk[None, 1:], state, grid, metric)
        pieces.append(torch.cat([chunk[None, :1], patches], dim=1)[0])
        new_states.append(state)
    return torch.cat(pieces), [p.shape[0] for p in pieces], new_states


def encode_ragged(encoder, images: Tensor, schedule) -> tuple[Tensor, list[int], list, tuple, dict]:
    """Return (packed final tokens (T, C) incl. class tokens, lengths, states, grid, stats)."""
    if schedule.proportional_attention:
        raise ValueError("ragged batching does not support proportional attention")
    B = images.shape[0]
    x, grid = embed(encoder, images)  # (B, 1 + N, C)
    lengths = [x.shape[1]] * B
    x = x.reshape(-1, x.shape[-1])  # packed (T, C)
    states = [MergeState.start(1, grid[0] * grid[1], device=x.device, dtype=x.dtype)
              for _ in range(B)]
    kept: dict[str, list[float]] = {}
    for layer, blk in enumerate(encoder.blocks, start=1):
        spec = schedule.at(layer)
        out, parts = packed_attention(blk.attn, blk.norm1(x), lengths)
        x = x + blk.drop_path1(blk.ls1(out))
        if spec is not None and schedule.placement == "between":
            x, lengths, states = _merge_each(spec, schedule, x, lengths, states, grid, parts)
        x = mlp_residual(blk, x)
        if spec is not None and schedule.placement == "after_mlp":
            x, lengths, states = _merge_each(spec, schedule, x, lengths, states, grid, None)
        if spec is not None:
            kept[spec.label] = [s.num_tokens / s.num_original for s in states]
    stats = {k: sum(v) / len(v) for k, v in kept.items()}
    return encoder.norm(x), lengths, states, grid, stats


def decode_ragged(decoder, tokens: Tensor, lengths: list[int]) -> list[Tensor]:
    """Return per-image class scores [(N_i, K)] from packed patch tokens (T, C) of `lengths`."""
    if not hasattr(decoder, "blocks"):  # the linear decoder acts per token
        return list(decoder(tokens).split(lengths))
    K = decoder.num_classes
    projected = decoder.proj_dec(tokens)
    pieces = [torch.cat([p, decoder.cls_emb[0]]) for p in projected.split(lengths)]
    full = [n + K for n in lengths]
    x = torch.cat(pieces)
    for blk in decoder.blocks:
        x = packed_block(blk, x, full)
    x = decoder.decoder_norm(x)
    scores = []
    for chunk, n in zip(x.split(full), lengths):
        patches = F.normalize(chunk[:n] @ decoder.proj_patch, dim=-1)
        classes = F.normalize(chunk[n:] @ decoder.proj_classes, dim=-1)
        scores.append(decoder.mask_norm(patches @ classes.T))
    return scores


def forward_ragged(model, images: Tensor) -> tuple[Tensor, dict]:
    """Return (per-token class scores unmerged to (B, N, K), stats) for a Segmenter, packed."""
    tokens, lengths, states, grid, stats = encode_ragged(model.encoder, images, model.schedule)
    pieces = tokens.split(lengths)
    patches = torch.cat([p[1:] for p in pieces])  # drop each image's class token
    scores = decode_ragged(model.decoder, patches, [n - 1 for n in lengths])
    full = torch.cat([s.unmerge(sc[None]) for s, sc in zip(states, scores)])  # (B, N, K)
    return full, stats, grid
