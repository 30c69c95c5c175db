"""Segmenter and SETR with early token exits (DToP, DoViT, PAUMER): the auxiliary heads are part
of the model and their cross-entropy part of its training loss (see `exits`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..base import MergeStats
from ..schedule import NO_MERGE
from ..segmenter import Segmenter
from ..blocks import pad_to_patch, resize_crop
from ..setr import SETR
from ..vit import PATCH
from .exits import ExitHeads, ExitOutput, ExitSpec, aux_loss, exit_encode, use_head_logits


class ExitSegmenter(Segmenter):
    """Segmenter whose encoder lets tokens exit early; the decoder reads the full grid."""

    def __init__(self, spec: ExitSpec, backbone: str = "vit_s", num_classes: int = 150,
                 decoder: str = "mask", img_size: int = 512, **segmenter_kwargs) -> None:
        super().__init__(backbone, num_classes, decoder, img_size, NO_MERGE, **segmenter_kwargs)
        spec.check(self.encoder.depth)
        self.spec = spec
        self.exit_heads = ExitHeads(spec.layers, self.encoder.dim, num_classes)

    def _forward(self, images: Tensor) -> tuple[Tensor, ExitOutput]:
        """Return (logits (B, K, H, W), the exit encoding)."""
        H, W = images.shape[-2:]
        pad_h, pad_w = (-H) % PATCH, (-W) % PATCH
        padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        out = exit_encode(self.encoder, padded, self.exit_heads, self.spec, self.num_classes)
        scores = self.decoder(out.tokens)  # (B, N, K) on the full grid
        gh, gw = out.grid
        masks = scores.transpose(1, 2).reshape(images.shape[0], self.num_classes, gh, gw)
        masks = F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        if self.spec.logits_from == "head":
            masks = use_head_logits(masks, out)
        return masks[..., :H, :W], out

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), active-token fraction after each exit layer)."""
        logits, out = self._forward(images)
        return logits, out.stats

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
        """Return CE of the final logits + aux_weight x CE of each exit head."""
        logits, out = self._forward(images)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
        return loss + aux_loss(out, labels, ignore_index, self.spec.aux_weight)


class ExitSETR(SETR):
    """SETR (naive / PUP decoder) whose encoder lets tokens exit early (DToP on SETR)."""

    def __init__(self, spec: ExitSpec, **setr_kwargs) -> None:
        super().__init__(**setr_kwargs)
        if self.decoder_name == "mla":
            raise ValueError("early exits on SETR support the naive and PUP decoders, not MLA")
        spec.check(self.encoder.depth)
        self.spec = spec
        self.exit_heads = ExitHeads(spec.layers, self.encoder.dim, self.num_classes)

    def _exit_forward(self, images: Tensor, with_aux: bool):
        """Return (main logits, SETR auxiliary logits, exit encoding)."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        padded = pad_to_patch(images)
        padded_size = (int(padded.shape[-2]), int(padded.shape[-1]))
        wanted = self.aux_layers if with_aux else ()
        out = exit_encode(self.encoder, padded, self.exit_heads, self.spec, self.num_classes,
                          outputs=tuple(wanted))
        logits = self.head(out.tokens, out.grid)
        logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        if self.spec.logits_from == "head":
            logits = use_head_logits(logits, out)
        aux = [resize_crop(head(out.layers[layer], out.grid), padded_size, size)
               for head, layer in zip(self.aux_heads, wanted)]
        return logits[..., : size[0], : size[1]], aux, out

    def _forward(self, images: Tensor, with_aux: bool) -> tuple[Tensor, list[Tensor], MergeStats]:
        """Return (main logits, auxiliary logits (empty unless with_aux), stats)."""
        logits, aux, out = self._exit_forward(images, with_aux)
        return logits, aux, out.stats

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
        """Return SETR's loss (main + its auxiliary heads) + aux_weight x CE of each exit head."""
        logits, aux, out = self._exit_forward(images, with_aux=bool(len(self.aux_heads)))
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
        for extra in aux:
            loss = loss + self.aux_weight * F.cross_entropy(extra.float(), labels,
                                                            ignore_index=ignore_index)
        return loss + aux_loss(out, labels, ignore_index, self.spec.aux_weight)


__all__ = ["ExitSETR", "ExitSegmenter"]
