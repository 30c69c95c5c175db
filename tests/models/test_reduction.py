"""Segmenter with the baseline reductions: shapes, no-reduction equality, token counts, configs."""

import math
import os

import pytest
import torch
from hydra import compose, initialize_config_dir

from algm_cli.engine.flops import count_gflops
from algm_cli.models.reduction import (
    BASELINE_METHODS,
    ACTSpec,
    AiluRusSpec,
    ELViTSpec,
    EViTSpec,
    ReducedSegmenter,
    ToMeDenseSpec,
    build_reduced,
    reduction_from_config,
)
from algm_cli.models.segmenter import Segmenter

IMG = 64  # 4 x 4 patch grid
PAPER = "paper"  # the papers' rules; the released variant is tested in test_expedit_encoders.py
CONF = os.path.join(os.path.dirname(__file__), "..", "..", "conf")


def reducing_specs(depth: int) -> list:
    """Return one reducing spec per method for an encoder of `depth` layers (4 x 4 grid)."""
    mid = depth // 2
    return [
        EViTSpec((mid - 1, mid + 1), 0.5, PAPER),  # 16 -> 8 + 1 -> 5 + 1
        ToMeDenseSpec(mid, 0.25, variant=PAPER),  # 16 -> 12 around every sub-block
        ACTSpec(mid, 0.25, variant=PAPER),  # 4 query clusters per head
        ELViTSpec(mid, 2, reference=4, variant=PAPER),  # 2 x 2 cluster grid
        AiluRusSpec(2, 0.5, k=3, radius=1),  # 8 clusters
    ]


def null_specs(depth: int) -> list:
    """Return one spec per method whose setting reduces nothing."""
    mid = depth // 2
    return [
        EViTSpec((mid - 1, mid + 1), 1.0, PAPER),
        ToMeDenseSpec(1, 0.0, variant=PAPER),
        ACTSpec(1, 1.0, variant=PAPER),
        ELViTSpec(mid, 40, variant=PAPER),  # 40 per 40: the full grid
        AiluRusSpec(2, 1.0),
    ]


EXPECTED_STATS = {  # depth 12, 4 x 4 grid: tokens after each step / 16
    "evit": {"L5:evit": 9 / 16, "L7:evit": 6 / 16},
    "tome_dense": {f"L{layer}:tome_dense": 12 / 16 for layer in range(6, 13)},
    "act": {f"L{layer}:act": 4 / 16 for layer in range(6, 13)},
    "elvit": {"L6:elvit": 4 / 16},
    "ailurus": {"L2:ailurus": 8 / 16},
}


def reduced(backbone: str, spec, classes: int = 5, img: int = IMG) -> tuple:
    """Return (ReducedSegmenter, Segmenter) with the same random weights, in eval mode."""
    torch.manual_seed(0)
    base = Segmenter(backbone, classes, "mask", img).eval()
    model = ReducedSegmenter(spec, backbone, classes, "mask", img).eval()
    model.load_state_dict(base.state_dict())
    return model, base


@pytest.mark.parametrize("backbone", ["vit_t", "vit_s", "vit_b"])
def test_every_method_shapes_and_finiteness(backbone):
    model, _ = reduced(backbone, EViTSpec((1,), 1.0))
    x = torch.randn(2, 3, 50, IMG)  # padded to 64 x 64
    for spec in reducing_specs(model.encoder.depth):
        model.reduction = spec
        with torch.no_grad():
            logits, stats = model.forward_with_stats(x)
        assert logits.shape == (2, 5, 50, IMG), spec.method
        assert torch.isfinite(logits).all(), spec.method
        assert stats and all(0 < v < 1 for v in stats.values()), spec.method


def test_every_method_on_vit_l():
    torch.manual_seed(0)
    model = ReducedSegmenter(EViTSpec((1,), 1.0), "vit_l", 5, "mask", IMG).eval()
    x = torch.randn(1, 3, IMG, IMG)
    for spec in reducing_specs(24):
        model.reduction = spec
        with torch.no_grad():
            logits, stats = model.forward_with_stats(x)
        assert logits.shape == (1, 5, IMG, IMG) and torch.isfinite(logits).all(), spec.method


@pytest.mark.parametrize("spec", null_specs(12), ids=lambda s: s.method)
def test_no_reduction_setting_equals_the_baseline(spec):
    model, base = reduced("vit_t", spec)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        a, b = base(x), model(x)
        _, stats = model.forward_with_stats(x)
    assert torch.allclose(a, b, atol=1e-5)
    assert all(v == 1.0 for v in stats.values())


@pytest.mark.parametrize("spec", reducing_specs(12), ids=lambda s: s.method)
def test_token_counts_after_each_step_match_the_setting(spec):
    model, base = reduced("vit_t", spec)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        logits, stats = model.forward_with_stats(x)
        differs = not torch.allclose(logits, base(x), atol=1e-4)
    assert stats == pytest.approx(EXPECTED_STATS[spec.method])
    assert differs, "a reducing setting should change the output"


def test_act_with_one_cluster_per_token_equals_the_baseline_through_kmeans():
    # 4 x 4 grid, 16 clusters: the k-means path itself (not the exact shortcut) at full count
    from algm_cli.models.reduction import act_attention
    from algm_cli.models.blocks import attention

    model, _ = reduced("vit_t", ACTSpec(1, 1.0, variant=PAPER))
    blk = model.encoder.blocks[0]
    x = torch.randn(2, 17, 192)
    with torch.no_grad():
        exact, _ = attention(blk.attn, x, None)
        clustered = act_attention(blk.attn, x, clusters=16, iterations=2)
    assert torch.allclose(exact, clustered, atol=1e-5)


def test_gradients_flow_through_every_method():
    model, _ = reduced("vit_t", EViTSpec((1,), 1.0))
    model.train()
    for spec in reducing_specs(12):
        model.reduction = spec
        model.zero_grad()
        model(torch.randn(2, 3, IMG, IMG)).square().mean().backward()
        grad = model.encoder.blocks[0].attn.qkv.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, spec.method


def test_every_method_lowers_gflops():
    model, base = reduced("vit_t", EViTSpec((1,), 1.0), img=128)  # 8 x 8 grid
    image = torch.randn(1, 3, 128, 128)
    full = count_gflops(base, image)
    specs = [EViTSpec((4, 7, 10), 0.5, PAPER), ToMeDenseSpec(2, 0.5, variant=PAPER),
             ACTSpec(2, 0.25, variant=PAPER), ELViTSpec(4, 20, variant=PAPER),
             AiluRusSpec(2, 0.5), EViTSpec((4, 7, 10), 0.5), ToMeDenseSpec(1, 0.5),
             ELViTSpec(4, 20)]
    for spec in specs:
        model.reduction = spec
        assert count_gflops(model, image) < full, spec.method


def test_same_parameters_as_segmenter():
    model, base = reduced("vit_t", ELViTSpec(6, 28))
    assert model.state_dict().keys() == base.state_dict().keys()


@pytest.mark.parametrize("variant", ["released", "paper"])
@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_merge_configs_build_models(method, variant):
    over = [f"merge={method}"] + ([f"merge.variant={variant}"] if method != "ailurus" else [])
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base=None):
        cfg = compose("run", overrides=[*over, "backbone=vit_t"])
        large = compose("run", overrides=[*over, "backbone=vit_l"])
    m = cfg.merge
    assert m.method == method and float(m.setting) in [float(v) for v in m.settings]
    assert not m.during_training and m.clap_layer is None and list(m.gbm_layers) == []
    model = build_reduced(m, "vit_t", num_classes=3, decoder="linear", img_size=IMG)
    with torch.no_grad():
        logits, stats = model.forward_with_stats(torch.randn(1, 3, IMG, IMG))
    assert logits.shape == (1, 3, IMG, IMG) and stats
    assert getattr(model.reduction, "variant", variant) == variant
    spec_l = reduction_from_config(large.merge, "vit_l")
    if not (variant == "released" and method in ("act", "tome_dense")):  # released: every layer
        assert spec_l != model.reduction  # per-backbone layers
    for setting in m.settings:  # every listed setting is a valid reduction
        reduction_from_config({**dict(m), "setting": setting}, "vit_t").check(12)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="not a baseline"):
        reduction_from_config({"method": "algm", "setting": 1}, "vit_s")
    with pytest.raises(ValueError, match="outside the encoder's layers"):
        build_reduced({"method": "elvit", "setting": 28, "layer": 13}, "vit_s", img_size=IMG)
    with pytest.raises(ValueError, match="keep rate"):
        build_reduced({"method": "evit", "setting": 1.5, "layers": [4]}, "vit_s", img_size=IMG)
    with pytest.raises(ValueError, match="no entry for backbone"):
        reduction_from_config({"method": "act", "setting": 0.5, "start_layer": {"vit_l": 11}},
                              "vit_s")


# ----------------------------------------------------------------------------------------------
# released variants (Expedit-Segmenter) as whole models against per-image re-derivations


def perturbed(spec, img: int = 128) -> ReducedSegmenter:
    """Return a vit_t ReducedSegmenter with random, slightly perturbed weights (8 x 8 grid)."""
    torch.manual_seed(0)
    model = ReducedSegmenter(spec, "vit_t", 5, "mask", img).eval()
    for p in model.parameters():
        p.data += 0.02 * torch.randn_like(p)
    return model


def ref_attention(attn, h):
    """Reference timm attention on h (1, T, C): returns (output, cls attention to patches)."""
    T, C = h.shape[1], h.shape[2]
    heads = attn.num_heads
    q, k, v = attn.qkv(h)[0].reshape(T, 3, heads, C // heads).permute(1, 2, 0, 3)
    a = (q @ k.transpose(1, 2) * (C // heads) ** -0.5).softmax(dim=-1)  # (heads, T, T)
    out = (a @ v).transpose(0, 1).reshape(1, T, C)
    return attn.proj(out), a[:, 0, 1:].mean(dim=0)


def ref_logits(model, tokens, grid, size):
    """Decoder scores of tokens (1, N, C) on grid, upsampled to size."""
    scores = model.decoder(tokens)
    masks = scores.transpose(1, 2).reshape(1, 5, *grid)
    return torch.nn.functional.interpolate(masks, size=size, mode="bilinear", align_corners=False)


def ref_nearest_weights(feats, anchors, k, factor):
    """exp(-factor d) kept for the k largest (ties kept), L2-normalised: (N, K) by loops."""
    out = torch.zeros(feats.shape[0], anchors.shape[0])
    for i, f in enumerate(feats):
        w = torch.stack([torch.exp(-factor * ((f - a) ** 2).sum()) for a in anchors])
        kth = w.sort(descending=True).values[k - 1]
        w = torch.where(w >= kth, w, torch.zeros_like(w))
        out[i] = w / w.norm().clamp_min(1e-12)
    return out


def test_released_elvit_equals_a_reference_pipeline():
    from algm_cli.models.reduction import embed

    spec = ELViTSpec(4, 20, k=5)  # 4 x 4 clusters of the 8 x 8 grid, factor 0.02, k 5
    model = perturbed(spec)
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ours, stats = model.forward_with_stats(images)
        for b in range(2):
            x, grid = embed(model.encoder, images[b:b + 1])
            for layer, blk in enumerate(model.encoder.blocks, start=1):
                if layer == 4:
                    saved = x[0, 1:]  # (64, C)
                    cells = [(r // 2) * 4 + c // 2 for r in range(8) for c in range(8)]
                    centres = torch.stack([saved[[i for i in range(64) if cells[i] == j]].mean(0)
                                           for j in range(16)])
                    near = torch.tensor([[max(abs(cells[i] // 4 - j // 4),
                                              abs(cells[i] % 4 - j % 4)) <= 2 for j in range(16)]
                                         for i in range(64)])
                    for _ in range(5):
                        logit = -0.02 * torch.cdist(saved, centres) ** 2
                        a = logit.masked_fill(~near, -float("inf")).softmax(dim=1)  # (64, 16)
                        centres = (a.T @ saved) / a.sum(0)[:, None]
                    x = torch.cat([x[:, :1], centres[None]], dim=1)
                x = blk(x)
            x = model.encoder.norm(x)
            scores = model.decoder(x[:, 1:])[0]  # (16, classes): the decoder reads the clusters
            full = ref_nearest_weights(saved, centres, 5, 0.02) @ scores  # logits rebuilt
            masks = full.T.reshape(1, 5, 8, 8)
            expected = torch.nn.functional.interpolate(masks, size=(128, 128), mode="bilinear",
                                                       align_corners=False)
            assert torch.allclose(ours[b:b + 1], expected, atol=1e-4), b
    assert stats == {"L4:elvit": 16 / 64}


def test_released_evit_equals_a_reference_pipeline():
    from algm_cli.models.reduction import embed

    model = perturbed(EViTSpec((4, 7, 10), 0.7))
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ours, stats = model.forward_with_stats(images)
        for b in range(2):
            x, grid = embed(model.encoder, images[b:b + 1])
            steps = []
            for layer, blk in enumerate(model.encoder.blocks, start=1):
                if layer not in (4, 7, 10):
                    x = blk(x)
                    continue
                out, cls_attn = ref_attention(blk.attn, blk.norm1(x))
                x = x + out
                n = x.shape[1] - 1
                keep = math.ceil(0.7 * n)
                order = sorted(range(n), key=lambda i: -float(cls_attn[i]))[:keep]
                rest = [i for i in range(n) if i not in order]
                fused = sum(cls_attn[i] * x[0, 1 + i] for i in rest)
                steps.append((x[0, 1:].clone(), order))
                x = torch.cat([x[:, :1], x[:, 1:][:, order], fused[None, None]], dim=1)
                x = x + blk.mlp(blk.norm2(x))
            patches = model.encoder.norm(x)[0, 1:]
            for before, order in reversed(steps):
                kept_out, full = patches[:-1], torch.empty(before.shape[0], patches.shape[1])
                for i in range(before.shape[0]):
                    if i in order:
                        full[i] = kept_out[order.index(i)]
                    else:
                        dist = [float(((before[i] - before[j]) ** 2).sum()) for j in order]
                        full[i] = kept_out[dist.index(min(dist))]
                patches = full
            expected = ref_logits(model, patches[None], grid, (128, 128))
            assert torch.allclose(ours[b:b + 1], expected, atol=1e-4), b
    assert stats == pytest.approx({"L4:evit": 46 / 64, "L7:evit": 34 / 64, "L10:evit": 25 / 64})


def ref_tome_branch(fn, h, ratio):
    """fn on h (1, T, C) merged by ToMe's rule (class token = A[0], plain means), unmerged."""
    T = h.shape[1]
    r = min(int(T * ratio), (T - 1) // 2)
    metric = torch.nn.functional.normalize(h[0], dim=-1)
    best = []
    for a in range(2, T, 2):
        sims = metric[1::2] @ metric[a]
        best.append((float(sims.max()), a, 1 + 2 * int(sims.argmax())))
    best.sort(key=lambda t: -t[0])
    groups = [[a] for a in range(0, T, 2) if a not in {s for _, s, _ in best[:r]}]
    groups += [[bj] + [a for _, a, d in best[:r] if d == bj] for bj in range(1, T, 2)]
    out = fn(torch.stack([h[0, g].mean(0) for g in groups])[None])[0]
    full = torch.empty(T, out.shape[-1])
    for slot, g in enumerate(groups):
        full[g] = out[slot]
    return full[None]


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_released_dense_tome_equals_a_reference_pipeline(ratio):
    from algm_cli.models.reduction import embed

    model = perturbed(ToMeDenseSpec(1, ratio))
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ours, stats = model.forward_with_stats(images)
        for b in range(2):
            x, grid = embed(model.encoder, images[b:b + 1])
            for blk in model.encoder.blocks:
                attend = lambda t: ref_attention(blk.attn, t)[0]  # noqa: E731, B023
                x = x + ref_tome_branch(attend, blk.norm1(x), ratio)
                x = x + ref_tome_branch(blk.mlp, blk.norm2(x), ratio)
            expected = ref_logits(model, model.encoder.norm(x)[:, 1:], grid, (128, 128))
            assert torch.allclose(ours[b:b + 1], expected, atol=1e-4), b
    r = int(65 * ratio)  # the class token counts: 13 (0.2) or 32 (0.5) of 65
    assert stats == pytest.approx({f"L{layer}:tome_dense": (64 - r) / 64 for layer in range(1, 13)})


def test_released_act_equals_a_reference_pipeline_and_is_seeded():
    from algm_cli.models.reduction import embed

    model = perturbed(ACTSpec(1, hashes=8, seed=3))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, stats = model.forward_with_stats(images)
        again, _ = model.forward_with_stats(images)
        x, grid = embed(model.encoder, images)
        draw = torch.Generator().manual_seed(3)
        for blk in model.encoder.blocks:
            h = blk.norm1(x)
            B, T, C = h.shape
            heads, d = blk.attn.num_heads, C // blk.attn.num_heads
            q, k, v = blk.attn.qkv(h).reshape(B, T, 3, heads, d).permute(2, 0, 3, 1, 4)
            q = q * d ** -0.5
            w, off = torch.randn(d, 8, generator=draw), torch.rand(8, generator=draw)
            out = torch.empty(B, heads, T, d)
            for b in range(B):
                for hd in range(heads):
                    codes = torch.floor((q[b, hd] @ w + off) / 8.0).long()  # (T, 8)
                    packed = ((codes - codes.min(0).values) * 4 ** torch.arange(8)).sum(1)
                    for value in packed.unique():
                        members = (packed == value).nonzero()[:, 0]
                        centre = q[b, hd, members].mean(0)
                        out[b, hd, members] = (centre @ k[b, hd].T).softmax(-1) @ v[b, hd]
            x = x + blk.attn.proj(out.transpose(1, 2).reshape(B, T, C))
            x = x + blk.mlp(blk.norm2(x))
        expected = torch.cat([ref_logits(model, model.encoder.norm(x)[b:b + 1, 1:], grid, (64, 64))
                              for b in range(2)])
    assert torch.allclose(ours, expected, atol=1e-4)
    assert torch.equal(ours, again)  # the generator is re-seeded at every forward
    assert len(stats) == 12 and all(0 < v <= 17 / 17 for v in stats.values())


def test_released_elvit_tokens_mode_rebuilds_normed_tokens_before_the_decoder():
    from algm_cli.merge.baselines import soft_cluster
    from algm_cli.models.reduction import embed

    model = perturbed(ELViTSpec(4, 20, k=5, reconstruct="tokens"))
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours, _ = model.forward_with_stats(images)
        x, grid = embed(model.encoder, images)
        for layer, blk in enumerate(model.encoder.blocks, start=1):
            if layer == 4:
                saved = x[0, 1:]
                centres = soft_cluster(x[:, 1:], grid, (4, 4), 5, 5, 50.0)[0]  # pinned above
                x = torch.cat([x[:, :1], centres[None]], dim=1)
            x = blk(x)
        normed = model.encoder.norm(x)[0, 1:]  # the final norm first, as released
        full = ref_nearest_weights(saved, centres, 5, 0.02) @ normed
        expected = ref_logits(model, full[None], grid, (128, 128))
    assert torch.allclose(ours, expected, atol=1e-4)


def test_released_configs_hold_the_release_settings():
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base=None):
        m = {method: compose("run", overrides=[f"merge={method}", "backbone=vit_l"]).merge
             for method in ("elvit", "evit", "act", "tome_dense")}
    specs = {k: reduction_from_config(v, "vit_l") for k, v in m.items()}
    # configs/segmenter_hourglass_vit: location 9 (input of layer 11), 784 = 28 x 28, 0.02, k 20
    assert (specs["elvit"].layer, specs["elvit"].side, specs["elvit"].k) == (11, 28, 20)
    assert specs["elvit"].temperature == pytest.approx(1 / 0.02)
    assert specs["elvit"].reconstruct == "logits"
    # configs/segmenter_evit: keep rate 0.8 at layers 7, 13, 19 (0-based)
    assert specs["evit"].layers == (8, 14, 20) and specs["evit"].keep_rate == 0.8
    # configs/segmenter_act: act_q_hashes 32, every layer; configs/segmenter_tome: tome_r 0.2
    assert (specs["act"].hashes, specs["act"].start) == (32, 1)
    assert (specs["tome_dense"].ratio, specs["tome_dense"].start) == (0.2, 1)
    assert all(spec.variant == "released" for spec in specs.values())
    # the release README's settings are on the supp. Fig. 1 grids
    assert {0.9, 0.8, 0.5} <= set(m["evit"].settings) and {32, 24, 16} <= set(m["act"].settings)
    assert {0.2, 0.3, 0.5} <= set(m["tome_dense"].settings)
    assert {28, 20} <= set(m["elvit"].settings)
