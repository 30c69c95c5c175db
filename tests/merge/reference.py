"""Slow, loop-based references of CLAP and GBM written straight from the paper's text.

They compute every pairwise cosine similarity explicitly and build groups one by one, so they
share no code (and no trick) with the vectorised package. They return groups as sets of original
token indices, which is what the merge semantics are about, independent of output order.
"""

from __future__ import annotations

import itertools

import torch


def cos(u: torch.Tensor, v: torch.Tensor) -> float:
    """Return the cosine similarity of two vectors (0 for a zero vector)."""
    nu, nv = u.norm(), v.norm()
    if nu == 0 or nv == 0:
        return 0.0
    return float(u @ v / (nu * nv))


def clap_scores(x: torch.Tensor, grid, window) -> list[float]:
    """Return the mean off-diagonal pairwise similarity of each full window, windows in raster order."""
    h, w = grid
    kh, kw = window
    grid_x = x.reshape(h, w, -1)
    scores = []
    for gy in range(h // kh):
        for gx in range(w // kw):
            toks = [grid_x[gy * kh + i, gx * kw + j] for i in range(kh) for j in range(kw)]
            pairs = [cos(a, b) for a, b in itertools.permutations(toks, 2)]
            scores.append(sum(pairs) / len(pairs))
    return scores


def clap_groups(x: torch.Tensor, grid, window, count: int) -> list[frozenset[int]]:
    """Return the groups of one image after merging its `count` best windows."""
    h, w = grid
    kh, kw = window
    scores = clap_scores(x, grid, window)
    gw = w // kw
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[:count]
    members = set()
    groups = []
    for win in best:
        gy, gx = divmod(win, gw)
        group = frozenset((gy * kh + i) * w + gx * kw + j for i in range(kh) for j in range(kw))
        groups.append(group)
        members |= group
    groups += [frozenset([t]) for t in range(h * w) if t not in members]
    return groups


def bipartite_groups(
    x: torch.Tensor, count: int, class_token: bool = True
) -> tuple[list[float], list[frozenset[int]]]:
    """Return (best A scores, groups) after merging the `count` strongest A->B edges of one image.

    x holds the current tokens of one image (N, C); groups are sets of current positions. With
    class_token a class token is imagined at position -1 heading A, so A = odd positions.
    """
    n = x.shape[0]
    first_a = 1 if class_token else 0
    a_pos, b_pos = list(range(first_a, n, 2)), list(range(1 - first_a, n, 2))
    best, partner = [], []
    for i in a_pos:
        sims = [cos(x[i], x[j]) for j in b_pos]
        j = max(range(len(sims)), key=lambda k: sims[k])
        best.append(sims[j])
        partner.append(b_pos[j])
    order = sorted(range(len(a_pos)), key=lambda k: -best[k])[:count]
    groups = {b: {b} for b in b_pos}
    for k in order:
        groups[partner[k]].add(a_pos[k])
    merged = {a_pos[k] for k in order}
    out = [frozenset([a]) for a in a_pos if a not in merged] + [frozenset(g) for g in groups.values()]
    return best, out


def groups_of(index: torch.Tensor) -> set[frozenset[int]]:
    """Return the groups of original tokens encoded by a (N_original,) index map."""
    groups: dict[int, set[int]] = {}
    for orig, cur in enumerate(index.tolist()):
        groups.setdefault(cur, set()).add(orig)
    return {frozenset(g) for g in groups.values()}
