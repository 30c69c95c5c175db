"""Training-free merges published after ALGM: PiToMe, mutual-pair merging (MPM) and ATC.

Each is a pure function of the patch tokens (the class token kept aside by the caller, as for
every merge in this package) that builds an assignment and hands it to `apply_assignment`, so
sizes, sources and unmerging work as for CLAP and GBM.

- `pitome_merge` (Tran et al., NeurIPS 2024, "Accelerating Transformers with Spectrum-Preserving
  Token Merging"; hchautran/PiToMe `algo/pitome/merge.py`): an energy score
  E_i = mean_j ELU(cos(x_i, x_j) - m) marks tokens in dense, redundant regions; the 2r tokens of
  highest energy are split alternately (in energy order) into A and B, every A token joins its
  most similar B token, the rest are protected. `pitome_margin` gives the released per-layer
  margin (0.9 - 0.8 l / L) or the paper's (0.9 - 0.9 l / L).
- `mutual_pair_merge` (MPM): a token and its most similar other token merge when each is the
  other's nearest neighbour and their similarity passes a threshold. Pairs never chain, so every
  merged token stands for exactly two tokens of the step's input. The grid is restored before
  the decoder by the usual `MergeState.unmerge`. No public code defines this rule; it is written
  from the issue's description, with the batch rule of GBM (batch minimum, best pairs first).
- `atc_merge` (Haurum et al., ECCV 2024, "Agglomerative Token Clustering"; JoakimHaurum/ATC):
  bottom-up hierarchical clustering of the tokens with cosine distance and a linkage
  (average, complete or single) until `num_out` clusters remain; clusters are size-weighted means.
  The release uses scikit-learn's AgglomerativeClustering; here SciPy's `linkage` builds the same
  dendrogram and its first N - num_out merges are replayed, which yields exactly `num_out`
  clusters. It runs on the CPU, image by image (as the release does).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import linkage as scipy_linkage
from torch import Tensor

from .counts import batch_count, check_threshold, top_indices
from .state import MergeState, MergeStep, apply_assignment

LINKAGES = ("average", "complete", "single")
MARGIN_RULES = ("released", "paper")


def pitome_margin(layer: int, depth: int, rule: str = "released") -> float:
    """Return PiToMe's margin m for 1-based `layer` of `depth`: released 0.9 - 0.8 (l-1)/L."""
    if rule not in MARGIN_RULES:
        raise ValueError(f"PiToMe margin rule must be one of {MARGIN_RULES}; got {rule!r}")
    slope = 0.8 if rule == "released" else 0.9
    return 0.9 - slope * (layer - 1) / depth


def energy_scores(metric: Tensor, margin: float, alpha: float = 1.0) -> Tensor:
    """Return (B, N) PiToMe energies: the mean over all tokens j (i included) of ELU(cos - m)."""
    unit = F.normalize(metric.detach().float(), dim=-1)
    sim = unit @ unit.transpose(1, 2)
    return F.elu(sim - margin, alpha=alpha).mean(dim=-1)


def _check_shapes(x: Tensor, state: MergeState, metric: Tensor | None) -> Tensor:
    """Return the metric (x itself by default) after checking it matches x and the state."""
    B, N, _ = x.shape
    if state.sizes.shape != (B, N):
        raise ValueError(f"state tracks {tuple(state.sizes.shape)} tokens but x has shape "
                         f"{tuple(x.shape)}")
    metric = x if metric is None else metric
    if metric.shape[:2] != x.shape[:2]:
        raise ValueError(f"metric shape {tuple(metric.shape)} does not match x {tuple(x.shape)}")
    return metric


def _unchanged(x: Tensor, state: MergeState, name: str, eligible: Tensor | None = None):
    """Return (x, state) with a step recording that nothing merged."""
    N = x.shape[1]
    return x, MergeState(state.index, state.sizes, state.steps + (MergeStep(name, N, N, eligible),))


def pitome_merge(
    x: Tensor,
    state: MergeState,
    r: int,
    margin: float,
    metric: Tensor | None = None,
    alpha: float = 1.0,
    value: str = "mean",
    reduce: bool = True,
) -> tuple[Tensor, MergeState]:
    """PiToMe: merge the r A tokens among the 2r most energetic into their best B partner.

    Output order as released: the protected tokens (energy order), then the B tokens.
    """
    metric = _check_shapes(x, state, metric)
    B, N, _ = x.shape
    r = min(int(r), N // 2)
    if r < 0:
        raise ValueError(f"PiToMe r must be >= 0; got {r}")
    if r == 0:
        return _unchanged(x, state, "pitome")
    with torch.no_grad():
        unit = F.normalize(metric.detach().float(), dim=-1)
        sim = unit @ unit.transpose(1, 2)  # (B, N, N)
        energy = F.elu(sim - margin, alpha=alpha).mean(dim=-1)
        order = energy.argsort(dim=1, descending=True, stable=True)
        a_idx, b_idx, protected = order[:, 0:2 * r:2], order[:, 1:2 * r:2], order[:, 2 * r:]
        a_to_b = sim.gather(1, a_idx[..., None].expand(B, r, N)).gather(
            2, b_idx[:, None, :].expand(B, r, r))  # (B, r, r)
        partner = a_to_b.argmax(dim=-1)  # (B, r) index into b_idx
        kept = N - 2 * r
        assign = torch.empty(B, N, dtype=torch.long, device=x.device)
        slots = torch.arange(N - r, device=x.device).expand(B, N - r)
        assign.scatter_(1, protected, slots[:, :kept])
        assign.scatter_(1, b_idx, slots[:, kept:])
        assign.scatter_(1, a_idx, kept + partner)
    step = MergeStep("pitome", N, N - r)
    return apply_assignment(x, state, assign, N - r, step, value, reduce)


def mutual_pairs(metric: Tensor) -> tuple[Tensor, Tensor]:
    """Return (scores, partner), each (B, N): nearest other token and its cosine similarity.

    scores is -inf where the nearest neighbour is not mutual, and for the second token of a pair
    (so every pair is counted once, at its lower index).
    """
    unit = F.normalize(metric.detach().float(), dim=-1)
    sim = unit @ unit.transpose(1, 2)
    sim.diagonal(dim1=1, dim2=2).fill_(-float("inf"))
    best, partner = sim.max(dim=-1)  # (B, N)
    own = torch.arange(metric.shape[1], device=metric.device).expand_as(partner)
    mutual = partner.gather(1, partner) == own
    first = own < partner
    return best.masked_fill(~(mutual & first), -float("inf")), partner


def mutual_pair_merge(
    x: Tensor,
    state: MergeState,
    threshold: float,
    metric: Tensor | None = None,
    inclusive: bool = False,
    value: str = "mean",
    reduce: bool = True,
) -> tuple[Tensor, MergeState]:
    """MPM: merge mutual nearest-neighbour pairs whose similarity passes `threshold`.

    Each image counts its own qualifying pairs; with B > 1 every image merges the batch minimum,
    its most similar pairs first (GBM's rule). Output order: the surviving tokens in their input
    order, each pair at its lower index.
    """
    tau = check_threshold(threshold, "MPM threshold")
    metric = _check_shapes(x, state, metric)
    B, N, _ = x.shape
    with torch.no_grad():
        scores, partner = mutual_pairs(metric)
        passed = scores >= tau if inclusive else scores > tau
        eligible = passed.sum(dim=1)
        count = batch_count(eligible)
        if count == 0:
            return _unchanged(x, state, "mpm", eligible)
        chosen = top_indices(scores, count)  # (B, count) first members of the merged pairs
        target = torch.arange(N, device=x.device).expand(B, N).clone()
        target.scatter_(1, partner.gather(1, chosen), chosen)  # second member -> first member
        survives = target == torch.arange(N, device=x.device)
        slot = survives.long().cumsum(dim=1) - 1
        assign = slot.gather(1, target)
    step = MergeStep("mpm", N, N - count, eligible)
    return apply_assignment(x, state, assign, N - count, step, value, reduce)


def cluster_labels(unit: np.ndarray, num_out: int, method: str) -> np.ndarray:
    """Return (N,) cluster labels 0..num_out-1 after the first N - num_out agglomerative merges."""
    n = unit.shape[0]
    if num_out >= n:
        return np.arange(n)
    tree = scipy_linkage(unit, method=method, metric="cosine")
    parent = np.arange(2 * n - 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for step, (left, right) in enumerate(tree[: n - num_out, :2].astype(int)):
        parent[root(left)] = parent[root(right)] = n + step
    roots = np.array([root(i) for i in range(n)])
    # labels ordered by each cluster's first member, so output order follows the input
    _, first = np.unique(roots, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[np.searchsorted(np.unique(roots), roots)]


def atc_merge(
    x: Tensor,
    state: MergeState,
    num_out: int,
    linkage: str = "average",
    metric: Tensor | None = None,
    value: str = "mean",
    reduce: bool = True,
) -> tuple[Tensor, MergeState]:
    """ATC: agglomerative clustering (cosine distance, `linkage`) of each image to `num_out` tokens.

    Output order: clusters ordered by their first member in the input order.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"ATC linkage must be one of {LINKAGES}; got {linkage!r}")
    metric = _check_shapes(x, state, metric)
    B, N, _ = x.shape
    num_out = max(1, min(int(num_out), N))
    if num_out == N:
        return _unchanged(x, state, "atc")
    with torch.no_grad():
        unit = F.normalize(metric.detach().float(), dim=-1).cpu().double().numpy()
        labels = [cluster_labels(unit[b], num_out, linkage) for b in range(B)]
        assign = torch.as_tensor(np.stack(labels), dtype=torch.long, device=x.device)
    step = MergeStep("atc", N, num_out)
    return apply_assignment(x, state, assign, num_out, step, value, reduce)
