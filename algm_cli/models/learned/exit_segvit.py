"""SegViT with DToP's early token exits (`model=segvit merge=dtop`; supp. Tab. 2, SegViT-L + DToP).

The released DToP code (zbwxp/Dynamic-Token-Pruning, `config/prune/prune_segvit_*.py`,
`PruneHead`, `ViT_prune`) is built on SegViT: ViT-L with the ATM taps at layers 8/16/24
(`out_indices` 7, 15, 23), the heads at 8 and 16 being stage heads (`auxiliary_head`) and the
one at 24 the decoder; p0 = 0.95 (`thresh`) for ViT-L on ADE20K, COCO-Stuff and Pascal-Context.
There, each head is a single-level ATM decoder (3 layers, class queries, object / no-object
class logits) that attends to the still-active tokens only; a token is finalised when its
score max_k softmax(class_k) x sigmoid(mask_k) exceeds p0, except the 5 most confident per
class; finalised tokens skip the later blocks (their features are zeroed there, never read
again); the heads write their mask logits into a shared per-token canvas, so a finalised token
keeps its stage head's mask logits, and the final prediction is the last head's class
probabilities times sigmoid(canvas). Its SegViT baseline (`BASE_segvit_*.py`, thresh 1.0) is the
same three-head model, trained 160k iterations; the pruned model is fine-tuned from it for 40k
(`tools/dist_train_load.sh`).

Here (the exit machinery of `exits`, shared with Segmenter and SETR + DToP; stage layers, p0,
keep-5-per-class and batching as there):
- stage heads: per-token LayerNorm + Linear (`exits.ExitHeads`), not ATM heads: the same
  documented departure as Segmenter / SETR + DToP; the confidence is the head's softmax maximum;
- decoder: this project's SegViT ATM decoder over layers 8/16/24 (its levels summed), not the
  release's single-level head on layer 24; it reads the full grid of each tapped layer, where a
  token finalised after layer 8 holds its layer-8 features at layers 16 and 24 (and one
  finalised after 16 its layer-16 features at 24); the release's decoder sees active tokens
  only;
- final prediction: the decoder's per-class scores (SegViT's sum over queries of class
  probability x mask sigmoid) on active cells, the stage head's softmax probabilities on
  finalised cells (bilinearly upsampled, as `exits.use_head_logits`); the release instead keeps
  the stage head's mask logits and multiplies them with the last head's class probabilities;
- training: SegViT's ATM loss on the decoder (every level) + aux_weight x per-token CE of each
  stage head on the tokens it saw (labels at patch centres), exits active during training, as
  Segmenter + DToP; the release trains every head with the ATM loss on its canvas;
- recipe: one training run with the exits active (as SETR-B + DToP in the presets);
  `train.init_from=baseline` gives the release's fine-tuning from a trained SegViT (its exit
  heads then start untrained, the release's were trained with the base model);
- baseline: this project's SegViT (`model=segvit merge=none`), not the release's three-head one.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ...data.transforms import IGNORE
from ..base import MergeStats
from ..blocks import pad_to_patch, resize_crop
from ..schedule import NO_MERGE
from ..segvit import SegViT, atm_loss
from .exits import ExitHeads, ExitOutput, ExitSpec, aux_loss, exit_encode, use_head_logits


class ExitSegViT(SegViT):
    """SegViT whose encoder lets tokens exit early; the ATM decoder reads full-grid layers."""

    def __init__(self, spec: ExitSpec, backbone: str = "vit_l", num_classes: int = 150,
                 img_size: int = 640, **segvit_kwargs) -> None:
        super().__init__(backbone, num_classes, img_size, NO_MERGE, **segvit_kwargs)
        spec.check(self.encoder.depth)
        self.spec = spec
        self.exit_heads = ExitHeads(spec.layers, self.encoder.dim, num_classes)

    def _exit_decode(self, padded: Tensor) -> tuple[Tensor, Tensor, ExitOutput]:
        """Return (class logits (L, B, K, K+1), mask logits (L, B, K, gh, gw), exit encoding)."""
        depth = self.encoder.depth
        wanted = tuple(layer for layer in self.layers if layer != depth)
        out = exit_encode(self.encoder, padded, self.exit_heads, self.spec, self.num_classes,
                          outputs=wanted)
        tokens = {**out.layers, depth: out.tokens}  # layer -> (B, N, C), full grid
        classes, masks = self.decoder([tokens[layer] for layer in reversed(self.layers)])
        return classes, masks.reshape(*masks.shape[:3], *out.grid), out

    def forward_atm(self, images: Tensor) -> tuple[Tensor, Tensor, MergeStats]:
        """Return (class logits, mask logits on the padded patch grid, stats), as SegViT's."""
        classes, masks, out = self._exit_decode(pad_to_patch(images))
        return classes, masks, out.stats

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (class scores (B, K, H, W), active-token fraction after each exit layer)."""
        H, W = int(images.shape[-2]), int(images.shape[-1])
        padded = pad_to_patch(images)
        size = (int(padded.shape[-2]), int(padded.shape[-1]))
        classes, masks, out = self._exit_decode(padded)
        masks = resize_crop(masks[-1], size, size)  # (B, K, Hp, Wp)
        probs = classes[-1].softmax(dim=-1)[..., :-1]  # (B, Q, K): no-object dropped
        scores = torch.einsum("bqk,bqhw->bkhw", probs, masks.sigmoid())
        if self.spec.logits_from == "head":
            scores = use_head_logits(scores, replace(out, exit_logits=out.exit_logits.softmax(-1)))
        return scores[..., :H, :W], out.stats

    def training_loss(self, images: Tensor, labels: Tensor, ignore_index: int = IGNORE) -> Tensor:
        """Return SegViT's ATM loss + aux_weight x CE of each exit head."""
        classes, masks, out = self._exit_decode(pad_to_patch(images))
        loss = atm_loss(classes, masks, labels, self.num_classes, ignore_index)
        return loss + aux_loss(out, labels, ignore_index, self.spec.aux_weight)


__all__ = ["ExitSegViT"]
