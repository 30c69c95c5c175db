"""GFLOPs of a segmentation model's forward on one image, counted with fvcore.

fvcore counts one multiply-add as one FLOP, the convention of the ALGM and Segmenter papers
(Segmenter ViT-S at 512 x 512: 38.6 "GFLOPs"). Conventions:
- always: a handle for `aten::scaled_dot_product_attention` (timm's and our fused attention):
  q @ k^T plus attn @ v, i.e. B * heads * N_q * N_k * (d_qk + d_v), what fvcore counts for the
  explicit matmuls of the released code's attention;
- count_merge_ops=False (default, the papers' count with fvcore's own table): merge operations
  (pooling, norms, gathers, scatters, index adds) count 0;
- count_merge_ops=True adds one FLOP per input element for average pooling (CLAP window means),
  vector norms (cosine similarity) and index_add / scatter_add (size-weighted merging).
`gflops_split` returns both, so a row can carry the merge ops' extra GFLOPs in its own column.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from math import prod

import torch

# fvcore calls torch.jit.script at import, which warns on this torch; the warning is not ours
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
from fvcore.nn import FlopCountAnalysis  # noqa: E402
from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape  # noqa: E402
from torch import Tensor, nn  # noqa: E402


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """Return the multiply-adds of scaled_dot_product_attention(q, k, v, ...)."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


ATTENTION_HANDLES: dict[str, Callable] = {"aten::scaled_dot_product_attention": sdpa_flop_jit}
MERGE_OP_HANDLES: dict[str, Callable] = {
    "aten::avg_pool2d": elementwise_flop_counter(1, 0),
    "aten::linalg_vector_norm": elementwise_flop_counter(1, 0),
    "aten::norm": elementwise_flop_counter(1, 0),
    "aten::index_add": elementwise_flop_counter(1, 0),
    "aten::index_add_": elementwise_flop_counter(1, 0),
    "aten::scatter_add": elementwise_flop_counter(1, 0),
    "aten::scatter_add_": elementwise_flop_counter(1, 0),
}
EXTRA_HANDLES: dict[str, Callable] = {**ATTENTION_HANDLES, **MERGE_OP_HANDLES}
FLOPS_CONVENTIONS = {False: "fvcore", True: "fvcore+merge_ops"}


class _LogitsOnly(nn.Module):
    """Wrap a model so tracing sees a single tensor output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        out = self.model(images)
        return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def count_gflops(model: nn.Module, images: Tensor, count_merge_ops: bool = False) -> float:
    """Return the forward GFLOPs (multiply-adds / 1e9) of `model` on `images` (1, 3, H, W).

    Merged models make data-dependent choices, so the count is for this image; callers average
    over images. The model is put in eval mode for the count and restored afterwards.
    count_merge_ops: also count the merge operations (see the module docstring).
    """
    if images.dim() != 4 or images.shape[0] != 1:
        raise ValueError(f"count_gflops expects one image (1, 3, H, W); got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(_LogitsOnly(model), (images,))
        analysis.set_op_handle(**(EXTRA_HANDLES if count_merge_ops else ATTENTION_HANDLES))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation, inside fvcore
            return analysis.total() / 1e9
    finally:
        model.train(was_training)


def gflops_split(model: nn.Module, images: Tensor) -> tuple[float, float]:
    """Return (GFLOPs with fvcore's own handles, extra GFLOPs of the merge ops) for one image."""
    plain = count_gflops(model, images, count_merge_ops=False)
    return plain, count_gflops(model, images, count_merge_ops=True) - plain
