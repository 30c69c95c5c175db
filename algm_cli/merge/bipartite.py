"""Bipartite matching merges: ALGM's GBM (threshold) and ToMe's bipartite soft matching (fixed r).

The current tokens are split alternately into A and B as official ToMe (facebookresearch/ToMe)
and the released GBM (tue-mps/algm-segmenter) split the whole sequence: with the class token at
position 0 of A. Called on the patch tokens with the class token set aside (as the encoders call
them, `class_token=True`, the default), A = odd and B = even patch positions (0-based), so the
result equals the official codes' on the same tokens. `class_token=False` is the split of a
sequence without a class token (A = even positions; ToMe's class_token=False). Each A token keeps
only its edge to its most similar B token (cosine similarity). GBM merges the A tokens whose edge
exceeds a threshold; ToMe merges the r A tokens with the strongest edges. An A token is merged
into its B partner; several A tokens may join the same B token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .counts import (
    batch_count,
    check_threshold,
    eligible_counts,
    released_gbm_threshold,
    top_indices,
)
from .state import MergeState, MergeStep, apply_assignment

THRESHOLD_RULES = ("fixed", "released")


def split_starts(class_token: bool) -> tuple[int, int]:
    """Return the first (A, B) positions of the alternating split of the patch tokens."""
    return (1, 0) if class_token else (0, 1)


def best_edges(metric: Tensor, class_token: bool = True) -> tuple[Tensor, Tensor]:
    """Return (scores, partner), each (B, N_A): every A token's best cosine similarity to B."""
    unit = F.normalize(metric.detach().float(), dim=-1)
    a0, b0 = split_starts(class_token)
    a, b = unit[:, a0::2], unit[:, b0::2]
    if b.shape[1] == 0:
        empty = a.new_zeros(a.shape[0], a.shape[1])
        return empty.fill_(-float("inf")), empty.long()
    scores = a @ b.transpose(1, 2)  # (B, N_A, N_B)
    return scores.max(dim=-1)


def bipartite_assignment(
    selected: Tensor, partner: Tensor, num_tokens: int, class_token: bool = True
) -> tuple[Tensor, int]:
    """Return the (B, N) assignment merging the A tokens `selected` (B, r) into their partners.

    Output order follows ToMe: the unmerged A tokens in their original order, then all B tokens.
    """
    B, r = selected.shape
    a0, b0 = split_starts(class_token)
    n_a, n_b = len(range(a0, num_tokens, 2)), len(range(b0, num_tokens, 2))
    merged = torch.zeros(B, n_a, dtype=torch.bool, device=partner.device)
    merged.scatter_(1, selected, torch.ones_like(selected, dtype=torch.bool))
    keep_a = n_a - r
    unmerged_slot = (~merged).long().cumsum(dim=1) - 1
    assign_a = torch.where(merged, keep_a + partner, unmerged_slot)
    assign = torch.empty(B, num_tokens, dtype=torch.long, device=partner.device)
    assign[:, a0::2] = assign_a
    assign[:, b0::2] = keep_a + torch.arange(n_b, device=partner.device)
    return assign, keep_a + n_b


def _bipartite(
    name: str,
    x: Tensor,
    state: MergeState,
    metric: Tensor | None,
    choose,
    value: str,
    reduce: bool,
    generator: torch.Generator | None,
    class_token: bool,
) -> tuple[Tensor, MergeState]:
    """Run a bipartite merge whose count rule is `choose(scores) -> (count, eligible)`."""
    B, N, _ = x.shape
    if state.sizes.shape != (B, N):
        raise ValueError(
            f"state tracks {tuple(state.sizes.shape)} tokens but x has shape {tuple(x.shape)}"
        )
    metric = x if metric is None else metric
    if metric.shape[:2] != x.shape[:2]:
        raise ValueError(f"metric shape {tuple(metric.shape)} does not match x {tuple(x.shape)}")
    with torch.no_grad():
        scores, partner = best_edges(metric, class_token)
        count, eligible = choose(scores)
        if count == 0:  # nothing to merge: leave the tokens (and their order) untouched, as ToMe
            nothing = MergeStep(name, N, N, eligible)
            return x, MergeState(state.index, state.sizes, state.steps + (nothing,))
        selected = top_indices(scores, count)
        assign, num_out = bipartite_assignment(selected, partner, N, class_token)
    step = MergeStep(name, N, num_out, eligible)
    return apply_assignment(x, state, assign, num_out, step, value, reduce, generator)


def gbm_merge(
    x: Tensor,
    state: MergeState,
    threshold: float | None = None,
    threshold_rule: str = "fixed",
    layer: int | None = None,
    metric: Tensor | None = None,
    inclusive: bool = False,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
    class_token: bool = True,
) -> tuple[Tensor, MergeState]:
    """Global Bipartite Matching: merge A tokens whose best edge to B passes a threshold.

    threshold_rule="fixed" (the paper, Sec. 3.3): an edge merges when its similarity is
      > `threshold` (>= with inclusive=True), the tau found by calibration.
    threshold_rule="released" (tue-mps/algm-segmenter): per forward, tau_l = mean(s) + std(s) / l
      over the A tokens' best scores s (per-image mean and std, averaged over the batch), with
      l = `layer` (1-based); an edge merges when s >= tau_l. `threshold` is ignored.
    Either way each image counts its own eligible edges; with B > 1 every image merges the batch
    minimum, taking its strongest edges. Merged tokens are size-weighted means.
    class_token: x are patch tokens whose class token was set aside (A = odd positions, as
    released); False for a sequence without one (A = even positions).
    """
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}; got {threshold_rule!r}")
    if threshold_rule == "fixed":
        if threshold is None:
            raise ValueError("gbm_merge needs threshold=<tau> (or threshold_rule='released')")
        tau = check_threshold(threshold, "GBM threshold")
    elif layer is None:
        raise ValueError("threshold_rule='released' needs layer=<1-based layer index>")

    def choose(scores: Tensor) -> tuple[int, Tensor]:
        if threshold_rule == "released":
            eligible = eligible_counts(scores, released_gbm_threshold(scores, layer), True)
        else:
            eligible = eligible_counts(scores, tau, inclusive)
        return batch_count(eligible), eligible

    return _bipartite("gbm", x, state, metric, choose, value, reduce, generator, class_token)


def tome_merge(
    x: Tensor,
    state: MergeState,
    r: int,
    metric: Tensor | None = None,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
    class_token: bool = True,
) -> tuple[Tensor, MergeState]:
    """ToMe's bipartite soft matching: merge the r strongest A->B edges; return (tokens, state).

    As in ToMe, r is capped at half the tokens. `state.sizes` gives the sizes for ToMe's
    proportional attention (add log(size) to the attention logits of each key). class_token: as
    in `gbm_merge` (True: the split official ToMe makes with the class token at position 0).
    """
    if int(r) < 0:
        raise ValueError(f"ToMe r must be >= 0; got {r}")
    count = min(int(r), x.shape[1] // 2)
    return _bipartite(
        "tome", x, state, metric, lambda scores: (count, None), value, reduce, generator,
        class_token,
    )
