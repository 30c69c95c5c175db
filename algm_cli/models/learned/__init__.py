"""Learned token-reduction baselines the ALGM paper compares with: CTS (token sharing with a
policy network), DToP, DoViT and PAUMER (early token exits with auxiliary heads). Each holds
parameters a plain Segmenter lacks (policy network / heads), trained with the model: their
losses are part of `training_loss`. Built from `conf/merge/{cts,dtop,dovit,paumer}.yaml` and
registered as model-built merges of the segmenter family (DToP also of setr and segvit).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..registry import BuildRequest, read_options, register_merges
from ..registry import backbone as backbone_facts
from ..segmenter import segmenter_options
from ..segvit import SEGVIT_OPTIONS
from ..setr import SETR_OPTIONS
from . import dovit, dtop, paumer
from .cts import CTSSegmenter
from .exit_segvit import ExitSegViT
from .models import ExitSegmenter, ExitSETR

LEARNED_METHODS = ("cts", "dtop", "dovit", "paumer")
EXIT_SPECS = {"dtop": dtop.spec_from_config, "dovit": dovit.spec_from_config,
              "paumer": paumer.spec_from_config}
# which model families each method is built for
LEARNED_MODELS = {"cts": ("segmenter",), "dtop": ("segmenter", "setr", "segvit"),
                  "dovit": ("segmenter",), "paumer": ("segmenter",)}


def build_learned_segmenter(merge: Mapping, backbone: str, num_classes: int, **options):
    """Return the Segmenter of a learned method (options: decoder, img_size, Segmenter kwargs)."""
    method = merge["method"]
    if method == "cts":
        return CTSSegmenter(float(merge["setting"]), merge.get("policy"), backbone, num_classes,
                            **options)
    spec = EXIT_SPECS[method](merge, backbone_facts(backbone).depth)
    return ExitSegmenter(spec, backbone, num_classes, **options)


def build_learned_setr(merge: Mapping, backbone: str, **setr_kwargs) -> ExitSETR:
    """Return SETR with the early exits of `merge` (DToP)."""
    spec = EXIT_SPECS[merge["method"]](merge, backbone_facts(backbone).depth)
    return ExitSETR(spec, backbone=backbone, **setr_kwargs)


def build_learned_segvit(merge: Mapping, backbone: str, **segvit_kwargs) -> ExitSegViT:
    """Return SegViT with the early exits of `merge` (DToP)."""
    spec = EXIT_SPECS[merge["method"]](merge, backbone_facts(backbone).depth)
    return ExitSegViT(spec, backbone=backbone, **segvit_kwargs)


def build_learned_model(request: BuildRequest):
    """Return the model of `request` (an active learned method) for the registry."""
    merge = {k: request.merge[k] for k in request.merge}
    if request.model.get("name") == "segvit":
        return build_learned_segvit(merge, request.backbone, num_classes=int(request.num_classes),
                                    img_size=int(request.img_size),
                                    **read_options(request.model, SEGVIT_OPTIONS))
    if request.model.get("name") == "setr":
        return build_learned_setr(merge, request.backbone, num_classes=int(request.num_classes),
                                  img_size=int(request.img_size),
                                  **read_options(request.model, SETR_OPTIONS))
    return build_learned_segmenter(merge, request.backbone, int(request.num_classes),
                                   **segmenter_options(request))


register_merges("segmenter", LEARNED_METHODS, build_learned_model)
for _family in ("setr", "segvit"):
    register_merges(_family, tuple(m for m in LEARNED_METHODS if _family in LEARNED_MODELS[m]),
                    build_learned_model)

__all__ = ["LEARNED_METHODS", "LEARNED_MODELS", "build_learned_segmenter", "build_learned_segvit",
           "build_learned_setr"]
