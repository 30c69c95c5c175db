"""The baselines' settings: one frozen spec per method, read from its merge config.

`reduction_from_config` turns conf/merge/<method>.yaml into an `EViTSpec`, `ToMeDenseSpec`,
`ACTSpec`, `ELViTSpec` or `AiluRusSpec`; `models/reduction.py` runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..merge.baselines import cluster_grid_side, evit_keep_count
from ..merge.expedit import ELVIT_FACTOR

BASELINE_METHODS = ("evit", "act", "elvit", "ailurus", "tome_dense")
VARIANTS = ("released", "paper")


def _check_variant(variant: str) -> None:
    """Raise ValueError unless variant is released or paper."""
    if variant not in VARIANTS:
        raise ValueError(f"merge.variant must be one of {VARIANTS}; got {variant!r}")


def _check_layer(layer: int, depth: int, what: str) -> None:
    """Raise ValueError unless 1 <= layer <= depth."""
    if not 1 <= layer <= depth:
        raise ValueError(f"{what} layer {layer} is outside the encoder's layers 1..{depth}")


@dataclass(frozen=True)
class EViTSpec:
    """EViT: in each of `layers`, keep ceil(keep_rate * N) patch tokens, fuse the rest into one."""

    layers: tuple[int, ...]
    keep_rate: float
    variant: str = "released"
    method: str = "evit"

    def check(self, depth: int) -> None:
        """Raise ValueError for layers outside 1..depth or a keep rate outside (0, 1]."""
        _check_variant(self.variant)
        evit_keep_count(1, self.keep_rate)
        for layer in self.layers:
            _check_layer(layer, depth, "EViT")


@dataclass(frozen=True)
class ToMeDenseSpec:
    """Dense ToMe: from layer `start` on, merge floor(ratio * N) tokens around every sub-block."""

    start: int
    ratio: float
    proportional_attention: bool = True  # paper variant only (the release has none)
    variant: str = "released"
    method: str = "tome_dense"

    def check(self, depth: int) -> None:
        """Raise ValueError for a start outside 1..depth or a ratio outside [0, 0.5]."""
        _check_variant(self.variant)
        _check_layer(self.start, depth, "dense ToMe start")
        if not 0.0 <= self.ratio <= 0.5:
            raise ValueError(f"dense ToMe merge ratio must lie in [0, 0.5]; got {self.ratio}")


@dataclass(frozen=True)
class ACTSpec:
    """ACT from layer `start`: released, `hashes` E2LSH rounds group the queries (seeded with
    `seed`); paper, round(fraction * N) k-means query centroids per head."""

    start: int
    fraction: float = 1.0  # paper variant
    iterations: int = 3  # paper variant
    variant: str = "released"
    hashes: int = 32  # released variant
    seed: int = 0  # released variant
    method: str = "act"

    def check(self, depth: int) -> None:
        """Raise ValueError for a start outside 1..depth, a bad fraction or no iterations."""
        _check_variant(self.variant)
        _check_layer(self.start, depth, "ACT start")
        if self.hashes < 1:
            raise ValueError(f"ACT needs at least one hash round; got {self.hashes}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"ACT cluster fraction must lie in (0, 1]; got {self.fraction}")
        if self.iterations < 1:
            raise ValueError(f"ACT needs at least one k-means iteration; got {self.iterations}")


@dataclass(frozen=True)
class ELViTSpec:
    """ELViT: cluster the input of `layer` to a grid of side `side` per `reference` token side."""

    layer: int
    side: float
    reference: int = 40
    iterations: int = 5
    window: int = 5
    temperature: float | None = None  # None: 50 (released factor 0.02) | 100 (paper variant)
    k: int = 20
    weighting: str = "softmax"  # paper variant
    variant: str = "released"
    reconstruct: str = "logits"  # released variant: logits (released config) | tokens
    method: str = "elvit"

    def __post_init__(self) -> None:
        """Fill the variant's default temperature."""
        if self.temperature is None:
            default = 1.0 / ELVIT_FACTOR if self.variant == "released" else 100.0
            object.__setattr__(self, "temperature", default)

    def check(self, depth: int) -> None:
        """Raise ValueError for a layer outside 1..depth or a non-positive size or temperature."""
        _check_variant(self.variant)
        if self.reconstruct not in ("logits", "tokens"):
            raise ValueError(
                f"merge.reconstruct must be logits or tokens; got {self.reconstruct!r}")
        _check_layer(self.layer, depth, "ELViT clustering")
        if self.side <= 0 or self.reference <= 0 or self.temperature <= 0 or self.k < 1:
            raise ValueError("ELViT side, reference grid, temperature and k must be positive")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"the ELViT window must be an odd positive size; got {self.window}")
        if self.weighting not in ("softmax", "l2"):
            raise ValueError(f"ELViT weighting must be softmax or l2; got {self.weighting!r}")

    def cluster_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        """Return the (h', w') cluster grid for a (h, w) token grid."""
        return (cluster_grid_side(grid[0], self.side, self.reference),
                cluster_grid_side(grid[1], self.side, self.reference))


@dataclass(frozen=True)
class AiluRusSpec:
    """AiluRus: cluster the input of `layer` into round(fraction * N) density-peak clusters."""

    layer: int
    fraction: float
    k: int = 5
    radius: int = 2
    assign_radius: int | None = None
    proportional_attention: bool = False
    method: str = "ailurus"

    def check(self, depth: int) -> None:
        """Raise ValueError for a layer outside 1..depth or a fraction outside (0, 1]."""
        _check_layer(self.layer, depth, "AiluRus clustering")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"AiluRus cluster fraction must lie in (0, 1]; got {self.fraction}")
        if self.k < 1 or self.radius < 1:
            raise ValueError("AiluRus needs k >= 1 neighbours and a spatial radius >= 1")


Reduction = EViTSpec | ToMeDenseSpec | ACTSpec | ELViTSpec | AiluRusSpec


def per_backbone(value, backbone: str, key: str):
    """Return `value`, or value[backbone] (else value['default']) when it is a mapping."""
    if not isinstance(value, Mapping):
        return value
    if backbone in value:
        return value[backbone]
    if "default" in value:
        return value["default"]
    raise ValueError(f"merge.{key} has no entry for backbone {backbone!r} and no 'default'")


def reduction_from_config(merge: Mapping, backbone: str) -> Reduction:
    """Return the reduction described by a `merge` config (conf/merge/<method>.yaml).

    Keys: method, variant (released | paper; not AiluRus), setting (the method's reduction
    knob, see each yaml; released ACT: hash rounds), and per method evit: layers; tome_dense:
    start_layer, proportional_attention; act: start_layer, iterations, hash_seed; elvit: layer,
    reference_grid, iterations, cluster_window, temperature, recon_k, recon_weighting,
    reconstruct; ailurus: layer, density_k, density_radius, assign_radius,
    proportional_attention. Layer keys may map backbone names (and 'default') to values.
    """
    method = merge["method"]
    if method not in BASELINE_METHODS:
        raise ValueError(f"merge.method={method!r} is not a baseline; expected {BASELINE_METHODS}")
    setting = float(merge["setting"])
    get = lambda key: per_backbone(merge[key], backbone, key)  # noqa: E731
    variant = str(merge.get("variant", "released"))
    if method == "evit":
        return EViTSpec(tuple(int(v) for v in get("layers")), setting, variant)
    if method == "tome_dense":
        return ToMeDenseSpec(int(get("start_layer")), setting,
                             bool(merge.get("proportional_attention", True)), variant)
    if method == "act":
        start = int(get("start_layer"))
        if variant != "released":
            return ACTSpec(start, setting, int(merge.get("iterations", 3)), variant)
        if setting != int(setting):
            raise ValueError(f"released ACT's merge.setting is a hash-round count; got {setting}")
        return ACTSpec(start, variant=variant, hashes=int(setting),
                       seed=int(merge.get("hash_seed", 0)))
    if method == "elvit":
        return ELViTSpec(int(get("layer")), setting, int(merge.get("reference_grid", 40)),
                         int(merge.get("iterations", 5)), int(merge.get("cluster_window", 5)),
                         None if merge.get("temperature") is None else float(merge["temperature"]),
                         int(merge.get("recon_k", 20)),
                         str(merge.get("recon_weighting", "softmax")), variant,
                         str(merge.get("reconstruct", "logits")))
    radius = merge.get("assign_radius")
    return AiluRusSpec(int(get("layer")), setting, int(merge.get("density_k", 5)),
                       int(merge.get("density_radius", 2)),
                       None if radius is None else int(radius),
                       bool(merge.get("proportional_attention", False)))
