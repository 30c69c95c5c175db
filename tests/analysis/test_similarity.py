"""Similarity study on planted tokens and labels whose answers are known exactly."""

import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from algm_cli.analysis.similarity import (
    SimilarityStudy, pair_similarity_split, patch_labels, window_groups,
)

IGNORE = 255


def fill(label, row, col, values, patch=16):
    """Write a flat list of 256 labels into patch (row, col) of `label`."""
    label[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = torch.tensor(
        values).reshape(patch, patch)


def test_patch_labels_majority_ignore_and_ties():
    label = torch.zeros(32, 48, dtype=torch.long)
    fill(label, 0, 0, [3] * 256)
    fill(label, 0, 1, [1] * 200 + [2] * 56)
    fill(label, 0, 2, [IGNORE] * 150 + [0] * 106)  # ignore majority: excluded
    fill(label, 1, 0, [5] * 128 + [IGNORE] * 128)  # tie with ignore: the class wins
    fill(label, 1, 1, [4] * 128 + [2] * 128)  # tie between classes: the smaller id
    fill(label, 1, 2, [IGNORE] * 256)
    assert patch_labels(label).tolist() == [[3, 1, IGNORE], [5, 2, IGNORE]]


def test_patch_labels_scattered_pixels_and_bad_sizes():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (16, 16), generator=g)
    expected = int(torch.bincount(label.reshape(-1)).argmax())
    assert patch_labels(label).tolist() == [[expected]]
    assert patch_labels(torch.full((16, 32), IGNORE)).tolist() == [[IGNORE, IGNORE]]
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patch_labels(torch.zeros(20, 16, dtype=torch.long))


def test_window_groups_full_windows_only():
    groups = window_groups((3, 5), 2).reshape(3, 5)
    assert groups.tolist() == [[0, 0, 1, 1, -1], [0, 0, 1, 1, -1], [-1] * 5]


def planted_grid():
    """4x4 tokens: columns 0-2 class 0, column 3 class 1, token (0, 0) ignored; one-hot tokens."""
    labels = torch.tensor([[0, 0, 0, 1]] * 4).reshape(-1)
    labels[0] = IGNORE
    tokens = F.one_hot(labels.clamp(max=1), 2).double() * 3.0  # scale must not matter
    return tokens, labels


def test_one_hot_tokens_give_exact_local_and_global_numbers():
    tokens, labels = planted_grid()
    # k=2: TL window 3 valid class-0 tokens (3 pairs), BL 4 (6 pairs); each right window holds
    # two class-0 and two class-1 tokens: 2 intra + 4 inter pairs
    local = pair_similarity_split(tokens, labels, window_groups((4, 4), 2))
    assert (local["intra"].count, local["inter"].count) == (13, 8)
    # k=4 = the whole grid: 11 class-0 and 4 class-1 tokens
    whole = pair_similarity_split(tokens, labels, window_groups((4, 4), 4))
    glob = pair_similarity_split(tokens, labels)
    for m in (whole, glob):
        assert (m["intra"].count, m["inter"].count) == (55 + 6, 11 * 4)
    for m in (local, whole, glob):
        assert m["intra"].mean == pytest.approx(1.0, abs=1e-12)
        assert m["intra"].std == pytest.approx(0.0, abs=1e-6)
        assert m["inter"].mean == pytest.approx(0.0, abs=1e-12)
        assert m["inter"].std == pytest.approx(0.0, abs=1e-12)


def test_split_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(30, 5, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    labels[[2, 7]] = IGNORE
    groups = torch.randint(-1, 4, (30,), generator=g)
    got = pair_similarity_split(tokens, labels, groups)
    sims = {"intra": [], "inter": []}
    for i, j in combinations(range(30), 2):
        if IGNORE in (labels[i], labels[j]) or groups[i] < 0 or groups[i] != groups[j]:
            continue
        s = float(F.cosine_similarity(tokens[i].double(), tokens[j].double(), dim=0))
        sims["intra" if labels[i] == labels[j] else "inter"].append(s)
    for name, values in sims.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        assert got[name].count == len(values)
        assert got[name].mean == pytest.approx(mean, abs=1e-9)
        assert got[name].std == pytest.approx(std, abs=1e-9)


def test_study_pools_pairs_over_images_and_skips_large_windows():
    study = SimilarityStudy(windows=(2, 8), local_layer=1)
    # image 1: two identical class-0 tokens in one 2x2 window (1 pair, similarity 1) + 2 ignored
    e = torch.eye(4, dtype=torch.float64)
    labels1 = torch.tensor([0, 0, IGNORE, IGNORE])
    tokens1 = torch.stack([e[0], e[0], e[1], e[2]])
    # image 2: three mutually orthogonal class-0 tokens (3 pairs, similarity 0) + 1 ignored
    labels2 = torch.tensor([0, 0, 0, IGNORE])
    tokens2 = torch.stack([e[0], e[1], e[2], e[3]])
    for tokens, labels in ((tokens1, labels1), (tokens2, labels2)):
        study.add({1: tokens, 2: tokens}, labels, (2, 2))
    assert study.skipped_windows() == [8]
    table = study.table()
    assert set(table.analysis) == {"local", "global"}
    assert sorted(table[table.analysis == "global"].layer.unique()) == [1, 2]
    for _, row in table[table.pair_type == "intra"].iterrows():
        # pair-weighted: (1 + 0 + 0 + 0) / 4, not the mean of the image means (1 + 0) / 2
        assert row["count"] == 4
        assert row["mean"] == pytest.approx(0.25)
        assert row["std"] == pytest.approx(math.sqrt(0.25 - 0.0625))
    inter = table[table.pair_type == "inter"]
    assert (inter["count"] == 0).all() and inter["mean"].isna().all()
    local = table[table.analysis == "local"]
    assert local.window.tolist() == [2, 2] and (local.layer == 1).all()
