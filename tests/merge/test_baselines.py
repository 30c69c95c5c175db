"""The baselines' core steps on small hand-checkable tensors (EViT, ToMe, ACT, ELViT, AiluRus)."""

import math

import pytest
import torch
import torch.nn.functional as F

from algm_cli.merge import MergeState
from algm_cli.merge.baselines import (
    chebyshev_within,
    cls_attention,
    cluster_grid_side,
    clustered_attention,
    density_peak_clusters,
    dpc_merge,
    evit_fuse,
    evit_keep_count,
    initial_labels,
    kmeans,
    knn_reconstruct,
    local_window,
    size_bias,
    soft_cluster,
    squared_distances,
    tome_dense_count,
    tome_dense_merge,
    weighted_regroup,
)
from algm_cli.merge.expedit import (
    act_groups,
    act_hashes,
    act_released_attention,
    evit_released_fill,
    evit_released_keep,
    evit_released_prune,
    knn_weights,
    slot_gather,
    slot_means,
    tome_released_count,
    tome_released_plan,
)


def planted_blocks(grid, block, dim=16, noise=1e-3, seed=0):
    """Return (tokens (1, h*w, dim), group (h*w,)): one distinct vector per block x block tile."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w) // block
    cols = torch.arange(w).repeat(h) // block
    group = rows * (w // block) + cols
    centres = 10 * torch.randn(int(group.max()) + 1, dim, generator=g)
    x = centres[group] + noise * torch.randn(h * w, dim, generator=g)
    return x[None], group


def same_partition(a, b):
    """Return True when labelings a and b (N,) group the positions identically."""
    return torch.equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


# ---------------------------------------------------------------------------- shared helpers


def test_squared_distances_match_cdist():
    a, b = torch.randn(2, 7, 5), torch.randn(2, 3, 5)
    assert torch.allclose(squared_distances(a, b), torch.cdist(a, b) ** 2, atol=1e-5)


def test_chebyshev_neighbourhood_counts():
    near = chebyshev_within((4, 5), 1)
    assert near.shape == (20, 20) and near.diagonal().all()
    assert int(near[0].sum()) == 4 and int(near[6].sum()) == 9  # corner (0,0) and inner (1,1)


def test_weighted_regroup_values_sizes_and_index():
    x = torch.tensor([[[1.0], [3.0], [10.0], [20.0]]])
    state = MergeState.start(1, 4)
    assign = torch.tensor([[0, 0, 1, 1]])
    weights = torch.tensor([[1.0, 3.0, 1.0, 1.0]])
    out, new = weighted_regroup(x, state, assign, 2, weights, "t")
    assert torch.allclose(out[0, :, 0], torch.tensor([2.5, 15.0]))
    assert new.sizes.tolist() == [[2.0, 2.0]] and new.index.tolist() == [[0, 0, 1, 1]]


# ---------------------------------------------------------------------------- EViT


def test_cls_attention_is_the_head_mean_of_the_softmax_row():
    q, k = torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    manual = torch.softmax(q[:, :, 0:1] @ k.transpose(-1, -2) / 2.0, dim=-1).mean(1)[:, 0, 1:]
    assert torch.allclose(cls_attention(q, k), manual, atol=1e-6)


def test_evit_keep_count_rule():
    assert evit_keep_count(1024, 0.7) == 717  # ceil(716.8)
    assert evit_keep_count(10, 1.0) == 10 and evit_keep_count(10, 0.5) == 5
    with pytest.raises(ValueError):
        evit_keep_count(10, 0.0)


def test_evit_keeps_exactly_the_planted_top_k_and_fuses_the_rest():
    # the class query aligns with the keys of tokens 1, 4 and 6 only: they get the most attention
    d, N = 4, 8
    q = torch.zeros(1, 1, N + 1, d)
    q[0, 0, 0, 0] = 10.0
    k = torch.zeros(1, 1, N + 1, d)
    k[0, 0, 1 + torch.tensor([1, 4, 6]), 0] = 1.0
    k[0, 0, 1 + torch.tensor([0, 2]), 0] = 0.2  # weaker but not zero: their fusion weights differ
    scores = cls_attention(q, k)
    x = torch.arange(N, dtype=torch.float32).reshape(1, N, 1).expand(1, N, 3).clone()
    out, state = evit_fuse(x, MergeState.start(1, N), scores, keep=3)
    assert out.shape == (1, 4, 3)
    assert out[0, :3, 0].tolist() == [1.0, 4.0, 6.0]  # the planted top-3, in their order
    dropped = torch.tensor([0, 2, 3, 5, 7])
    w = scores[0, dropped]
    assert torch.allclose(out[0, 3, 0], (w * dropped.float()).sum() / w.sum())
    assert state.index.tolist() == [[3, 0, 3, 3, 1, 3, 2, 3]]  # dropped -> the fused slot
    assert state.sizes.tolist() == [[1.0, 1.0, 1.0, 5.0]]
    full = state.unmerge(out)
    assert torch.equal(full[0, dropped], out[0, 3].expand(5, 3))


def test_evit_keep_all_is_the_identity_and_steps_compose():
    x = torch.randn(2, 6, 3)
    state = MergeState.start(2, 6)
    same, same_state = evit_fuse(x, state, torch.rand(2, 6), keep=6)
    assert same is x and same_state is state
    y, s1 = evit_fuse(x, state, torch.rand(2, 6), keep=4)  # 4 kept + 1 fused
    z, s2 = evit_fuse(y, s1, torch.rand(2, 5), keep=2)  # 2 kept + 1 fused
    assert z.shape == (2, 3, 3) and s2.index.shape == (2, 6) and int(s2.index.max()) <= 2
    assert torch.equal(s2.sizes.sum(1), torch.full((2,), 6.0))


# ---------------------------------------------------------------------------- dense ToMe


def test_tome_dense_counts_and_round_trip():
    assert tome_dense_count(100, 0.3) == 30 and tome_dense_count(7, 0.5) == 3
    x = torch.randn(2, 16, 8)
    merged, state = tome_dense_merge(x, 0.25)
    assert merged.shape == (2, 12, 8) and state.unmerge(merged).shape == x.shape
    bias = size_bias(state)
    assert bias.shape == (2, 1, 1, 13) and torch.equal(bias[..., 0], torch.zeros(2, 1, 1))
    same, identity = tome_dense_merge(x, 0.0)
    assert torch.equal(same, x) and size_bias(identity) is None


def test_tome_dense_merges_planted_duplicates():
    x = torch.randn(1, 8, 4)
    x[0, 1] = x[0, 0]  # token 0 (A) and token 1 (B) are identical: the strongest edge
    merged, state = tome_dense_merge(x, 1 / 8)
    assert merged.shape == (1, 7, 4)
    assert state.index[0, 0] == state.index[0, 1]


# ---------------------------------------------------------------------------- ACT


def test_kmeans_recovers_planted_contiguous_groups():
    x, group = planted_blocks((1, 12), 3)  # 4 groups of 3 consecutive tokens
    centres, assign = kmeans(x, k=4, iters=2)
    assert torch.equal(assign[0], group)
    assert torch.allclose(centres[0], torch.stack([x[0, group == g].mean(0) for g in range(4)]))


def test_act_with_one_cluster_per_distinct_query_is_exact_attention():
    B, H, N, d = 2, 3, 1 + 12, 8
    q, k, v = torch.randn(B, H, N, d), torch.randn(B, H, N, d), torch.randn(B, H, N, d)
    distinct = torch.randn(B, H, 4, d)
    q[:, :, 1:] = distinct.repeat_interleave(3, dim=2)  # 4 distinct patch queries, 3 copies each
    exact = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(clustered_attention(q, k, v, clusters=4), exact, atol=1e-5)
    few = clustered_attention(q, k, v, clusters=2)
    assert not torch.allclose(few, exact, atol=1e-3)
    assert torch.allclose(few[:, :, 0], exact[:, :, 0], atol=1e-6)  # the class query is exact


def test_act_with_as_many_clusters_as_queries_is_exact():
    q, k, v = torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4)
    exact = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(clustered_attention(q, k, v, clusters=8), exact, atol=1e-5)


def test_act_output_is_constant_within_a_cluster():
    q, k, v = torch.randn(1, 1, 17, 4), torch.randn(1, 1, 17, 4), torch.randn(1, 1, 17, 4)
    out = clustered_attention(q, k, v, clusters=3)
    assert torch.unique(out[0, 0, 1:], dim=0).shape[0] <= 3


# ---------------------------------------------------------------------------- ELViT


def test_cluster_grid_side_scales_the_vit_l_settings():
    assert [cluster_grid_side(40, s) for s in (32, 28, 24, 20, 16)] == [32, 28, 24, 20, 16]
    assert cluster_grid_side(32, 32) == 26 and cluster_grid_side(4, 28) == 3
    assert cluster_grid_side(4, 1) == 1 and cluster_grid_side(4, 80) == 4


def test_initial_labels_and_window_follow_the_nearest_rule():
    labels = initial_labels((40, 40), (28, 28))
    assert int(labels[10 * 40 + 10, 0]) == 7  # floor(10 * 28 / 40), exact integer arithmetic
    window = local_window((8, 8), (4, 4), 3)
    assert window.shape == (64, 16)
    assert int(window[0].sum()) == 4 and int(window[3 * 8 + 3].sum()) == 9  # corner / inner


def test_soft_cluster_recovers_planted_quadrants():
    x, group = planted_blocks((8, 8), 4)  # four 4x4 quadrants
    centres = soft_cluster(x, (8, 8), (2, 2), iters=5, window=3, temperature=1.0)
    expected = torch.stack([x[0, group == g].mean(0) for g in range(4)])
    assert centres.shape == (1, 4, 16)
    assert torch.allclose(centres[0], expected, atol=1e-4)


def test_soft_cluster_respects_the_window():
    # a token whose start cell is far from a centre gives it no weight: with a 1-cell window and
    # hard temperatures, a centre is exactly the mean of the tokens that start in its cell
    x = torch.randn(1, 36, 5)
    centres = soft_cluster(x, (6, 6), (3, 3), iters=3, window=1, temperature=1.0)
    pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(1, 5, 6, 6), (3, 3))
    assert torch.allclose(centres, pooled.flatten(2).transpose(1, 2), atol=1e-5)


def test_knn_reconstruct_planted_groups_and_identity():
    x, group = planted_blocks((8, 8), 4)
    anchors = torch.stack([x[0, group == g].mean(0) for g in range(4)])[None]
    later = torch.randn(1, 4, 16)  # the cluster tokens after more layers
    rebuilt = knn_reconstruct(x, anchors, later, k=1)
    assert torch.equal(rebuilt[0], later[0, group])
    soft = knn_reconstruct(x, anchors, later, k=4, temperature=1.0)  # far anchors weigh ~0
    assert torch.allclose(soft[0], later[0, group], atol=1e-5)
    z, y = torch.randn(1, 64, 16), torch.randn(1, 64, 16)
    assert torch.allclose(knn_reconstruct(z, z, y, k=1), y)  # every token its own anchor


def test_knn_reconstruct_weightings_sum_as_documented():
    saved, anchors = torch.randn(1, 10, 4), torch.randn(1, 6, 4)
    ones = torch.ones(1, 6, 1)
    assert torch.allclose(knn_reconstruct(saved, anchors, ones, k=3, temperature=1.0),
                          torch.ones(1, 10, 1), atol=1e-6)  # softmax weights sum to 1
    l2 = knn_reconstruct(saved, anchors, torch.eye(6)[None], k=3, temperature=1.0, weighting="l2")
    assert torch.allclose(l2.norm(dim=-1), torch.ones(1, 10), atol=1e-5)


# ---------------------------------------------------------------------------- AiluRus


def test_density_peaks_recover_planted_groups():
    x, group = planted_blocks((8, 8), 4, noise=0.05)
    assign, centres = density_peak_clusters(x, (8, 8), num_clusters=4, k=3, radius=1)
    assert same_partition(assign[0], group)
    assert sorted(group[centres[0]].tolist()) == [0, 1, 2, 3]  # one centre per planted group


def test_density_peaks_every_centre_in_its_own_cluster():
    x = torch.randn(2, 25, 6)
    assign, centres = density_peak_clusters(x, (5, 5), num_clusters=7)
    assert torch.equal(assign.gather(1, centres), torch.arange(7).expand(2, 7))
    assert (torch.bincount(assign[0], minlength=7) > 0).all()


def test_density_peaks_spatial_assignment_prefers_close_centres():
    # with assign_radius, a token joins a centre within that many rows/cols whenever one exists
    x = torch.randn(1, 48, 6)
    assign, centres = density_peak_clusters(x, (6, 8), 5, k=3, radius=1, assign_radius=1)
    pos = torch.stack([torch.arange(48) // 8, torch.arange(48) % 8], dim=1)
    gap = (pos[:, None] - pos[centres[0]][None]).abs().amax(-1)  # (48, 5) token-centre gaps
    chosen = gap.gather(1, assign[0][:, None])[:, 0]
    has_close = (gap <= 1).any(1)
    assert (chosen[has_close] <= 1).all()
    free, _ = density_peak_clusters(x, (6, 8), 5, k=3, radius=1)
    assert torch.equal(free.gather(1, centres), assign.gather(1, centres))  # centres stay put


def test_dpc_merge_means_and_identity():
    x, group = planted_blocks((8, 8), 4, noise=0.05)
    tokens, state = dpc_merge(x, MergeState.start(1, 64), (8, 8), 4, k=3, radius=1)
    assert tokens.shape == (1, 4, 16) and state.sizes.sum() == 64
    full = state.unmerge(tokens)
    expected = torch.stack([x[0, group == g].mean(0) for g in range(4)])[group]
    assert torch.allclose(full[0], expected, atol=1e-5)
    same, s = dpc_merge(x, MergeState.start(1, 64), (8, 8), 64)
    assert torch.allclose(same, x) and torch.equal(s.index, torch.arange(64)[None])


def test_dpc_merge_needs_raster_order():
    x = torch.randn(1, 16, 4)
    _, state = dpc_merge(x, MergeState.start(1, 16), (4, 4), 8)
    with pytest.raises(ValueError, match="raster order"):
        dpc_merge(torch.randn(1, 8, 4), state, (4, 4), 4)


# ----------------------------------------------------------------------------------------------
# released variants (Expedit-Segmenter): each rule against a small loop re-derivation


def loop_knn_weights(feats, anchors, k, factor):
    """Reference: per token, exp(-factor * d) to every anchor, below the k-th largest -> 0, L2."""
    B, N, _ = feats.shape
    out = torch.zeros(B, N, anchors.shape[1])
    for b in range(B):
        for i in range(N):
            w = torch.tensor([math.exp(-factor * float(((feats[b, i] - a) ** 2).sum()))
                              for a in anchors[b]])
            kth = sorted(w.tolist(), reverse=True)[k - 1]
            w = torch.where(w >= kth, w, torch.zeros_like(w))
            norm = math.sqrt(float((w ** 2).sum()))
            out[b, i] = w / max(norm, 1e-12)
    return out


def test_released_knn_weights_match_a_loop_reference():
    g = torch.Generator().manual_seed(1)
    feats, anchors = torch.randn(2, 9, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    for k, factor in [(3, 0.02), (1, 0.005), (5, 0.5)]:
        ours = knn_weights(feats, anchors, k, factor)
        assert torch.allclose(ours, loop_knn_weights(feats, anchors, k, factor), atol=1e-6)


def test_released_knn_weights_keep_ties_and_underflow_to_zero():
    feats = torch.tensor([[[0.0, 0.0], [100.0, 100.0]]])
    anchors = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])  # two anchors tie for token 0
    w = knn_weights(feats, anchors, k=1, factor=0.02)
    assert torch.allclose(w[0, 0], torch.tensor([2 ** -0.5, 2 ** -0.5, 0.0]))
    assert torch.equal(w[0, 1], torch.zeros(3))  # exp(-0.02 * ~19000) underflows: a zero row


def test_released_evit_keep_count_has_no_tolerance():
    assert evit_released_keep(100, 0.55) == 56  # ceil(55.00000000000001), as released
    assert evit_keep_count(100, 0.55) == 55  # the paper variant's rounding
    assert evit_released_keep(64, 0.5) == 32 and evit_released_keep(5, 1.0) == 5


def test_released_evit_prune_hand_case():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, -1.0]]])
    scores = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    tokens, kept = evit_released_prune(x, scores, keep=2)
    assert kept.tolist() == [[1, 3]]  # highest first
    fused = 0.1 * x[0, 0] + 0.2 * x[0, 2]  # not divided by 0.3
    assert torch.allclose(tokens[0], torch.stack([x[0, 1], x[0, 3], fused]))


def test_released_evit_fill_matches_a_loop_reference():
    g = torch.Generator().manual_seed(2)
    before = torch.randn(2, 7, 3, generator=g)
    kept = torch.stack([torch.randperm(7, generator=g)[:4] for _ in range(2)])
    kept_out = torch.randn(2, 4, 5, generator=g)
    ours = evit_released_fill(before, kept, kept_out)
    for b in range(2):
        for i in range(7):
            if i in kept[b].tolist():
                expected = kept_out[b, kept[b].tolist().index(i)]
            else:
                dist = [float(((before[b, i] - before[b, j]) ** 2).sum()) for j in kept[b]]
                expected = kept_out[b, dist.index(min(dist))]  # its nearest kept token
            assert torch.allclose(ours[b, i], expected, atol=1e-6), (b, i)


def loop_dense_tome(x, ratio):
    """Reference: ToMe's bipartite rule with the class token as A[0]; returns (B, T, C) unmerged
    plain means and the merged count."""
    B, T, _ = x.shape
    r = min(int(T * ratio), (T - 1) // 2)
    out = x.clone()
    for b in range(B):
        a_pos, b_pos = list(range(0, T, 2)), list(range(1, T, 2))
        best = []
        for ai in a_pos[1:]:
            sims = [float(F.cosine_similarity(x[b, ai], x[b, bj], dim=0)) for bj in b_pos]
            best.append((max(sims), ai, b_pos[sims.index(max(sims))]))
        best.sort(key=lambda t: -t[0])
        groups = {bj: [bj] for bj in b_pos}
        for _, ai, bj in best[:r]:
            groups[bj].append(ai)
        for members in groups.values():
            out[b, members] = x[b, members].mean(dim=0)
    return out, T - r


def test_released_dense_tome_matches_a_loop_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 17, 6, generator=g)
    for ratio in (0.2, 0.3, 0.5):
        slot, num = tome_released_plan(x, ratio)
        expected, count = loop_dense_tome(x, ratio)
        assert num == count
        assert torch.allclose(slot_gather(slot_means(x, slot, num), slot), expected, atol=1e-6)
        assert (slot[:, 0] == 0).all()  # the class token stays, first


def test_released_dense_tome_counts_the_class_token():
    assert tome_released_count(65, 0.2) == 13  # 64 patches + class token (paper variant: 12)
    assert tome_dense_count(64, 0.2) == 12
    assert tome_released_count(65, 0.5) == 32 and tome_released_count(3, 0.1) == 0


def kernel_groups(hashes):
    """Reference: the release's ada_cluster kernel, one row at a time over the sorted hashes."""
    groups = torch.zeros_like(hashes)
    for n in range(hashes.shape[0]):
        order = sorted(range(hashes.shape[1]), key=lambda i: int(hashes[n, i]))
        c = 0
        for rank, i in enumerate(order):
            if rank and int(hashes[n, i]) != int(hashes[n, order[rank - 1]]):
                c += 1
            groups[n, i] = c
    return groups


def test_released_act_groups_equal_hashes_together_in_hash_order():
    hashes = torch.tensor([[7, 3, 7, 100, 3, -2], [0, 0, 0, 0, 0, 0]])
    assert act_groups(hashes).tolist() == [[2, 1, 2, 3, 1, 0], [0, 0, 0, 0, 0, 0]]
    g = torch.Generator().manual_seed(4)
    random = torch.randint(0, 5, (3, 20), generator=g)
    assert torch.equal(act_groups(random), kernel_groups(random))


def test_released_act_hashes_match_a_per_round_reference():
    g = torch.Generator().manual_seed(5)
    q = 0.2 * torch.randn(3, 10, 4, generator=g)
    ours = act_hashes(q, 3, torch.Generator().manual_seed(9))
    draw = torch.Generator().manual_seed(9)
    w, b = torch.randn(4, 3, generator=draw), torch.rand(3, generator=draw)
    expected = torch.zeros(3, 10, dtype=torch.long)
    for j in range(3):
        code = torch.floor((q @ w[:, j] + b[j]) / 8.0).long()  # (3, 10)
        expected += (code - code.min(dim=1, keepdim=True).values) * 4 ** j
    assert torch.equal(ours, expected)
    assert torch.equal(ours, act_hashes(q, 3, torch.Generator().manual_seed(9)))  # seeded


def test_released_act_attention_matches_a_group_loop():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 2, 12, 4, generator=g) for _ in range(3))
    q = 0.05 * q  # small queries: several share a hash
    out, clusters = act_released_attention(q, k, v, 4, torch.Generator().manual_seed(1))
    hashes = act_hashes((q * 0.5).reshape(2, 12, 4), 4, torch.Generator().manual_seed(1))
    groups = act_groups(hashes)
    assert clusters.tolist() == [[int(groups[h].max()) + 1 for h in range(2)]]
    assert clusters.min() < 12  # some queries were grouped
    for h in range(2):
        for c in range(int(groups[h].max()) + 1):
            members = (groups[h] == c).nonzero()[:, 0]
            centre = (q[0, h, members] * 0.5).mean(dim=0)  # d = 4: scale 1/2
            expected = (centre @ k[0, h].T).softmax(dim=-1) @ v[0, h]
            assert torch.allclose(out[0, h, members], expected.expand(len(members), -1), atol=1e-6)
