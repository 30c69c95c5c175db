"""Packed attention backends agree with the per-image loop wherever they run."""

import pytest
import torch

from algm_cli.models.packed_attention import packed_sdpa, resolve, supports

LENGTHS = [5, 17, 1, 9]
CPU = torch.device("cpu")


def qkv(heads=2, dim=8, seed=0):
    """Return packed (T, H, d) q, k, v and a per-key log-size bias (T,)."""
    g = torch.Generator().manual_seed(seed)
    T = sum(LENGTHS)
    q, k, v = torch.randn(T, 3, heads, dim, generator=g).unbind(1)  # strided views, as in models
    sizes = torch.randint(1, 5, (T,), generator=g).float()
    return q, k, v, sizes.log()


def reference(q, k, v, bias=None):
    """Return attention per image by the textbook formula: softmax(q k^T / sqrt(d) + bias) v."""
    outs = []
    for i, (qi, ki, vi) in enumerate(zip(q.split(LENGTHS), k.split(LENGTHS), v.split(LENGTHS))):
        logits = torch.einsum("qhd,khd->hqk", qi, ki) / qi.shape[-1] ** 0.5
        if bias is not None:
            logits = logits + bias.split(LENGTHS)[i]
        outs.append(torch.einsum("hqk,khd->qhd", logits.softmax(-1), vi))
    return torch.cat(outs)


@pytest.mark.parametrize("backend", ["auto", "loop", "nested", "flex"])
def test_backends_agree_with_the_reference(backend):
    if backend != "auto" and not supports(backend, CPU, torch.float32, False):
        pytest.skip(f"{backend} is not available in this torch")
    q, k, v, _ = qkv()
    torch.testing.assert_close(packed_sdpa(q, k, v, LENGTHS, backend), reference(q, k, v),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "loop", "flex"])
def test_proportional_bias_agrees_with_the_reference(backend):
    if not supports(backend if backend != "auto" else "loop", CPU, torch.float32, True):
        pytest.skip(f"{backend} is not available in this torch")
    q, k, v, bias = qkv(seed=1)
    torch.testing.assert_close(packed_sdpa(q, k, v, LENGTHS, backend, bias=bias),
                               reference(q, k, v, bias), rtol=1e-5, atol=1e-5)


def test_auto_resolution_and_bad_names():
    assert resolve("auto", CPU, torch.float32, True) == "loop"  # eager flex is for tests only
    assert resolve("auto", CPU, torch.float32, False) == "loop"  # CPU nested SDPA is unfused
    assert not supports("varlen", CPU, torch.bfloat16, False)  # a CUDA kernel
    with pytest.raises(ValueError, match="cannot run here"):
        resolve("varlen", CPU, torch.float32, False)
    with pytest.raises(ValueError, match="nested"):
        resolve("nested", CPU, torch.float32, True)
    with pytest.raises(ValueError, match="packed_attention must be one of"):
        packed_sdpa(*qkv()[:3], LENGTHS, "fast")
