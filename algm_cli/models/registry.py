"""Model registry: backbone facts and the model families with what each supports.

A family registers itself in its own module with one call (see docs/ARCHITECTURE.md):

    register_family(name="setr", builder=build_setr, backbone="vit",
                    merges=SCHEDULE_METHODS, batching=("min",), bucket=True)

and a module that adds model-built merge methods to an existing family registers them with
`register_merges(family, methods, builder)`. The engine asks the registry, never a tuple of names:
`family(name)`, `family.check(merge, batching, bucket)`, `family.build(request)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

# --------------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class BackboneFacts:
    """Architecture facts of one backbone: kind (vit / mit), width, depth, heads, patch."""

    name: str
    kind: str
    dim: int  # ViT: embedding width; MiT: last-stage width
    depth: int  # ViT: blocks; MiT: blocks over all stages
    heads: int  # ViT: heads; MiT: last-stage heads
    patch: int  # ViT: patch size; MiT: stride of the first stage
    timm_name: str | None = None
    registers: int = 0  # register tokens after the class token (DINOv2 with registers)


BACKBONES: dict[str, BackboneFacts] = {
    "vit_t": BackboneFacts("vit_t", "vit", 192, 12, 3, 16, "vit_tiny_patch16_384"),
    "vit_s": BackboneFacts("vit_s", "vit", 384, 12, 6, 16, "vit_small_patch16_384"),
    "vit_b": BackboneFacts("vit_b", "vit", 768, 12, 12, 16, "vit_base_patch16_384"),
    "vit_l": BackboneFacts("vit_l", "vit", 1024, 24, 16, 16, "vit_large_patch16_384"),
    # DINOv2 with 4 registers, built with patch 16 as EoMT does (timm resamples the patch-14
    # kernel of pretrained weights); position embeddings cover the patches only
    "dinov2_s": BackboneFacts("dinov2_s", "vit", 384, 12, 6, 16, "vit_small_patch14_reg4_dinov2", 4),
    "dinov2_b": BackboneFacts("dinov2_b", "vit", 768, 12, 12, 16, "vit_base_patch14_reg4_dinov2", 4),
    "dinov2_l": BackboneFacts("dinov2_l", "vit", 1024, 24, 16, 16, "vit_large_patch14_reg4_dinov2",
                              4),
    "dinov2_g": BackboneFacts("dinov2_g", "vit", 1536, 40, 24, 16, "vit_giant_patch14_reg4_dinov2",
                              4),
    "mit_b0": BackboneFacts("mit_b0", "mit", 256, 8, 8, 4),
    "mit_b1": BackboneFacts("mit_b1", "mit", 512, 8, 8, 4),
    "mit_b2": BackboneFacts("mit_b2", "mit", 512, 16, 8, 4),
    "mit_b3": BackboneFacts("mit_b3", "mit", 512, 28, 8, 4),
    "mit_b4": BackboneFacts("mit_b4", "mit", 512, 41, 8, 4),
    "mit_b5": BackboneFacts("mit_b5", "mit", 512, 52, 8, 4),
    "eva_g": BackboneFacts("eva_g", "eva", 1408, 40, 16, 16),
    "eva02_t": BackboneFacts("eva02_t", "eva", 192, 12, 3, 16, "eva02_tiny_patch14_224"),
    "eva02_s": BackboneFacts("eva02_s", "eva", 384, 12, 6, 16, "eva02_small_patch14_224"),
    "eva02_b": BackboneFacts("eva02_b", "eva", 768, 12, 12, 16, "eva02_base_patch14_224"),
    "eva02_l": BackboneFacts("eva02_l", "eva", 1024, 24, 16, 16, "eva02_large_patch14_224"),
}
BACKBONE_KINDS = {"vit": "vit_t, vit_s, vit_b, vit_l or dinov2_s..dinov2_g", "mit": "mit_b0..mit_b5",
                  "eva": "eva_g or eva02_t/s/b/l"}


def backbone(name: str) -> BackboneFacts:
    """Return the facts of backbone `name`; ValueError for an unknown one."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {list(BACKBONES)}")
    return BACKBONES[name]


# --------------------------------------------------------------------------------- merge names

# ALGM and its ablations: thresholds (a number, `released` or `auto` = calibrated)
THRESHOLD_METHODS = ("algm", "clap_only", "gbm_only")
# methods that run as a MergeSchedule inside the ViT encoder (no extra modules in the model)
# training-free merges published after ALGM, run as encoder schedules (merge/newer.py)
NEWER_METHODS = ("pitome", "mpm", "atc")
SCHEDULE_METHODS = ("none", *THRESHOLD_METHODS, "tome", *NEWER_METHODS)


# --------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class BuildRequest:
    """What a family builder needs: plain values resolved from the run spec."""

    backbone: str
    num_classes: int
    img_size: int
    schedule: object  # MergeSchedule (ALGM / ToMe steps), NO_MERGE otherwise
    model: Mapping  # the family's options (conf/model/<name>.yaml)
    merge: Mapping  # the merge options (conf/merge/<method>.yaml)
    reduction_active: bool = False  # a model-built merge method acts in this phase
    train_iterations: int = 1  # the run's training length (EoMT anneals its masks over it)
    batching: str = "min"
    bucket: int = 0


Builder = Callable[[BuildRequest], nn.Module]


@dataclass
class Family:
    """One model family: its builder and what it supports."""

    name: str
    builder: Builder
    backbone: str  # backbone kind: vit / mit
    merges: tuple[str, ...]
    batching: tuple[str, ...] = ("min",)
    bucket: bool = False  # merge.bucket > 0 supported
    objective: str = "cross_entropy"
    converters: Mapping[str, Callable] = field(default_factory=dict)
    analyze: bool = False  # `algm analyze` can read its encoder
    registers: bool = False  # accepts backbones with register tokens (DINOv2)
    merge_builders: dict[str, Builder] = field(default_factory=dict)  # model-built methods

    def check(self, backbone_name: str, merge: str, batching: str, bucket: int) -> None:
        """Raise ValueError (one line) for a backbone / merge / batching this family lacks."""
        if merge not in self.merges:
            raise ValueError(f"merge={merge} does not apply to model={self.name}; expected "
                             f"merge= one of {', '.join(self.merges)}")
        if backbone(backbone_name).kind != self.backbone:
            raise ValueError(f"backbone={backbone_name} does not fit model={self.name}; "
                             f"expected backbone={BACKBONE_KINDS[self.backbone]}")
        if backbone(backbone_name).registers and not (
                self.registers and batching == "min" and merge not in self.merge_builders):
            accepting = ", ".join(n for n, f in _FAMILIES.items() if f.registers)
            raise ValueError(f"backbone={backbone_name} (register tokens) does not apply to "
                             f"model={self.name} merge={merge} merge.batching={batching}; "
                             f"expected model= one of {accepting}, a schedule merge, batching=min")
        ragged_ok = batching in self.batching and (
            batching == "min" or merge not in self.merge_builders)
        if not ragged_ok:
            raise ValueError(f"merge.batching={batching} does not apply to model={self.name} "
                             f"merge={merge}; expected merge.batching=min")
        if bucket and (not self.bucket or merge in self.merge_builders):
            raise ValueError(f"merge.bucket={bucket} does not apply to model={self.name} "
                             f"merge={merge}; expected merge.bucket=0")

    def build(self, request: BuildRequest, method: str) -> nn.Module:
        """Return the model of `request`; a model-built merge method when it is active."""
        if request.reduction_active and method in self.merge_builders:
            return self.merge_builders[method](request)
        return self.builder(request)


_FAMILIES: dict[str, Family] = {}
# modules that register families (imported on first use, so the registry imports no model)
FAMILY_MODULES = ("segmenter", "setr", "segvit", "segformer", "reduction", "downsample",
                  "mask2former", "learned", "eomt")


def register_family(name: str, builder: Builder, backbone: str, merges: tuple[str, ...],
                    **options) -> Family:
    """Register model family `name` (options: batching, bucket, objective, converters, analyze)."""
    _FAMILIES[name] = Family(name, builder, backbone, tuple(merges), **options)
    return _FAMILIES[name]


def register_merges(family_name: str, methods: tuple[str, ...], builder: Builder) -> None:
    """Add model-built merge `methods` (built by `builder` when active) to a registered family."""
    fam = _FAMILIES[family_name]
    fam.merges = (*fam.merges, *(m for m in methods if m not in fam.merges))
    fam.merge_builders.update({m: builder for m in methods})


def families() -> dict[str, Family]:
    """Return every registered family by name (importing the family modules once)."""
    for module in FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return _FAMILIES


def family(name: str) -> Family:
    """Return family `name`; ValueError naming the available ones."""
    found = families()
    if name not in found:
        raise ValueError(f"model={name!r} is not available; expected one of: {', '.join(found)}")
    return found[name]


def read_options(mapping: Mapping, table: Mapping[str, tuple]) -> dict:
    """Return {key: cast(mapping.get(key, default))} for `table` = {key: (default, cast)}."""
    return {key: cast(mapping.get(key, default)) for key, (default, cast) in table.items()}


def build_vit_family(cls, options: Mapping[str, tuple], request: BuildRequest) -> nn.Module:
    """Return `cls` (a ViT-encoder family) built from `request`; options read from its model map."""
    model = cls(backbone=request.backbone, num_classes=int(request.num_classes),
                img_size=int(request.img_size), schedule=request.schedule,
                **read_options(request.model, options))
    model.encoder.bucket = int(request.bucket)
    return model


def mapping_builder(cls, options: Mapping[str, tuple]) -> Callable:
    """Return build(cfg_model, backbone, num_classes, img_size, schedule) -> `cls` (a config map)."""
    def build(cfg_model: Mapping, backbone: str, num_classes: int, img_size: int, schedule):
        request = BuildRequest(backbone, num_classes, img_size, schedule, cfg_model, {})
        return build_vit_family(cls, options, request)

    build.__doc__ = f"Return the {cls.__name__} described by a conf/model mapping."
    return build
