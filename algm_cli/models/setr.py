"""SETR (Zheng et al., CVPR 2021) on the merging ViT encoder: naive, PUP and MLA decoders.

Layouts of the released configs (fudan-zvg/SETR), GFLOPs checks (only the naive decoder
reproduces the paper, so it is the default) and deviations: docs/MODELS.md.

Merging: the decoders are convolutional, so they read every layer UNMERGED on the full patch
grid: the final tokens are unmerged with the merge state, intermediate layers come unmerged from
the encoder (`outputs=`). With a schedule that merges nothing the model equals the baseline.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import IGNORE
from .base import MergeStats, SegmentationModel
from .blocks import pad_to_patch, resize_crop
from .registry import SCHEDULE_METHODS, build_vit_family, mapping_builder, register_family
from .schedule import NO_MERGE, MergeSchedule
from .vit import EncoderOutput, ViTEncoder

LN_EPS = 1e-6  # LayerNorm eps of the released SETR and SegViT code
DECODERS = ("naive", "pup", "mla")
CHANNELS = 256  # decoder width of every SETR head
MLA_HEAD_CHANNELS = 128
AUX_WEIGHT = 0.4  # loss weight of each auxiliary head in the released configs

# encoder depth -> 1-based layers the MLA decoder reads
MLA_LAYERS: dict[int, tuple[int, ...]] = {12: (3, 6, 9, 12), 24: (6, 12, 18, 24)}
# decoder -> encoder depth -> 1-based layers with an auxiliary head (naive / PUP)
AUX_LAYERS: dict[str, dict[int, tuple[int, ...]]] = {
    "naive": {12: (3, 6, 9), 24: (10, 15, 20)},
    "pup": {12: (5, 8, 10, 12), 24: (10, 15, 20, 24)},
}
# decoder -> (kernel, upsampling factor after each conv stage) of the main and auxiliary heads
UP_HEADS: dict[str, tuple[tuple[int, tuple[int, ...]], tuple[int, tuple[int, ...]]]] = {
    "naive": ((1, (1,)), (1, (1,))),
    "pup": ((3, (2, 2, 2, 1)), (3, (4,))),
}


# ----------------------------------------------------------------------------- shared helpers


def plain_vit_encoder(
    backbone: str, img_size: int, drop_path: float, pretrained: bool
) -> ViTEncoder:
    """Return a ViTEncoder set up like mmseg's plain ViT: LayerNorm eps 1e-6, no final norm."""
    encoder = ViTEncoder(backbone, img_size, drop_path, pretrained)
    for module in encoder.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = LN_EPS
    encoder.norm = nn.Identity()  # `EncoderOutput.tokens` are then the raw last-layer outputs
    return encoder


def tokens_to_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Return patch tokens (B, N, C) as a feature map (B, C, gh, gw)."""
    B, N, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, grid[0], grid[1])


def layer_outputs(enc: EncoderOutput, layers: tuple[int, ...], depth: int) -> dict[int, Tensor]:
    """Return {layer: unmerged block output (B, N, C)}; the last layer from the final tokens."""
    out = {layer: enc.layers[layer] for layer in layers if layer != depth}
    if depth in layers:
        out[depth] = enc.state.unmerge(enc.tokens)  # (B, N', C) -> (B, N, C): one gather
    return out


def conv_bn_relu(c_in: int, c_out: int, kernel: int, bias: bool) -> nn.Sequential:
    """Return conv (kernel x kernel, same padding) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


# ----------------------------------------------------------------------------- heads


class UpHead(nn.Module):
    """SETR's naive / PUP head: LayerNorm, conv stages with upsampling, 1x1 classifier."""

    def __init__(
        self, dim: int, num_classes: int, kernel: int, scales: tuple[int, ...],
        channels: int = CHANNELS,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.stages = nn.ModuleList(
            conv_bn_relu(dim if i == 0 else channels, channels, kernel, bias=True)
            for i in range(len(scales))
        )
        self.scales = tuple(scales)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Return class logits (B, K, gh * s, gw * s), s the product of the stage scales."""
        x = tokens_to_map(self.norm(tokens), grid)  # (B, C, gh, gw)
        for stage, scale in zip(self.stages, self.scales):
            x = stage(x)
            if scale > 1:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        return self.classifier(x)


class MLANeck(nn.Module):
    """SETR-MLA's multi-level aggregation: per-level norm + 1x1 projection, top-down sums, 3x3."""

    def __init__(self, dim: int, levels: int = 4, channels: int = CHANNELS) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=LN_EPS) for _ in range(levels))
        self.lateral = nn.ModuleList(conv_bn_relu(dim, channels, 1, False) for _ in range(levels))
        self.smooth = nn.ModuleList(
            conv_bn_relu(channels, channels, 3, False) for _ in range(levels)
        )

    def forward(self, tokens: list[Tensor], grid: tuple[int, int]) -> list[Tensor]:
        """Return aggregated maps [(B, 256, gh, gw)] for tokens [(B, N, C)], shallow to deep."""
        lateral = [
            proj(tokens_to_map(norm(t), grid))
            for t, norm, proj in zip(tokens, self.norms, self.lateral)
        ]
        summed: list[Tensor] = [lateral[-1]]
        for x in reversed(lateral[:-1]):  # each level adds everything deeper than it
            summed.append(summed[-1] + x)
        summed.reverse()
        return [smooth(x) for x, smooth in zip(summed, self.smooth)]


class MLAHead(nn.Module):
    """SETR-MLA's head: two 3x3 convs per level, 4x upsampling, concat, 3x3 classifier."""

    def __init__(
        self, num_classes: int, levels: int = 4, channels: int = CHANNELS,
        head_channels: int = MLA_HEAD_CHANNELS,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(channels, head_channels, 3, False),
                conv_bn_relu(head_channels, head_channels, 3, False),
            )
            for _ in range(levels)
        )
        self.classifier = nn.Conv2d(levels * head_channels, num_classes, 3, padding=1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Return class logits (B, K, 4 gh, 4 gw) for aggregated maps [(B, 256, gh, gw)]."""
        size = (4 * feats[0].shape[-2], 4 * feats[0].shape[-1])
        ups = [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=True)
            for x, branch in zip(feats, self.branches)
        ]
        return self.classifier(torch.cat(ups, dim=1))  # (B, 512, 4gh, 4gw) -> (B, K, ...)


# ----------------------------------------------------------------------------- model


class SETR(SegmentationModel):
    """ViT encoder + SETR decoder (naive, PUP or MLA), with an optional merge schedule.

    `forward_with_stats` runs the main head only. Auxiliary heads (aux=True) exist for training:
    `forward_with_aux` returns the main logits, one logits map per auxiliary head (each at input
    resolution) and the stats from one encoder pass; the released configs weight each auxiliary
    cross-entropy by `aux_weight` (0.4). `forward_aux` returns only the auxiliary logits.
    """

    def __init__(
        self,
        backbone: str = "vit_l",
        num_classes: int = 150,
        decoder: str = "pup",
        img_size: int = 512,
        schedule: MergeSchedule = NO_MERGE,
        drop_path: float = 0.0,
        pretrained: bool = False,
        aux: bool = True,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown SETR decoder {decoder!r}; expected one of {list(DECODERS)}")
        self.num_classes = num_classes
        self.decoder_name = decoder
        self.encoder = plain_vit_encoder(backbone, img_size, drop_path, pretrained)
        depth, dim = self.encoder.depth, self.encoder.dim
        if depth not in MLA_LAYERS:
            raise ValueError(f"SETR needs a 12- or 24-layer ViT; {backbone} has {depth}")
        schedule.check_depth(depth)
        self.schedule = schedule
        self.aux_weight = AUX_WEIGHT
        if decoder == "mla":
            self.main_layers = MLA_LAYERS[depth]
            self.aux_layers: tuple[int, ...] = ()
            self.neck = MLANeck(dim, len(self.main_layers))
            self.head = MLAHead(num_classes, len(self.main_layers))
            n_aux = len(self.main_layers) if aux else 0
            self.aux_heads = nn.ModuleList(
                nn.Conv2d(CHANNELS, num_classes, 1, bias=False) for _ in range(n_aux)
            )
        else:
            (kernel, scales), (aux_kernel, aux_scales) = UP_HEADS[decoder]
            self.main_layers = (depth,)
            self.aux_layers = AUX_LAYERS[decoder][depth] if aux else ()
            self.head = UpHead(dim, num_classes, kernel, scales)
            self.aux_heads = nn.ModuleList(
                UpHead(dim, num_classes, aux_kernel, aux_scales) for _ in self.aux_layers
            )

    def _forward(self, images: Tensor, with_aux: bool) -> tuple[Tensor, list[Tensor], MergeStats]:
        """Return (main logits, auxiliary logits (empty unless with_aux), stats)."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        padded = pad_to_patch(images)
        padded_size = (int(padded.shape[-2]), int(padded.shape[-1]))
        wanted = self.main_layers + (self.aux_layers if with_aux else ())
        depth = self.encoder.depth
        intermediate = tuple(layer for layer in wanted if layer != depth)
        enc = self.encoder(padded, self.schedule, outputs=intermediate)
        tokens = layer_outputs(enc, wanted, depth)  # layer -> (B, N, C) on the full grid
        aux: list[Tensor] = []
        if self.decoder_name == "mla":
            feats = self.neck([tokens[layer] for layer in self.main_layers], enc.grid)
            logits = self.head(feats)
            if with_aux:
                aux = [head(x) for head, x in zip(self.aux_heads, feats)]
        else:
            logits = self.head(tokens[depth], enc.grid)
            if with_aux:
                pairs = zip(self.aux_heads, self.aux_layers)
                aux = [head(tokens[layer], enc.grid) for head, layer in pairs]
        logits = resize_crop(logits, padded_size, size)
        aux = [resize_crop(a, padded_size, size) for a in aux]
        return logits, aux, enc.stats

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), kept-token fractions after each merge step)."""
        logits, _, stats = self._forward(images, with_aux=False)
        return logits, stats

    def forward_with_aux(self, images: Tensor) -> tuple[Tensor, list[Tensor], MergeStats]:
        """Return (logits (B, K, H, W), [auxiliary logits (B, K, H, W)], stats), one encoding."""
        return self._forward(images, with_aux=True)

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = IGNORE) -> Tensor:
        """Return CE of the main head + `aux_weight` x CE of each auxiliary head (released recipe)."""
        logits, aux, _ = self._forward(images, with_aux=bool(len(self.aux_heads)))
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
        for extra in aux:
            loss = loss + self.aux_weight * F.cross_entropy(extra.float(), labels,
                                                            ignore_index=ignore_index)
        return loss

    def forward_aux(self, images: Tensor) -> list[Tensor]:
        """Return the auxiliary heads' logits, each (B, K, H, W) (empty when aux=False)."""
        return self._forward(images, with_aux=True)[1]


SETR_OPTIONS = {"decoder": ("naive", str), "drop_path": (0.0, float),
                "pretrained": (False, bool), "aux": (True, bool)}


build_setr = mapping_builder(SETR, SETR_OPTIONS)  # (cfg_model, backbone, classes, crop, schedule)

register_family(name="setr", builder=partial(build_vit_family, SETR, SETR_OPTIONS),
                backbone="vit", merges=SCHEDULE_METHODS, bucket=True,
                objective="cross_entropy + 0.4 x auxiliary heads", analyze=True)
