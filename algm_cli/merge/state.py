"""Merge bookkeeping: which current token every original token belongs to, and group sizes.

Every merge in this package is described by an *assignment*: a (B, N) map sending each current
token to the slot of the token it becomes, with the same number of slots N' for every image.
`apply_assignment` turns an assignment into new token values and a new `MergeState`; the state
keeps sources as an index map (B, N_original), so unmerging is one gather, never a dense N x N
source matrix (the authors' released code keeps one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

VALUE_MODES = ("mean", "random")


@dataclass(frozen=True)
class MergeStep:
    """What one merge step did: its name, tokens kept, and each image's own eligible count."""

    name: str
    tokens_in: int
    tokens_out: int
    eligible: Tensor | None = None  # (B,) merges each image alone would have made (None: fixed r)


@dataclass(frozen=True)
class MergeState:
    """Immutable record of merges applied to a batch of token sequences.

    index: (B, N_original) long, the current token that each original token is part of.
    sizes: (B, N_current) float, how many original tokens each current token stands for.
    steps: one `MergeStep` per merge applied so far (for logging kept-token fractions).
    """

    index: Tensor
    sizes: Tensor
    steps: tuple[MergeStep, ...] = field(default=())

    @classmethod
    def start(
        cls,
        batch_size: int,
        num_tokens: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> MergeState:
        """Return the identity state: every token stands for itself."""
        index = torch.arange(num_tokens, device=device).expand(batch_size, num_tokens)
        sizes = torch.ones(batch_size, num_tokens, device=device, dtype=dtype)
        return cls(index=index, sizes=sizes)

    @property
    def batch_size(self) -> int:
        """Return B."""
        return self.index.shape[0]

    @property
    def num_original(self) -> int:
        """Return the number of tokens before any merge."""
        return self.index.shape[1]

    @property
    def num_tokens(self) -> int:
        """Return the current number of tokens."""
        return self.sizes.shape[1]

    @property
    def in_raster_order(self) -> bool:
        """Return True while token i still sits at position i (no step has reduced the tokens)."""
        if self.num_tokens != self.num_original:
            return False
        return bool((self.index == torch.arange(self.num_original, device=self.index.device)).all())

    def unmerge(self, x: Tensor) -> Tensor:
        """Return (B, N_original, C): each original position gets the token it was merged into."""
        if x.shape[:2] != self.sizes.shape:
            raise ValueError(
                f"unmerge expects tokens of shape (B, N, C) = ({self.batch_size}, "
                f"{self.num_tokens}, C); got {tuple(x.shape)}"
            )
        return gather_tokens(x, self.index)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Return x[b, index[b, i]] for every b, i as a (B, M, C) tensor (one batched gather)."""
    B, N, C = x.shape
    offsets = (torch.arange(B, device=x.device) * N).unsqueeze(1)
    flat = (index + offsets).reshape(-1)
    return x.reshape(B * N, C).index_select(0, flat).reshape(B, index.shape[1], C)


def apply_assignment(
    x: Tensor,
    state: MergeState,
    assign: Tensor,
    num_out: int,
    step: MergeStep,
    value: str = "mean",
    reduce: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, MergeState]:
    """Merge tokens that share a slot of `assign` (B, N) -> [0, num_out); return (x', state').

    value="mean": a merged token is the size-weighted mean of its members, hence always the exact
    mean of the original tokens it stands for. value="random": it takes the value of one member
    chosen uniformly at random (paper Tab. 6 / supp. Tab. 4c). reduce=False keeps the token count
    ("no reduction", Tab. 6): every member takes its group's value and the state is unchanged.
    """
    if value not in VALUE_MODES:
        raise ValueError(f"merge value mode must be one of {VALUE_MODES}; got {value!r}")
    B, N, C = x.shape
    offsets = (torch.arange(B, device=x.device) * num_out).unsqueeze(1)
    flat = (assign + offsets).reshape(-1)  # (B*N,) slot of each token in the flat output
    sizes = state.sizes.to(x.dtype)
    new_sizes = sizes.new_zeros(B * num_out).index_add_(0, flat, sizes.reshape(-1))
    if value == "mean":
        weighted = (x * sizes.unsqueeze(-1)).reshape(B * N, C)
        summed = x.new_zeros(B * num_out, C).index_add(0, flat, weighted)
        merged = summed / new_sizes.unsqueeze(-1)
    else:
        priority = torch.rand(B * N, device=x.device, generator=generator)
        best = priority.new_full((B * num_out,), -1.0).scatter_reduce(
            0, flat, priority, reduce="amax"
        )
        chosen = (priority == best.index_select(0, flat)).to(x.dtype).unsqueeze(-1)
        merged = x.new_zeros(B * num_out, C).index_add(0, flat, x.reshape(B * N, C) * chosen)
    merged = merged.reshape(B, num_out, C)
    if not reduce:
        replicated = gather_tokens(merged, assign)
        kept = MergeStep(step.name, step.tokens_in, step.tokens_in, step.eligible)
        return replicated, MergeState(state.index, state.sizes, state.steps + (kept,))
    new_index = assign.gather(1, state.index)
    new_state = MergeState(
        index=new_index,
        sizes=new_sizes.reshape(B, num_out).to(state.sizes.dtype),
        steps=state.steps + (step,),
    )
    return merged, new_state
