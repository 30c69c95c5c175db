"""EVA + ViT-Adapter + Mask2Former (EVA-01's ADE20K segmentation model), with ALGM in the ViT.

Forward: images padded to a multiple of 32 -> ViT-Adapter four-scale features (merging inside
the ViT, see `vit_adapter`) -> pixel decoder -> masked transformer decoder -> semantic
inference: softmax over the K + 1 classes (no-object dropped) times sigmoid masks, summed over
queries, at the input resolution: (B, K, H, W) class scores (argmax is the label). Training
loss: the set loss of `criterion` over every decoder prediction (deep supervision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import MergeStats, SegmentationModel
from ..eva import EvaEncoder
from ..registry import THRESHOLD_METHODS, BuildRequest, register_family
from ..schedule import NO_MERGE, MergeSchedule
from ..vit_adapter import EvaAdapter
from .criterion import set_loss
from .pixel_decoder import PixelDecoder
from .transformer_decoder import MaskedDecoder, Prediction

STRIDE = 32  # the coarsest adapter level


def pad_to(images: Tensor, multiple: int = STRIDE) -> Tensor:
    """Return images zero-padded at the bottom/right to a multiple of `multiple`."""
    H, W = images.shape[-2:]
    return F.pad(images, (0, -W % multiple, 0, -H % multiple))


def semantic_inference(classes: Tensor, masks: Tensor, size: tuple[int, int],
                       padded: tuple[int, int]) -> Tensor:
    """Return (B, K, H, W) scores from class logits (B, Q, K+1) and mask logits (B, Q, h, w)."""
    masks = F.interpolate(masks, size=padded, mode="bilinear", align_corners=False)
    masks = masks[..., :size[0], :size[1]]
    return torch.einsum("bqk,bqhw->bkhw", classes.softmax(-1)[..., :-1], masks.sigmoid())


class Mask2Former(SegmentationModel):
    """EVA ViT (+ merge schedule) -> ViT-Adapter -> Mask2Former pixel decoder and decoder."""

    def __init__(self, backbone: str, num_classes: int, img_size: int,
                 schedule: MergeSchedule = NO_MERGE, *, interactions,
                 adapter_heads: int, dim: int = 256, heads: int = 8, ffn: int = 1024,
                 queries: int = 100, enc_layers: int = 6, dec_layers: int = 9,
                 dec_ffn: int = 2048, drop_path: float = 0.0, pretrained: bool = False,
                 points: int = 12544) -> None:
        super().__init__()
        self.num_classes, self.points = num_classes, points
        vit = EvaEncoder(backbone, img_size, drop_path, pretrained)
        schedule.check_depth(vit.depth)
        self.schedule = schedule
        self.encoder = EvaAdapter(vit, interactions, adapter_heads)
        width = vit.dim
        self.pixel_decoder = PixelDecoder([width] * 4, dim, dim, enc_layers, heads, 4, ffn)
        self.decoder = MaskedDecoder(dim, num_classes, queries, dec_layers, heads, dec_ffn, dim)

    def predictions(self, images: Tensor) -> tuple[list[Prediction], MergeStats]:
        """Return every decoder layer's (class logits, mask logits at stride 4) and merge stats."""
        out = self.encoder(pad_to(images), self.schedule)
        mask_features, maps = self.pixel_decoder(out.features)
        return self.decoder(maps, mask_features), out.stats

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (class scores (B, K, H, W), kept-token fractions after each merge step)."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        padded = tuple(-(-s // STRIDE) * STRIDE for s in size)
        preds, stats = self.predictions(images)
        classes, masks = preds[-1]
        return semantic_inference(classes, masks, size, padded), stats

    def param_groups(self, weight_decay: float, layer_decay: float) -> list[dict]:
        """Return AdamW groups with BEiT's layer-wise LR decay (`lr_scale`) and no decay on norms.

        As EVA's LayerDecayOptimizerConstructor: with L = depth + 2, the patch embedding, class
        token and position embedding are layer 0, block i is layer i + 1, everything else (the
        adapter, pixel decoder, decoder) layer L - 1; scale = layer_decay ** (L - 1 - layer).
        Biases, norms (1-D parameters), position embedding and class token get no weight decay.
        """
        depth = self.encoder.depth
        groups: dict[tuple[int, bool], list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("encoder.encoder.blocks."):
                layer = int(name.split(".")[3]) + 1
            elif name.startswith(("encoder.encoder.patch_embed", "encoder.encoder.cls_token",
                                  "encoder.encoder.pos_embed")):
                layer = 0
            else:
                layer = depth + 1
            no_decay = p.ndim == 1 or name.endswith(("pos_embed", "cls_token"))
            groups.setdefault((layer, no_decay), []).append(p)
        return [{"params": ps, "weight_decay": 0.0 if no_decay else weight_decay,
                 "lr_scale": layer_decay ** (depth + 1 - layer)}
                for (layer, no_decay), ps in sorted(groups.items())]

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
        """Return the set loss summed over the decoder's predictions (labels (B, H, W))."""
        preds, _ = self.predictions(images)
        H, W = labels.shape[-2:]
        padded = F.pad(labels, (0, -W % STRIDE, 0, -H % STRIDE), value=ignore_index)
        return set_loss(preds, padded, self.num_classes, ignore_index, points=self.points)


def _groups(depth: int) -> tuple[tuple[int, int], ...]:
    """Return ViT-Adapter's four equal block groups of a `depth`-block ViT."""
    n = depth // 4
    return tuple((k * n, k * n + n - 1) for k in range(4))


# backbone -> ViT-Adapter groups / deformable heads and the Mask2Former head (width, heads, FFN
# of the pixel decoder and decoder, queries, layers). eva_g: EVA-01 seg's ADE20K config;
# eva02_l: ViT-Adapter-L's Mask2Former head; eva02_s/b: Mask2Former's default 256-wide head;
# eva02_t: a 128-wide head so that the family trains on a CPU.
_SMALL = dict(heads=8, queries=100, enc_layers=6, dec_layers=9)
LAYOUTS: dict[str, dict] = {
    "eva_g": dict(interactions=_groups(40), adapter_heads=16, dim=1024, heads=32, ffn=4096,
                  dec_ffn=4096, queries=200, enc_layers=6, dec_layers=8),
    "eva02_l": dict(interactions=_groups(24), adapter_heads=16, dim=1024, heads=32, ffn=4096,
                    dec_ffn=4096, queries=100, enc_layers=6, dec_layers=9),
    "eva02_b": dict(interactions=_groups(12), adapter_heads=12, dim=256, ffn=1024, dec_ffn=2048,
                    **_SMALL),
    "eva02_s": dict(interactions=_groups(12), adapter_heads=6, dim=256, ffn=1024, dec_ffn=2048,
                    **_SMALL),
    "eva02_t": dict(interactions=_groups(12), adapter_heads=6, dim=128, ffn=512, dec_ffn=512,
                    **_SMALL),
}


def build_mask2former(request: BuildRequest) -> Mask2Former:
    """Return the Mask2Former of a registry build request (`conf/model/mask2former.yaml`)."""
    if request.backbone not in LAYOUTS:
        raise ValueError(f"model=mask2former has no layout for backbone={request.backbone}; "
                         f"expected one of {list(LAYOUTS)}")
    m = request.model
    return Mask2Former(
        request.backbone, int(request.num_classes), int(request.img_size), request.schedule,
        drop_path=float(m.get("drop_path", 0.0)), pretrained=bool(m.get("pretrained", False)),
        points=int(m.get("points", 12544)), **LAYOUTS[request.backbone],
    )


register_family(name="mask2former", builder=build_mask2former, backbone="eva",
                merges=("none", *THRESHOLD_METHODS))
