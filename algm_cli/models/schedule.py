"""Merge schedules: which merge runs after which encoder layer, and how.

A schedule is plain data (frozen dataclasses built from the Hydra `merge` config); the encoder
reads it and calls the pure merge functions of `algm_cli.merge`. Layers are 1-based, as in the
paper (CLAP in layer 1, GBM in layer 5 for ViT-T/S/B and 7 for ViT-L, supp. Tab. 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..merge import MergeState, check_threshold, clap_merge, gbm_merge, tome_merge
from ..merge.newer import LINKAGES, atc_merge, mutual_pair_merge, pitome_margin, pitome_merge

METHODS = ("clap", "gbm", "tome", "pitome", "mpm", "atc")
PLACEMENTS = ("between", "after_mlp")
METRICS = ("tokens", "keys", "queries", "values")


@dataclass(frozen=True)
class MergeStepSpec:
    """One merge step: `method` after layer `layer`'s attention (or MLP, see placement).

    threshold: the fixed tau of CLAP/GBM (None for GBM with rule="released").
    rule: GBM threshold rule, "fixed" (the paper's calibrated tau) or "released" (the authors'
      in-batch rule mean + std / layer, which ignores `threshold`).
    r: ToMe's fixed number of merges.
    keep: PiToMe / ATC: fraction of the step's input tokens kept (PiToMe's `ratio`).
    margin: PiToMe's energy margin for this layer. linkage: ATC's linkage.
    The threshold of "mpm" is its similarity threshold.
    """

    layer: int
    method: str
    threshold: float | None = None
    rule: str = "fixed"
    r: int = 0
    keep: float = 1.0
    margin: float = 0.5
    linkage: str = "average"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"merge method must be one of {METHODS}; got {self.method!r}")
        if self.layer < 1:
            raise ValueError(f"merge layers are 1-based; got layer {self.layer}")
        if self.rule not in ("fixed", "released"):
            raise ValueError(f"GBM threshold rule must be 'fixed' or 'released'; got {self.rule!r}")
        needs_tau = self.method in ("clap", "mpm") or (self.method == "gbm" and self.rule == "fixed")
        if needs_tau:
            if self.threshold is None:
                raise ValueError(f"{self.method} in layer {self.layer} needs a threshold")
            check_threshold(self.threshold, f"{self.method} threshold")
        if self.method == "tome" and self.r < 0:
            raise ValueError(f"ToMe r must be >= 0; got {self.r}")
        if self.method in ("pitome", "atc") and not 0.0 < self.keep <= 1.0:
            raise ValueError(f"{self.method} keeps a fraction of tokens in (0, 1]; got {self.keep}")
        if self.method == "atc" and self.linkage not in LINKAGES:
            raise ValueError(f"ATC linkage must be one of {LINKAGES}; got {self.linkage!r}")

    @property
    def label(self) -> str:
        """Return the step's name in merge statistics, e.g. 'L5:gbm'."""
        return f"L{self.layer}:{self.method}"


@dataclass(frozen=True)
class MergeSchedule:
    """The merge steps of an encoder and the options they share.

    window: CLAP window (kh, kw). placement: "between" MHSA and MLP (the paper) or "after_mlp"
    (supp. Tab. 4b). metric: the features whose cosine similarity decides merging: the hidden
    tokens (default, as released) or the attention's keys / queries / values averaged over heads
    (supp. Tab. 4f). value / reduce: the Tab. 6 operators. proportional_attention: add log(size)
    to attention logits after merging (ToMe's rule; the released ALGM code has none).
    inclusive: compare scores with >= (released code) instead of > (paper text).
    """

    steps: tuple[MergeStepSpec, ...] = ()
    window: tuple[int, int] = (2, 2)
    placement: str = "between"
    metric: str = "tokens"
    value: str = "mean"
    reduce: bool = True
    proportional_attention: bool = False
    inclusive: bool = False

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"merge placement must be one of {PLACEMENTS}; got {self.placement!r}")
        if self.metric not in METRICS:
            raise ValueError(f"merge metric must be one of {METRICS}; got {self.metric!r}")
        if self.metric != "tokens" and self.placement != "between":
            raise ValueError(f"metric={self.metric!r} exists only with placement='between'")
        layers = [s.layer for s in self.steps]
        if len(set(layers)) != len(layers):
            raise ValueError(f"at most one merge step per layer; got layers {layers}")

    def at(self, layer: int) -> MergeStepSpec | None:
        """Return the step of `layer` (1-based), or None."""
        return next((s for s in self.steps if s.layer == layer), None)

    def check_depth(self, depth: int) -> None:
        """Raise ValueError when a step names a layer the encoder does not have."""
        bad = [s.layer for s in self.steps if s.layer > depth]
        if bad:
            raise ValueError(f"merge layers {bad} exceed the encoder depth {depth}")


NO_MERGE = MergeSchedule()


def algm_schedule(
    clap_threshold: float | None,
    gbm_threshold: float | None,
    clap_layer: int | None = 1,
    gbm_layers: tuple[int, ...] = (5,),
    gbm_rule: str = "fixed",
    **options,
) -> MergeSchedule:
    """Return ALGM's schedule: CLAP in `clap_layer` (None: no CLAP), GBM in each `gbm_layers`."""
    steps = []
    if clap_layer is not None:
        steps.append(MergeStepSpec(clap_layer, "clap", clap_threshold))
    threshold = gbm_threshold if gbm_rule == "fixed" else None
    steps += [MergeStepSpec(layer, "gbm", threshold, rule=gbm_rule) for layer in gbm_layers]
    return MergeSchedule(steps=tuple(sorted(steps, key=lambda s: s.layer)), **options)


def newer_schedule(
    method: str,
    depth: int,
    setting: float,
    layers: tuple[int, ...],
    margin_rule: str = "released",
    linkage: str = "average",
    **options,
) -> MergeSchedule:
    """Return the schedule of a newer training-free merge: one `method` step in each of `layers`.

    setting: PiToMe / ATC the fraction of tokens each step keeps (PiToMe's `ratio`), MPM its
    similarity threshold. PiToMe's margin follows the layer (`pitome_margin`).
    """
    steps = []
    for layer in layers:
        if method == "mpm":
            steps.append(MergeStepSpec(layer, "mpm", threshold=float(setting)))
        elif method == "pitome":
            steps.append(MergeStepSpec(layer, "pitome", keep=float(setting),
                                       margin=pitome_margin(layer, depth, margin_rule)))
        elif method == "atc":
            steps.append(MergeStepSpec(layer, "atc", keep=float(setting), linkage=linkage))
        else:
            raise ValueError(f"newer_schedule: unknown method {method!r}")
    return MergeSchedule(steps=tuple(sorted(steps, key=lambda s: s.layer)), **options)


def apply_step(
    spec: MergeStepSpec,
    schedule: MergeSchedule,
    x: Tensor,
    state: MergeState,
    grid: tuple[int, int],
    metric: Tensor | None,
    class_token: bool = True,
) -> tuple[Tensor, MergeState]:
    """Run one merge step on patch tokens x (B, N, C); return (tokens, state).

    class_token: the encoder set a class token aside (GBM / ToMe split as the official codes do).
    """
    common = dict(metric=metric, value=schedule.value, reduce=schedule.reduce)
    if spec.method == "clap":
        if not state.in_raster_order:  # a step before CLAP already merged: CLAP cannot apply
            raise ValueError(f"CLAP in layer {spec.layer} must come before any other merge step")
        return clap_merge(x, state, grid, schedule.window, spec.threshold,
                          inclusive=schedule.inclusive, **common)
    if spec.method == "gbm":
        if spec.rule == "released":
            return gbm_merge(x, state, threshold_rule="released", layer=spec.layer,
                             class_token=class_token, **common)
        return gbm_merge(x, state, threshold=spec.threshold, inclusive=schedule.inclusive,
                         class_token=class_token, **common)
    if spec.method == "mpm":
        return mutual_pair_merge(x, state, spec.threshold, inclusive=schedule.inclusive, **common)
    n = int(x.shape[1])
    if spec.method == "pitome":  # the release's r = floor(N - N * ratio)
        return pitome_merge(x, state, math.floor(n - n * spec.keep), spec.margin, **common)
    if spec.method == "atc":
        return atc_merge(x, state, max(1, round(spec.keep * n)), spec.linkage, **common)
    return tome_merge(x, state, r=spec.r, class_token=class_token, **common)
