"""Segmenter (Strudel et al., ICCV 2021) with ALGM / ToMe merge schedules.

Forward: pad the image to a multiple of the patch size, encode (merging as scheduled), decode the
merged tokens to per-token class scores, unmerge the scores with one gather, reshape to the patch
grid, upsample bilinearly and crop the padding away.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .base import MergeStats, SegmentationModel
from .decoders import DECODERS
from .packed_attention import check_backend
from .pretrained import weights_spec
from .ragged import forward_ragged
from .registry import SCHEDULE_METHODS, BuildRequest, read_options, register_family
from .schedule import NO_MERGE, MergeSchedule
from .blocks import pad_to_patch, resize_crop, resize_pos_embed
from .vit import ViTEncoder


class Segmenter(SegmentationModel):
    """ViT encoder + linear or mask-transformer decoder, with an optional merge schedule.

    batching: "min" (every image of a batch merges the batch minimum count, the paper's rule) or
      "ragged" (each image merges its own count; packed execution, see models/ragged.py).
    packed_attention: the ragged mode's attention backend (models/packed_attention.py; "auto").
    decoder_layers: blocks of the mask transformer (Segmenter's default 2). The paper's Seg-L
    Cityscapes baseline (1005 GFLOPs at 768 x 768) matches a 1-block mask transformer (1004.9);
    with 2 blocks it is 1045.2. Every other baseline GFLOPs figure matches 2 blocks.
    decoder_norm_eps: LayerNorm eps of the mask-transformer blocks (1e-5 = official Segmenter;
    1e-6 = timm's default, the old behaviour). pretrained: False, True or a timm-format file.
    """

    def __init__(
        self,
        backbone: str = "vit_s",
        num_classes: int = 150,
        decoder: str = "mask",
        img_size: int = 512,
        schedule: MergeSchedule = NO_MERGE,
        drop_path: float = 0.0,
        pretrained: bool | str = False,
        decoder_dropout: float = 0.1,
        decoder_layers: int = 2,
        batching: str = "min",
        packed_attention: str = "auto",
        decoder_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {list(DECODERS)}")
        if batching not in ("min", "ragged"):
            raise ValueError(f"batching must be 'min' or 'ragged'; got {batching!r}")
        self.batching = batching
        self.packed_attention = check_backend(packed_attention)
        self.num_classes = num_classes
        self.encoder = ViTEncoder(backbone, img_size, drop_path, pretrained)
        schedule.check_depth(self.encoder.depth)
        self.schedule = schedule
        if decoder == "mask":
            self.decoder = DECODERS[decoder](
                self.encoder.dim, num_classes, depth=decoder_layers, dropout=decoder_dropout,
                norm_eps=decoder_norm_eps,
            )
        else:
            self.decoder = DECODERS[decoder](self.encoder.dim, num_classes)

    def forward_with_stats(self, images: Tensor) -> tuple[Tensor, MergeStats]:
        """Return (logits (B, K, H, W), kept-token fractions after each merge step)."""
        padded = pad_to_patch(images)
        if self.batching == "ragged" and images.shape[0] > 1:
            scores, stats, (gh, gw) = forward_ragged(self, padded, self.packed_attention)
        else:
            enc = self.encoder(padded, self.schedule)
            scores = enc.state.unmerge(self.decoder(enc.tokens))  # (B, N, K): one gather
            (gh, gw), stats = enc.grid, enc.stats
        masks = scores.transpose(1, 2).reshape(images.shape[0], self.num_classes, gh, gw)
        return resize_crop(masks, padded.shape[-2:], images.shape[-2:]), stats


# official Segmenter parameters that this model does not use
_UNUSED_PREFIXES = ("encoder.head.", "encoder.pre_logits.", "encoder.fc_norm.")


def convert_official_state_dict(state: dict, model: Segmenter) -> dict:
    """Return an official Segmenter state dict (rstrudel/segmenter) in this model's format.

    Accepts the checkpoint file's dict (`{"model": state_dict, ...}`) or the bare state dict.
    Module names already match; the classification head is dropped and the position embeddings
    are resized bilinearly to this model's grid.
    """
    state = state.get("model", state)
    out = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
    if "encoder.pos_embed" in out and out["encoder.pos_embed"].shape != model.encoder.pos_embed.shape:
        target = model.encoder.pos_embed.shape[1] - 1
        side = int(round(target**0.5))
        out["encoder.pos_embed"] = resize_pos_embed(out["encoder.pos_embed"], (side, side))
    return out


def load_checkpoint(model, path: str | Path) -> str:
    """Load a checkpoint of any supported format into `model`; return the detected format.

    This project's, official Segmenter / released ALGM, Segformer (NVlabs mmseg or Hugging Face)
    and released SETR checkpoints: see `models/convert.py`. Raises ValueError naming the file and
    the missing / unexpected / mis-shaped keys when the checkpoint does not fit the model.
    """
    from .convert import load_any_checkpoint

    return load_any_checkpoint(model, path)


SEGMENTER_OPTIONS = {"decoder": ("mask", str), "drop_path": (0.0, float),
                     "pretrained": (False, weights_spec), "decoder_dropout": (0.1, float),
                     "decoder_layers": (2, int), "decoder_norm_eps": (1e-5, float)}


def segmenter_options(request: BuildRequest) -> dict:
    """Return Segmenter's keyword options (decoder, img_size, drop_path, ...) of `request`."""
    return {"img_size": int(request.img_size), **read_options(request.model, SEGMENTER_OPTIONS)}


def build_segmenter(request: BuildRequest) -> Segmenter:
    """Return the Segmenter of `request` (ALGM / ToMe through its schedule)."""
    model = Segmenter(backbone=request.backbone, num_classes=int(request.num_classes),
                      schedule=request.schedule, batching=request.batching,
                      packed_attention=str(request.merge.get("packed_attention", "auto")),
                      **segmenter_options(request))
    model.encoder.bucket = int(request.bucket)
    return model


register_family(name="segmenter", builder=build_segmenter, backbone="vit",
                merges=SCHEDULE_METHODS, batching=("min", "ragged"), bucket=True,
                objective="cross_entropy", analyze=True, registers=True,
                converters={"segmenter": convert_official_state_dict})
