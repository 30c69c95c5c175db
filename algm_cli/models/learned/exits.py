"""Early token exit on a plain ViT with auxiliary heads: the engine of DToP, DoViT and PAUMER.

After each exit layer an auxiliary head (LayerNorm + Linear, per token) predicts class scores for
the still-active patch tokens; the method's rule marks tokens that leave. Leaving tokens keep
their features of that layer (and their head logits) and skip every later block: they are
neither queries nor keys/values any more. After the last block every token is put back at its
grid position (active tokens with their final features, exited ones with their frozen features),
the final norm runs on the full grid, and the model's decoder reads it. For DToP the exited
tokens' predictions are then replaced by their head's logits (`logits_from="head"`); DoViT and
PAUMER keep the decoder's (`logits_from="decoder"`).

Batching (the project's rule, as ALGM's): every image of a batch drops the batch minimum of its
own eligible counts, choosing its highest-scoring eligible tokens; at B = 1 it is per image.
Prefix tokens (class token, registers) never exit; an encoder without a class token
(`class_token=False`, SegViT's released layout) has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import MergeStats
from ..blocks import embed, full_block
from ..vit import ViTEncoder

CRITERIA = ("confidence", "entropy")


@dataclass(frozen=True)
class ExitSpec:
    """Where tokens may exit and by which rule.

    layers: 1-based layers after which a head decides (each < depth).
    threshold: confidence: exit when max softmax prob > threshold (DToP p0, DoViT exit_conf);
      entropy: exit when entropy / log(K) < threshold (PAUMER).
    keep_per_class: DToP keeps the k most confident eligible tokens of each predicted class.
    logits_from: "head" (exited tokens predicted by their head, DToP) or "decoder".
    aux_weight: weight of each head's cross-entropy in the training loss.
    """

    method: str
    layers: tuple[int, ...]
    threshold: float
    criterion: str = "confidence"
    keep_per_class: int = 0
    logits_from: str = "decoder"
    aux_weight: float = 0.4

    def check(self, depth: int) -> None:
        """Raise ValueError for layers outside 1..depth-1, a bad criterion or threshold."""
        for layer in self.layers:
            if not 1 <= layer < depth:
                raise ValueError(f"{self.method}: exit layer {layer} must lie in 1..{depth - 1}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"{self.method}: criterion {self.criterion!r}; expected {CRITERIA}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"{self.method}: merge.setting={self.threshold} must lie in [0, 1]")
        if self.logits_from not in ("head", "decoder"):
            raise ValueError(f"{self.method}: logits_from must be head or decoder")


class ExitHeads(nn.Module):
    """One per-token classifier (LayerNorm + Linear) per exit layer."""

    def __init__(self, layers: tuple[int, ...], dim: int, num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({str(layer): nn.Sequential(nn.LayerNorm(dim),
                                                              nn.Linear(dim, num_classes))
                                    for layer in layers})

    def forward(self, layer: int, tokens: Tensor) -> Tensor:
        """Return logits (B, n, K) of the head after `layer` for tokens (B, n, C)."""
        return self.heads[str(layer)](tokens)


@dataclass
class ExitOutput:
    """Full-grid tokens after the final norm and what the exits did."""

    tokens: Tensor  # (B, N, C) normed, every token at its grid position
    cls: Tensor  # (B, P, C) prefix tokens (class token, registers; P = 0 without a class token)
    grid: tuple[int, int]
    stats: MergeStats
    layers: dict[int, Tensor]  # requested layer -> (B, N, C) full grid after that layer
    exit_logits: Tensor  # (B, N, K) head logits of exited tokens (0 elsewhere)
    exited: Tensor  # (B, N) bool
    aux: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (logits (B,n,K), index (B,n))


def exit_scores(logits: Tensor, spec: ExitSpec) -> tuple[Tensor, Tensor]:
    """Return (score (B, n): higher exits first, eligible (B, n) bool) for head logits (B, n, K)."""
    probs = logits.float().softmax(-1)
    if spec.criterion == "entropy":
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(probs.shape[-1])
        return -entropy, entropy < spec.threshold
    conf, pred = probs.max(-1)
    eligible = conf > spec.threshold
    if spec.keep_per_class > 0:
        eligible &= ~top_per_class(conf, pred, eligible, logits.shape[-1], spec.keep_per_class)
    return conf, eligible


def top_per_class(conf: Tensor, pred: Tensor, eligible: Tensor, classes: int, k: int) -> Tensor:
    """Return (B, n) bool: the k most confident eligible tokens of each predicted class."""
    B, n = conf.shape
    per_class = torch.full((B, classes, n), -1.0, device=conf.device)
    masked = torch.where(eligible, conf, torch.full_like(conf, -1.0))
    per_class.scatter_(1, pred[:, None, :], masked[:, None, :])  # (B, K, n)
    top = per_class.topk(min(k, n), dim=-1)
    keep = torch.zeros(B, classes, n, dtype=torch.bool, device=conf.device)
    keep.scatter_(-1, top.indices, top.values >= 0)
    return keep.any(1)


def choose_exits(score: Tensor, eligible: Tensor) -> Tensor:
    """Return (B, m) positions leaving: each image's m best eligible, m = batch minimum count."""
    m = int(eligible.sum(1).min())  # may be 0: the empty topk still depends on the scores
    ranked = torch.where(eligible, score.float(), torch.full_like(score.float(), -math.inf))
    return ranked.topk(m, dim=1).indices


def _scatter(full: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """Return full (B, N, D) with rows `index` (B, n) set to values (B, n, D)."""
    return full.scatter(1, index[..., None].expand(-1, -1, full.shape[-1]), values)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """Return x (B, n, D) rows at index (B, m)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def exit_encode(encoder: ViTEncoder, images: Tensor, heads: ExitHeads, spec: ExitSpec,
                num_classes: int, outputs: tuple[int, ...] = ()) -> ExitOutput:
    """Return the full-grid encoding of images (B, 3, H, W) with tokens exiting as `spec` says."""
    x, grid = embed(encoder, images)  # (B, P + N, C), P prefix tokens (0 when class_token=False)
    P = getattr(encoder, "prefix", 1)
    B, N = x.shape[0], x.shape[1] - P
    cls, active = x[:, :P], x[:, P:]
    index = torch.arange(N, device=x.device).expand(B, N)  # grid position of each active token
    frozen = torch.zeros_like(active)  # exited tokens' features, at their grid positions
    exit_logits = active.new_zeros(B, N, num_classes)
    exited = torch.zeros(B, N, dtype=torch.bool, device=x.device)
    stats: MergeStats = {}
    layers: dict[int, Tensor] = {}
    aux: list[tuple[Tensor, Tensor]] = []
    exits = set(spec.layers)
    for layer, blk in enumerate(encoder.blocks, 1):
        x = full_block(blk, torch.cat([cls, active], dim=1))
        cls, active = x[:, :P], x[:, P:]
        if layer in outputs:
            layers[layer] = _scatter(frozen, index, active)
        if layer not in exits:
            continue
        logits = heads(layer, active)  # (B, n, K)
        aux.append((logits, index))
        leave = choose_exits(*exit_scores(logits.detach(), spec))  # (B, m) into active
        # recorded even when m = 0, so that a traced count (fvcore) keeps the head's FLOPs
        where = index.gather(1, leave)  # (B, m) grid positions
        frozen = _scatter(frozen, where, _gather(active, leave))
        exit_logits = _scatter(exit_logits, where, _gather(logits, leave).to(exit_logits.dtype))
        exited = exited.scatter(1, where, torch.ones_like(where, dtype=torch.bool))
        if leave.shape[1]:
            stay = torch.ones(B, active.shape[1], dtype=torch.bool, device=x.device)
            stay = stay.scatter(1, leave, torch.zeros_like(leave, dtype=torch.bool))
            keep = stay.nonzero()[:, 1].reshape(B, -1)  # (B, n - m), order kept
            active, index = _gather(active, keep), index.gather(1, keep)
        stats[f"L{layer}:{spec.method}"] = active.shape[1] / N
    full = encoder.norm(torch.cat([cls, _scatter(frozen, index, active)], dim=1))
    return ExitOutput(full[:, P:], full[:, :P], grid, stats, layers, exit_logits, exited, aux)


def use_head_logits(logits: Tensor, out: ExitOutput) -> Tensor:
    """Return logits (B, K, H, W) of the padded image with exited cells taken from their head."""
    B, K = logits.shape[:2]
    gh, gw = out.grid
    head = out.exit_logits.transpose(1, 2).reshape(B, K, gh, gw)
    head = F.interpolate(head, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    mask = out.exited.reshape(B, 1, gh, gw).float()
    mask = F.interpolate(mask, size=logits.shape[-2:], mode="nearest").bool()
    return torch.where(mask, head.to(logits.dtype), logits)


def token_labels(labels: Tensor, grid: tuple[int, int]) -> Tensor:
    """Return (B, N) long: the label at each patch's centre pixel (labels (B, H, W), padded grid)."""
    gh, gw = grid
    H, W = labels.shape[-2:]
    rows = (torch.arange(gh, device=labels.device) * H // gh + H // (2 * gh)).clamp(max=H - 1)
    cols = (torch.arange(gw, device=labels.device) * W // gw + W // (2 * gw)).clamp(max=W - 1)
    return labels[:, rows][:, :, cols].reshape(labels.shape[0], -1).long()


def aux_loss(out: ExitOutput, labels: Tensor, ignore_index: int, weight: float) -> Tensor:
    """Return weight x the sum over heads of CE on the tokens each head saw (at centre pixels)."""
    if not out.aux:
        return labels.new_zeros((), dtype=torch.float32)
    target = token_labels(labels, out.grid)  # (B, N)
    losses = [F.cross_entropy(logits.float().flatten(0, 1), target.gather(1, index).flatten(),
                              ignore_index=ignore_index) for logits, index in out.aux]
    return weight * torch.stack(losses).nan_to_num(0.0).sum()
