"""Ragged (packed) execution: adaptive merging at batch size > 1 without the batch minimum.

With `batching="min"` (the paper's rule, default) every image of a batch merges the batch
minimum of the per-image counts. With `batching="ragged"` each image merges exactly what it would
merge alone (batch size 1), and the batch is stored packed: all kept tokens of all images in one
(T = sum L_i, C) tensor plus per-image lengths, each image's class token first. LayerNorms, qkv,
projections, MLPs and merge steps (`merge.packed`: one vectorised pass, no loop over images) run
once on the packed tensor, so no work is spent on padding; attention runs through
`packed_attention.packed_sdpa` (varlen / nested / flex / per-image loop, `backend`, "auto" picks
what this torch offers). Proportional attention adds each key's log-size (class token: 0) as the
batch-size-1 encoder does. Host syncs: one per merge step (the new per-image counts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..merge.packed import PackedState, exclusive_cumsum, packed_clap, packed_gbm, packed_tome
from .blocks import attention_output, embed, mlp_residual
from .packed_attention import packed_sdpa


def packed_attention(attn: nn.Module, x: Tensor, lengths: list[int], backend: str = "auto",
                     bias: Tensor | None = None) -> tuple[Tensor, tuple]:
    """Return (timm Attention output (T, C), packed (q, k, v) each (T, heads, d)) for x (T, C)."""
    T = x.shape[0]
    q, k, v = attn.qkv(x).reshape(T, 3, attn.num_heads, -1).unbind(1)  # one matmul for the batch
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = packed_sdpa(q, k, v, lengths, backend, bias, dropout).reshape(T, -1)
    return attention_output(attn, out, x), (q, k, v)


def packed_block(blk: nn.Module, x: Tensor, lengths: list[int], backend: str = "auto") -> Tensor:
    """Return a timm Block's output on packed tokens x (T, C), attention within each image."""
    out, _ = packed_attention(blk.attn, blk.norm1(x), lengths, backend)
    return mlp_residual(blk, x + blk.drop_path1(blk.ls1(out)))


def layout(counts: Tensor, total: int, extra: int, first: bool = True) -> tuple[Tensor, Tensor]:
    """Return (extra positions (B, extra), member positions (total,)) of packed images.

    Image b holds counts[b] members and `extra` more tokens, before them (first=True) or after;
    positions index the packed sequence of all images.
    """
    starts = exclusive_cumsum(counts + extra)  # (B,)
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts,
                                  output_size=total)
    members = torch.arange(total, device=counts.device) + (seg + int(first)) * extra
    lead = starts if first else starts + counts
    return lead[:, None] + torch.arange(extra, device=counts.device), members


def interleave(extra: Tensor, members: Tensor, counts: Tensor, first: bool = True) -> Tensor:
    """Return packed images [extra[b], members of b] (or [members, extra[b]] with first=False).

    extra: (B, P, C) per-image tokens; members: (sum counts, C) packed.
    """
    B, P, C = extra.shape
    lead, rest = layout(counts, members.shape[0], P, first)
    out = members.new_empty(B * P + members.shape[0], C)
    return out.index_copy(0, lead.reshape(-1), extra.reshape(B * P, C)).index_copy(0, rest, members)


def packed_step(spec, schedule, x: Tensor, state: PackedState, grid, metric) -> tuple:
    """Run one merge step on packed patch tokens x (sum N_i, C); return (tokens, state)."""
    common = dict(metric=metric, value=schedule.value, reduce=schedule.reduce)
    if spec.method == "clap":
        return packed_clap(x, state, grid, schedule.window, spec.threshold,
                           inclusive=schedule.inclusive, **common)
    if spec.method == "gbm":
        if spec.rule == "released":
            return packed_gbm(x, state, threshold_rule="released", layer=spec.layer, **common)
        return packed_gbm(x, state, threshold=spec.threshold, inclusive=schedule.inclusive,
                          **common)
    return packed_tome(x, state, r=spec.r, **common)


def _merge_packed(spec, schedule, x, state, grid, qkv):
    """Merge every image's patch tokens of packed x (class tokens first); return (x, lengths, state)."""
    counts = state.counts_tensor()
    first, rest = layout(counts, sum(state.counts), 1)
    cls, patches = x.index_select(0, first[:, 0]), x.index_select(0, rest)
    metric = None
    if schedule.metric != "tokens":
        chosen = dict(zip(("queries", "keys", "values"), qkv))[schedule.metric]
        metric = chosen.mean(1).index_select(0, rest)  # (sum N_i, d): averaged over heads
    patches, state = packed_step(spec, schedule, patches, state, grid, metric)
    x = interleave(cls[:, None], patches, state.counts_tensor())
    return x, [c + 1 for c in state.counts], state


def size_bias(state: PackedState) -> Tensor:
    """Return (T,) per-key log-sizes of packed [class token, patches] images (class token: 0)."""
    counts = state.counts_tensor()
    sizes = interleave(state.sizes.new_ones(len(counts), 1, 1), state.sizes[:, None], counts)
    return sizes[:, 0].log()


def encode_ragged(encoder, images: Tensor, schedule, backend: str = "auto") -> tuple:
    """Return (packed final tokens (T, C) incl. class tokens, lengths, state, grid, stats)."""
    B = images.shape[0]
    x, grid = embed(encoder, images)  # (B, 1 + N, C)
    lengths = [x.shape[1]] * B
    x = x.reshape(-1, x.shape[-1])  # packed (T, C)
    state = PackedState.start(B, grid[0] * grid[1], device=x.device, dtype=x.dtype)
    stats: dict[str, float] = {}
    for layer, blk in enumerate(encoder.blocks, start=1):
        spec = schedule.at(layer)
        merged = sum(state.counts) < B * state.num_original
        bias = size_bias(state) if schedule.proportional_attention and merged else None
        out, qkv = packed_attention(blk.attn, blk.norm1(x), lengths, backend, bias)
        x = x + blk.drop_path1(blk.ls1(out))
        if spec is not None and schedule.placement == "between":
            x, lengths, state = _merge_packed(spec, schedule, x, state, grid, qkv)
        x = mlp_residual(blk, x)
        if spec is not None and schedule.placement == "after_mlp":
            x, lengths, state = _merge_packed(spec, schedule, x, state, grid, None)
        if spec is not None:
            stats[spec.label] = sum(state.kept_fractions()) / B
    return encoder.norm(x), lengths, state, grid, stats


def decode_ragged(decoder, patches: Tensor, sizes: tuple[int, ...], backend: str = "auto") -> Tensor:
    """Return packed class scores (sum N_i, K) from packed patch tokens, N_i = sizes[i]."""
    if not hasattr(decoder, "blocks"):  # the linear decoder acts per token
        return decoder(patches)
    B, K = len(sizes), decoder.num_classes
    counts = torch.tensor(sizes, device=patches.device)
    projected = decoder.proj_dec(patches)
    # class embeddings after each image's patches, as the batched decoder orders them
    x = interleave(decoder.cls_emb.expand(B, -1, -1), projected, counts, first=False)
    lengths = [n + K for n in sizes]
    for blk in decoder.blocks:
        x = packed_block(blk, x, lengths, backend)
    x = decoder.decoder_norm(x)
    lead, rest = layout(counts, patches.shape[0], K, first=False)
    classes = F.normalize(x[lead] @ decoder.proj_classes, dim=-1)  # (B, K, C)
    tokens = F.normalize(x.index_select(0, rest) @ decoder.proj_patch, dim=-1)  # (sum N_i, C)
    # per-image masks as one padded batched matmul: (B, max N, C) @ (B, C, K)
    seg = torch.repeat_interleave(torch.arange(B, device=x.device), counts,
                                  output_size=tokens.shape[0])
    pos = torch.arange(tokens.shape[0], device=x.device) - exclusive_cumsum(counts)[seg]
    padded = tokens.new_zeros(B, max(sizes), tokens.shape[1])
    padded[seg, pos] = tokens
    masks = (padded @ classes.transpose(1, 2))[seg, pos]
    return decoder.mask_norm(masks)


def forward_ragged(model, images: Tensor, backend: str = "auto") -> tuple[Tensor, dict, tuple]:
    """Return (per-token class scores unmerged to (B, N, K), stats, grid) for a Segmenter, packed."""
    tokens, _, state, grid, stats = encode_ragged(model.encoder, images, model.schedule, backend)
    counts = state.counts_tensor()
    _, rest = layout(counts, sum(state.counts), 1)
    scores = decode_ragged(model.decoder, tokens.index_select(0, rest), state.counts, backend)
    return state.unmerge(scores), stats, grid
