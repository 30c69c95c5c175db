"""Segformer++ merge presets (Kienzle et al., 2024): which token sets each MiT stage merges.

`SegformerMerge` is plain configuration read by `Segformer` at every forward; the presets follow
the released KieDani/SegformerPlusPlus configs (see models/segformer.py for where merges act).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..merge.segformerpp import MERGE_MODES, merge_tokens
from ..merge.state import MergeState

Grid = tuple[int, int]


@dataclass(frozen=True)
class TokenMerge:
    """How one token set (queries or keys/values) is merged in each attention call of a stage.

    mode: "bsm" (grid bipartite soft matching), "n1d" or "n2d" (neighbour pooling).
    r: bsm only, the fraction of the set's tokens merged away (int(r * N), capped).
    cell: (rows, cols); bsm: one destination per cell; n2d: the pooling window.
    factor: n1d only, how many consecutive tokens are averaged.
    """

    mode: str
    r: float = 0.0
    cell: tuple[int, int] = (2, 2)
    factor: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MERGE_MODES:
            raise ValueError(f"merge mode must be one of {MERGE_MODES}; got {self.mode!r}")
        if not 0.0 <= self.r <= 1.0:
            raise ValueError(f"merge r must lie in [0, 1]; got {self.r}")
        cell = tuple(int(c) for c in self.cell)  # configs may give a list
        if len(cell) != 2 or min(cell) < 1 or int(self.factor) < 1:
            raise ValueError(f"merge cell must be two positive ints and factor >= 1; got {self}")
        object.__setattr__(self, "cell", cell)

    def apply(self, x: Tensor, grid: Grid) -> tuple[Tensor, MergeState]:
        """Return (merged tokens (B, N', C), state to unmerge) for tokens x (B, N, C) on grid."""
        return merge_tokens(x, grid, self.mode, self.r, self.cell, self.factor)


@dataclass(frozen=True)
class StageMerge:
    """The query merge and key/value merge of one stage (None: that set is not merged)."""

    q: TokenMerge | None = None
    kv: TokenMerge | None = None


@dataclass(frozen=True)
class SegformerMerge:
    """Segformer++ configuration: one `StageMerge` per encoder stage."""

    name: str = "none"
    stages: tuple[StageMerge, ...] = field(default=(StageMerge(),) * 4)

    def __post_init__(self) -> None:
        if len(self.stages) != 4:
            count = len(self.stages)
            raise ValueError(f"SegformerMerge needs one StageMerge per stage (4); got {count}")
        object.__setattr__(self, "stages", tuple(self.stages))


PRESET_ALIASES = {
    "segformerpp_hq": "hq",
    "segformerpp_fast": "fast",
    "neighbour2d": "2x2",
}


def _kv_then_q(kv: TokenMerge, q: TokenMerge, name: str) -> SegformerMerge:
    """Return a preset merging keys/values in stages 1-2 and queries in stages 3-4."""
    return SegformerMerge(name, (StageMerge(kv=kv),) * 2 + (StageMerge(q=q),) * 2)


def segformerpp_preset(name: str) -> SegformerMerge:
    """Return the Segformer++ preset `name`: none, hq, fast, 2x2 (or a runner alias of one)."""
    key = PRESET_ALIASES.get(name, name)
    if key == "none":
        return SegformerMerge()
    if key == "hq":
        return _kv_then_q(TokenMerge("bsm", 0.6, (2, 2)), TokenMerge("bsm", 0.8, (4, 4)), key)
    if key == "fast":
        return _kv_then_q(TokenMerge("bsm", 0.9, (4, 4)), TokenMerge("bsm", 0.9, (4, 4)), key)
    if key == "2x2":
        return SegformerMerge(key, (StageMerge(q=TokenMerge("n2d", cell=(2, 2))),) * 4)
    known = ["none", "hq", "fast", "2x2", *PRESET_ALIASES]
    raise ValueError(f"unknown Segformer++ preset {name!r}; expected one of {known}")
