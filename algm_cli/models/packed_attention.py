"""Attention over a packed batch: every image attends only to its own tokens, in one call.

q, k, v are (T, heads, d): the tokens of all images, image after image, with per-image lengths.
Backends, each used only where the installed torch has the API (detected, never assumed from a
version number):
- "varlen": `torch.nn.attention.varlen.varlen_attn` (Flash Attention on cumulative offsets):
  CUDA, fp16/bf16, no additive bias;
- "nested": `scaled_dot_product_attention` on nested jagged tensors
  (`torch.nested.nested_tensor_from_jagged`): any device, no additive bias;
- "flex": FlexAttention with a document block mask; a `score_mod` adds each key's log-size, so it
  also runs ToMe's proportional attention; compiled on CUDA (eager elsewhere materialises the
  full T x T scores: tests only);
- "loop": one `scaled_dot_product_attention` call per image (always available, the reference).
"auto" picks on CUDA the first that applies of varlen, flex (with a bias), nested (no bias),
loop; on other devices the loop: torch 2.14's CPU nested SDPA takes an unfused path, ~10x slower
than 8 per-image fused calls on ViT-S 512 tokens (measured on this project's 2-core CPU), and
eager flex materialises T x T scores. All backends agree within float tolerance
(tests/models/test_packed_attention.py).
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "varlen", "nested", "flex", "loop")


@functools.cache
def _varlen_fn():
    """Return torch's varlen_attn, or None when this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _flex_fns():
    """Return (flex_attention, create_block_mask), or None when this torch has no FlexAttention."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    return flex_attention, create_block_mask


@functools.cache
def _compiled_flex():
    """Return flex_attention compiled once (the fused kernel; CUDA only)."""
    return torch.compile(_flex_fns()[0], dynamic=True)


def has_nested() -> bool:
    """Return True when this torch builds nested jagged tensors from values and offsets."""
    return hasattr(torch, "nested") and hasattr(torch.nested, "nested_tensor_from_jagged")


def supports(backend: str, device: torch.device, dtype: torch.dtype, bias: bool) -> bool:
    """Return True when `backend` can run packed attention here (with an additive key bias?)."""
    if backend == "loop":
        return True
    if backend == "varlen":
        return (_varlen_fn() is not None and device.type == "cuda" and not bias
                and dtype in (torch.float16, torch.bfloat16))
    if backend == "nested":
        return has_nested() and not bias
    if backend == "flex":
        return _flex_fns() is not None
    raise ValueError(f"merge.packed_attention must be one of {BACKENDS}; got {backend!r}")


def resolve(backend: str, device: torch.device, dtype: torch.dtype, bias: bool) -> str:
    """Return the backend to run: `backend` itself, or for "auto" the first that applies here."""
    if backend != "auto":
        if not supports(backend, device, dtype, bias):
            raise ValueError(f"packed attention backend {backend!r} cannot run here "
                             f"(device {device.type}, {dtype}, bias={bias}, torch {torch.__version__})")
        return backend
    order = ("varlen", "flex", "nested") if device.type == "cuda" else ()
    for name in order:
        if supports(name, device, dtype, bias) and (name != "flex" or bias):
            return name
    return "loop"


def check_backend(backend: str) -> str:
    """Return `backend` or raise ValueError naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"merge.packed_attention must be one of {BACKENDS}; got {backend!r}")
    return backend


def _loop(q, k, v, lengths, bias, dropout):
    """Per-image SDPA: (T, H, d) -> (T, H, d)."""
    outs = []
    pieces = zip(q.split(lengths), k.split(lengths), v.split(lengths),
                 bias.split(lengths) if bias is not None else [None] * len(lengths))
    for qi, ki, vi, bi in pieces:
        mask = None if bi is None else bi.to(qi.dtype)[None, None, None, :]
        out = F.scaled_dot_product_attention(qi.transpose(0, 1)[None], ki.transpose(0, 1)[None],
                                             vi.transpose(0, 1)[None], attn_mask=mask,
                                             dropout_p=dropout)
        outs.append(out[0].transpose(0, 1))
    return torch.cat(outs)


def _nested(q, k, v, offsets, dropout):
    """SDPA on nested jagged tensors (B, j, H, d) -> packed (T, H, d)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prototype-stage warnings of nested tensors
        # contiguous values: torch 2.14's CPU nested SDPA fails on strided views (it probes CUDA)
        nq, nk, nv = (torch.nested.nested_tensor_from_jagged(t.contiguous(), offsets).transpose(1, 2)
                      for t in (q, k, v))
        out = F.scaled_dot_product_attention(nq, nk, nv, dropout_p=dropout)
        return out.transpose(1, 2).values()


def _flex(q, k, v, lengths, bias):
    """FlexAttention with a document mask (and a log-size score_mod): (T, H, d) -> (T, H, d)."""
    flex_attention, create_block_mask = _flex_fns()
    T = q.shape[0]
    counts = torch.tensor(lengths, device=q.device)
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=q.device), counts,
                                  output_size=T)

    def same_image(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    score_mod = None
    if bias is not None:
        key_bias = bias.to(torch.float32)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + key_bias[kv_idx]

    # on CUDA build the block mask compiled where this torch can (eager materialises T x T)
    compile_mask = q.device.type == "cuda" and "_compile" in inspect.signature(
        create_block_mask).parameters
    options = {"_compile": True} if compile_mask else {}
    block_mask = create_block_mask(same_image, None, None, T, T, device=q.device, **options)
    fn = _compiled_flex() if q.device.type == "cuda" else flex_attention
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is unfused
        out = fn(*(t.transpose(0, 1)[None] for t in (q, k, v)), score_mod=score_mod,
                 block_mask=block_mask)
    return out[0].transpose(0, 1)


def _varlen(q, k, v, offsets, lengths):
    """torch's varlen_attn on cumulative offsets: (T, H, d) -> (T, H, d)."""
    cu = offsets.to(torch.int32)
    longest = max(lengths)
    return _varlen_fn()(q, k, v, cu, cu, longest, longest)


def packed_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lengths: list[int],
    backend: str = "auto",
    bias: Tensor | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """Return attention (T, H, d) of packed q, k, v (T, H, d); image i owns lengths[i] tokens.

    bias: (T,) additive per-key logits (ToMe's log-size), or None. dropout: attention dropout
    (loop and nested only).
    """
    name = resolve(check_backend(backend), q.device, q.dtype, bias is not None)
    if dropout and name in ("varlen", "flex"):
        name = "loop"
    if name == "loop":
        return _loop(q, k, v, lengths, bias, dropout)
    offsets = F.pad(torch.tensor(lengths, device=q.device).cumsum(0), (1, 0))
    if name == "nested":
        return _nested(q, k, v, offsets, dropout)
    if name == "flex":
        return _flex(q, k, v, lengths, bias)
    return _varlen(q, k, v, offsets, lengths)
