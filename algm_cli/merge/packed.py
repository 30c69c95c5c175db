"""Packed merging: CLAP, GBM and ToMe on a packed batch (sum N_i, C), every image its own count.

The batch is stored as all images' current tokens in one (T, C) tensor, image after image, plus
per-image counts. Every function here runs one vectorised pass over the whole batch (segment-wise
scores, per-row ranks from one sort, one `index_add` for the new tokens): no Python loop over the
images, and one host synchronisation per step (the new per-image counts, which fix the output
shape). Each image's result equals the batch-size-1 call of `clap_merge` / `gbm_merge` /
`tome_merge` on that image alone (tests/merge/test_packed.py), so adaptive merging keeps its
per-image counts at batch size > 1 (`merge.batching=ragged`).

Bipartite steps pad the A and B sets of every image to the batch's largest set and mask the
padding (-inf scores); this spends matmul work on padding but keeps the step one batched matmul.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from . import bipartite
from .clap import _pair, window_scores
from .counts import check_threshold
from .state import VALUE_MODES, MergeStep


def default_a_start() -> int:
    """Return the first A position of `gbm_merge`'s default bipartite split of the patch tokens."""
    split = getattr(bipartite, "split_starts", None)
    param = inspect.signature(bipartite.gbm_merge).parameters.get("class_token")
    if split is None or param is None:
        return 0
    return int(split(param.default)[0])


def exclusive_cumsum(counts: Tensor) -> Tensor:
    """Return (B,) start offsets of segments with `counts` (B,)."""
    return counts.cumsum(0) - counts


@dataclass(frozen=True)
class PackedState:
    """Merge record of a packed batch (all images share the original token count).

    index: (B, N_original) long, per image the local position of the current token that each
      original token is part of.
    sizes: (T,) float, packed sizes of the current tokens (T = sum of counts).
    counts: current tokens per image, on the host (they fix tensor shapes).
    steps: per step a `MergeStep` whose tokens_out is the batch total and eligible each image's count.
    """

    index: Tensor
    sizes: Tensor
    counts: tuple[int, ...]
    steps: tuple[MergeStep, ...] = field(default=())

    @classmethod
    def start(cls, batch_size: int, num_tokens: int, device=None, dtype=torch.float32) -> PackedState:
        """Return the identity state of `batch_size` images of `num_tokens` tokens."""
        index = torch.arange(num_tokens, device=device).expand(batch_size, num_tokens)
        sizes = torch.ones(batch_size * num_tokens, device=device, dtype=dtype)
        return cls(index, sizes, (num_tokens,) * batch_size)

    @property
    def num_original(self) -> int:
        """Return the number of tokens per image before any merge."""
        return self.index.shape[1]

    def counts_tensor(self) -> Tensor:
        """Return the per-image counts as a (B,) long tensor on the state's device."""
        return torch.tensor(self.counts, device=self.sizes.device)

    def kept_fractions(self) -> list[float]:
        """Return each image's current tokens as a fraction of its original count."""
        return [c / self.num_original for c in self.counts]

    def unmerge(self, x: Tensor) -> Tensor:
        """Return (B, N_original, C): each original position gets the packed token x (T, C) it joined."""
        if x.shape[0] != self.sizes.shape[0]:
            raise ValueError(f"unmerge expects {self.sizes.shape[0]} packed tokens; got {x.shape[0]}")
        offsets = exclusive_cumsum(self.counts_tensor())
        flat = (self.index + offsets[:, None]).reshape(-1)
        return x.index_select(0, flat).reshape(*self.index.shape, x.shape[-1])


def segment_positions(counts: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """Return (segment id, position within the segment), each (total,), for segments `counts`."""
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts,
                                  output_size=total)
    return seg, torch.arange(total, device=counts.device) - exclusive_cumsum(counts)[seg]


def apply_packed(
    x: Tensor,
    state: PackedState,
    slot: Tensor,
    out_counts: Tensor,
    name: str,
    eligible: Tensor | None,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, PackedState]:
    """Merge packed tokens x (T, C) sharing an image-local `slot` (T,); image b keeps out_counts[b].

    The packed counterpart of `state.apply_assignment` (same value / reduce operators; with
    value="random" one priority is drawn per packed token, so the choices differ from the
    per-image calls' random stream).
    """
    if value not in VALUE_MODES:
        raise ValueError(f"merge value mode must be one of {VALUE_MODES}; got {value!r}")
    counts = state.counts_tensor()
    new_counts = tuple(out_counts.tolist())  # the one host sync: the output's shape
    total = sum(new_counts)
    seg, _ = segment_positions(counts, x.shape[0])
    flat = exclusive_cumsum(out_counts)[seg] + slot  # (T,) slot in the packed output
    sizes = state.sizes.to(x.dtype)
    new_sizes = sizes.new_zeros(total).index_add_(0, flat, sizes)
    if value == "mean":
        merged = x.new_zeros(total, x.shape[1]).index_add(0, flat, x * sizes[:, None])
        merged = merged / new_sizes[:, None]
    else:
        priority = torch.rand(x.shape[0], device=x.device, generator=generator)
        best = priority.new_full((total,), -1.0).scatter_reduce(0, flat, priority, reduce="amax")
        chosen = (priority == best.index_select(0, flat)).to(x.dtype)[:, None]
        merged = x.new_zeros(total, x.shape[1]).index_add(0, flat, x * chosen)
    n_in = sum(state.counts)
    if not reduce:
        step = MergeStep(name, n_in, n_in, eligible)
        return merged.index_select(0, flat), PackedState(state.index, state.sizes, state.counts,
                                                         state.steps + (step,))
    offsets = exclusive_cumsum(counts)
    new_index = slot.index_select(0, (state.index + offsets[:, None]).reshape(-1))
    new_state = PackedState(new_index.reshape(state.index.shape),
                            new_sizes.to(state.sizes.dtype), new_counts,
                            state.steps + (MergeStep(name, n_in, total, eligible),))
    return merged, new_state


def packed_clap(
    x: Tensor,
    state: PackedState,
    grid: tuple[int, int],
    window: int | tuple[int, int] = (2, 2),
    threshold: float = 0.88,
    metric: Tensor | None = None,
    inclusive: bool = False,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, PackedState]:
    """CLAP on packed unmerged grids x (B * h * w, C), each image merging its own eligible windows."""
    kh, kw = _pair(window, "window")
    h, w = _pair(grid, "grid")
    threshold = check_threshold(threshold, "CLAP threshold")
    B, N = len(state.counts), h * w
    if any(c != N for c in state.counts) or x.shape[0] != B * N:
        raise ValueError("packed CLAP merges unmerged grids; apply it before other merges")
    metric = x if metric is None else metric
    gh, gw, k = h // kh, w // kw, kh * kw
    device = x.device
    with torch.no_grad():
        if gh * gw == 0 or k < 2:
            eligible = torch.zeros(B, dtype=torch.long, device=device)
            slot = torch.arange(N, device=device).repeat(B)
            return apply_packed(x, state, slot, eligible + N, "clap", eligible, value, reduce,
                                generator)
        scores = window_scores(metric.detach().reshape(B, N, -1), (h, w), (kh, kw)).reshape(B, -1)
        above = scores >= threshold if inclusive else scores > threshold
        eligible = above.sum(1)  # (B,) each image's own count
        order = scores.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(gh * gw, device=device).expand(B, -1))
        rank = torch.where(rank < eligible[:, None], rank, -1)  # slot of a merged window, or -1
        rank = F.pad(rank, (0, 1), value=-1)  # sentinel column for tokens outside full windows
        rows = torch.arange(h, device=device) // kh
        cols = torch.arange(w, device=device) // kw
        wid = torch.where((rows[:, None] < gh) & (cols[None, :] < gw),
                          rows[:, None] * gw + cols[None, :], gh * gw).reshape(-1)
        token_rank = rank[:, wid]  # (B, N)
        unmerged = token_rank < 0
        later = eligible[:, None] + unmerged.long().cumsum(dim=1) - 1
        slot = torch.where(unmerged, later, token_rank).reshape(-1)
        out_counts = N - eligible * (k - 1)
    return apply_packed(x, state, slot, out_counts, "clap", eligible, value, reduce, generator)


def packed_best_edges(
    metric: Tensor, sizes: tuple[int, ...], a_start: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (scores, partner, n_a, n_b): padded (B, max N_A) best A->B cosine edges per image.

    sizes: tokens per image (host ints). Padded A rows score -inf; an image without B tokens
    scores -inf everywhere.
    """
    total = metric.shape[0]
    counts = torch.tensor(sizes, device=metric.device)
    seg, pos = segment_positions(counts, total)
    is_a = (pos % 2) == a_start
    n_a = (counts - a_start + 1).clamp(min=0) // 2
    n_b = counts - n_a
    B = len(counts)
    max_a = max((c - a_start + 1) // 2 for c in sizes)  # padded set sizes, from host counts
    max_b = max(c - (c - a_start + 1) // 2 for c in sizes)
    unit = F.normalize(metric.detach().float(), dim=-1)
    pad_a = unit.new_zeros(B, max_a, unit.shape[1])
    pad_b = unit.new_zeros(B, max_b, unit.shape[1])
    pad_a[seg[is_a], pos[is_a] // 2] = unit[is_a]
    pad_b[seg[~is_a], pos[~is_a] // 2] = unit[~is_a]
    sim = pad_a @ pad_b.transpose(1, 2)  # (B, max_a, max_b)
    valid_b = torch.arange(max_b, device=sim.device)[None, :] < n_b[:, None]
    sim = sim.masked_fill(~valid_b[:, None, :], -float("inf"))
    if max_b == 0:
        scores = sim.new_full((B, max_a), -float("inf"))
        partner = torch.zeros(B, max_a, dtype=torch.long, device=sim.device)
    else:
        scores, partner = sim.max(dim=-1)
    valid_a = torch.arange(max_a, device=sim.device)[None, :] < n_a[:, None]
    return scores.masked_fill(~valid_a, -float("inf")), partner, n_a, n_b


def released_thresholds(scores: Tensor, n_a: Tensor, layer: int) -> Tensor:
    """Return (B, 1) per-image released GBM thresholds mean(s) + std(s) / layer (inf if N_A < 2)."""
    if layer < 1:
        raise ValueError(f"layer must be the 1-based index of the merging layer; got {layer}")
    valid = torch.isfinite(scores)
    zero = scores.masked_fill(~valid, 0.0)
    n = n_a.to(scores.dtype)
    mean = zero.sum(1) / n
    var = ((zero - mean[:, None]) * valid).pow(2).sum(1) / (n - 1)
    tau = mean + var.sqrt() / layer
    return torch.where(n_a >= 2, tau, torch.full_like(tau, float("inf")))[:, None]


def packed_bipartite(
    name: str,
    x: Tensor,
    state: PackedState,
    choose,
    metric: Tensor | None = None,
    a_start: int | None = None,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, PackedState]:
    """Bipartite merge of packed x (T, C) with count rule `choose(scores, n_a) -> (count, eligible)`."""
    metric = x if metric is None else metric
    if metric.shape[0] != x.shape[0] or x.shape[0] != sum(state.counts):
        raise ValueError(f"packed tokens {tuple(x.shape)} do not match the counts {state.counts}")
    a_start = default_a_start() if a_start is None else int(a_start)
    counts = state.counts_tensor()
    with torch.no_grad():
        scores, partner, n_a, n_b = packed_best_edges(metric, state.counts, a_start)
        count, eligible = choose(scores, n_a)  # (B,) merges per image
        order = scores.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(order.shape[1], device=x.device).expand_as(order))
        merged = rank < count[:, None]  # (B, max_a)
        keep_a = n_a - count
        slot_a = torch.where(merged, keep_a[:, None] + partner,
                             (~merged).long().cumsum(dim=1) - 1)
        slot_a = F.pad(slot_a, (0, 1))  # a spare column that the B tokens read (and discard)
        seg, pos = segment_positions(counts, x.shape[0])
        is_a = (pos % 2) == a_start
        a_col = torch.where(is_a, pos // 2, slot_a.shape[1] - 1)
        slot = torch.where(is_a, slot_a[seg, a_col], keep_a[seg] + pos // 2)
        slot = torch.where(count[seg] > 0, slot, pos)  # nothing to merge: order untouched
    return apply_packed(x, state, slot, counts - count, name, eligible, value, reduce, generator)


def packed_gbm(
    x: Tensor,
    state: PackedState,
    threshold: float | None = None,
    threshold_rule: str = "fixed",
    layer: int | None = None,
    metric: Tensor | None = None,
    inclusive: bool = False,
    a_start: int | None = None,
    **operators,
) -> tuple[Tensor, PackedState]:
    """GBM on packed tokens (see `gbm_merge`), every image merging all its own eligible edges.

    a_start: first A position of the split (None: as `gbm_merge` splits by default).
    """
    if threshold_rule not in bipartite.THRESHOLD_RULES:
        raise ValueError(f"threshold_rule must be one of {bipartite.THRESHOLD_RULES}; "
                         f"got {threshold_rule!r}")
    if threshold_rule == "fixed":
        if threshold is None:
            raise ValueError("packed_gbm needs threshold=<tau> (or threshold_rule='released')")
        tau = check_threshold(threshold, "GBM threshold")
    elif layer is None:
        raise ValueError("threshold_rule='released' needs layer=<1-based layer index>")

    def choose(scores: Tensor, n_a: Tensor) -> tuple[Tensor, Tensor]:
        if threshold_rule == "released":
            eligible = (scores >= released_thresholds(scores, n_a, layer)).sum(1)
        else:
            eligible = (scores >= tau if inclusive else scores > tau).sum(1)
        return eligible, eligible

    return packed_bipartite("gbm", x, state, choose, metric, a_start, **operators)


def packed_tome(
    x: Tensor, state: PackedState, r: int, metric: Tensor | None = None,
    a_start: int | None = None, **operators,
) -> tuple[Tensor, PackedState]:
    """ToMe on packed tokens: every image merges min(r, N_i // 2) of its strongest edges."""
    if int(r) < 0:
        raise ValueError(f"ToMe r must be >= 0; got {r}")

    def choose(scores: Tensor, n_a: Tensor) -> tuple[Tensor, None]:
        return (state.counts_tensor() // 2).clamp(max=int(r)).minimum(n_a), None

    return packed_bipartite("tome", x, state, choose, metric, a_start, **operators)
