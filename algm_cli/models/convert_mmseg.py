"""Converters for the released mmseg 0.x checkpoints of SETR and SegViT (see `models/convert.py`).

Key layouts (read from the released code):
- SETR naive / PUP (fudan-zvg/SETR `backbones/vit.py`, `decode_heads/vit_up_head.py`): a timm-named
  ViT under `backbone.` (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.{i}`, no final
  norm); `decode_head` / `auxiliary_head.{j}` with `norm`, `conv_{k}` (the last one the
  classifier) and `syncbn_fc_{k}`.
- SETR-MLA (`backbones/vit_mla.py`, `decode_heads/vit_mla_head.py`, `vit_mla_auxi_head.py`): the
  same ViT plus the MLA neck inside the backbone: `backbone.norm_{k}` (LayerNorm of tapped layer
  k), `backbone.mla.mla_p{k+2}_1x1` (1x1 conv + BN) and `backbone.mla.mla_p{k+2}` (3x3 conv + BN);
  `decode_head.mlahead.head{k+2}.{0,1,3,4}` (two conv + BN pairs), `decode_head.cls` (3x3
  classifier); `auxiliary_head.{j}.aux` (1x1 conv on neck level j, the released configs' in_index).
- SegViT (zbwxp/SegVit `configs/_base_/models/seg_vit-b16.py`, `decode_heads/atm_head.py`): mmseg's
  VisionTransformer under `backbone.` (`patch_embed.projection`, `layers.{i}.ln1 / ln2`,
  `attn.attn.in_proj_* / out_proj` = timm's `attn.qkv / proj`, `ffn.layers.0.0 / 1` = `mlp.fc1 /
  fc2`, no final norm); `decode_head.input_proj_{l}`, `proj_norm_{l}`, `decoder_{l}.layers.{j}`
  (`self_attn` an nn.MultiheadAttention: `in_proj_*` = our `self_qkv`, `out_proj` = `self_proj`;
  `multihead_attn.{q,k,v,proj}`, `linear1 / 2` = `fc1 / 2`, `norm1-3`), `q` (the class queries),
  `class_embed`. Level l = 1 reads the deepest tapped layer, as our `ATMHead.proj.0`.

Keys the release never uses at inference are dropped: BaseDecodeHead's default classifier
`conv_seg` (SETR heads; SegViT deletes it), SegViT's loss buffer `decode_head.loss_decode.*`
(the no-object class weight of ATMLoss) and the training-only `auxiliary_head.*` when the model
was built without auxiliary heads (aux=false). Every other key must map onto the model.

Position embeddings of another grid than the model's are resized as the release does: SETR with
its loader's rule (`helpers.load_pretrained`: bilinear, align_corners=False; the released SETR
backbones cannot run at another size), SegViT bicubically (mmseg `VisionTransformer.
resize_pos_embed`, `interpolate_mode="bicubic"`); the class-token position is kept as it is. With
a model crop equal to the checkpoint's (the released setups) this equals the release exactly; with
another crop, a window of a third size is resized twice (checkpoint -> crop -> window) where
mmseg resizes once.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import Tensor, nn

from .blocks import resize_pos_embed

Rules = list[tuple[str, str | Callable]]  # (pattern, replacement) applied in order to every key
CONV_SEG = re.compile(r"^(decode_head|auxiliary_head\.\d+)\.conv_seg\.")  # unused classifier
SEGVIT_UNUSED = ("decode_head.loss_decode.",)


def rename_keys(state: dict, rules: Rules, drop: Callable[[str], bool] = lambda k: False) -> dict:
    """Return `state` with every key rewritten by `rules`; keys where `drop(key)` are left out."""
    out = {}
    for key, value in state.items():
        if drop(key):
            continue
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def unused_at_inference(own: dict, extra: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """Return the test for released keys never used at inference (see the module docstring)."""
    no_aux = not any(k.startswith("aux_heads.") for k in own)

    def drop(key: str) -> bool:
        return (bool(CONV_SEG.match(key)) or key.startswith(extra)
                or (no_aux and key.startswith("auxiliary_head.")))

    return drop


def fit_pos_embed(state: dict, own: dict, mode: str) -> dict:
    """Resize `state["encoder.pos_embed"]` (1, 1 + n, C) to the model's grid with `mode`."""
    if "encoder.pos_embed" in state and "encoder.pos_embed" in own:
        pos: Tensor = state["encoder.pos_embed"]
        if pos.shape[1] != own["encoder.pos_embed"].shape[1]:
            side = int(round((own["encoder.pos_embed"].shape[1] - 1) ** 0.5))
            state["encoder.pos_embed"] = resize_pos_embed(pos, (side, side), mode=mode)
    return state


# ----------------------------------------------------------------------------- SETR


def _head_stages(own: dict, prefix: str) -> int:
    """Return how many conv stages the head under `prefix` has in the model's state dict."""
    depth = len(prefix.split("."))
    return len({k.split(".")[depth] for k in own if k.startswith(prefix + "stages.")})


def convert_setr(state: dict, model: nn.Module) -> dict:
    """Return a fudan-zvg/SETR naive / PUP state dict under this project's SETR names."""
    own = model.state_dict()
    out = {}
    head_key = re.compile(
        r"^(decode_head|auxiliary_head\.(\d+))\.(norm|conv_(\d+)|syncbn_fc_(\d+))\.(.*)$")
    for key, value in rename_keys(state, [(r"^backbone\.", "encoder.")],
                                  unused_at_inference(own)).items():
        m = head_key.match(key)
        if m:
            head = "head." if m[1] == "decode_head" else f"aux_heads.{m[2]}."
            if m[3] == "norm":
                key = f"{head}norm.{m[6]}"
            elif m[4] is not None:
                last = int(m[4]) == _head_stages(own, head)
                key = f"{head}classifier.{m[6]}" if last else f"{head}stages.{m[4]}.0.{m[6]}"
            else:
                key = f"{head}stages.{m[5]}.1.{m[6]}"
        out[key] = value
    return fit_pos_embed(out, own, "bilinear")


SETR_MLA: Rules = [
    (r"^backbone\.norm_(\d)\.", r"neck.norms.\1."),
    (r"^backbone\.mla\.mla_p(\d)_1x1\.", lambda m: f"neck.lateral.{int(m[1]) - 2}."),
    (r"^backbone\.mla\.mla_p(\d)\.", lambda m: f"neck.smooth.{int(m[1]) - 2}."),
    (r"^backbone\.", "encoder."),
    # head{k}: conv, BN, ReLU, conv, BN, ReLU -> branches.{k-2}.{first, second}.{conv, BN}
    (r"^decode_head\.mlahead\.head(\d)\.([0134])\.",
     lambda m: f"head.branches.{int(m[1]) - 2}.{int(m[2]) // 3}.{int(m[2]) % 3}."),
    (r"^decode_head\.cls\.", "head.classifier."),
    (r"^auxiliary_head\.(\d+)\.aux\.", r"aux_heads.\1."),
]


def convert_setr_mla(state: dict, model: nn.Module) -> dict:
    """Return a fudan-zvg/SETR MLA state dict (neck inside the backbone) under our SETR names."""
    own = model.state_dict()
    return fit_pos_embed(rename_keys(state, SETR_MLA, unused_at_inference(own)), own, "bilinear")


# ----------------------------------------------------------------------------- SegViT

SEGVIT: Rules = [
    (r"^backbone\.patch_embed\.projection\.", "encoder.patch_embed.proj."),
    (r"^backbone\.layers\.(\d+)\.", r"encoder.blocks.\1."),
    (r"^backbone\.", "encoder."),
    (r"\.ln([12])\.", r".norm\1."),
    (r"\.attn\.attn\.in_proj_(weight|bias)$", r".attn.qkv.\1"),
    (r"\.attn\.attn\.out_proj\.", ".attn.proj."),
    (r"\.ffn\.layers\.0\.0\.", ".mlp.fc1."),
    (r"\.ffn\.layers\.1\.", ".mlp.fc2."),
    (r"^decode_head\.input_proj_(\d)\.", lambda m: f"decoder.proj.{int(m[1]) - 1}."),
    (r"^decode_head\.proj_norm_(\d)\.", lambda m: f"decoder.proj_norm.{int(m[1]) - 1}."),
    (r"^decode_head\.decoder_(\d)\.layers\.(\d+)\.",
     lambda m: f"decoder.levels.{int(m[1]) - 1}.{m[2]}."),
    (r"\.self_attn\.in_proj_(weight|bias)$", r".self_qkv.\1"),
    (r"\.self_attn\.out_proj\.", ".self_proj."),
    (r"\.multihead_attn\.", "."),
    (r"\.linear([12])\.", r".fc\1."),
    (r"^decode_head\.q\.", "decoder.queries."),
    (r"^decode_head\.class_embed\.", "decoder.class_embed."),
]


def convert_segvit(state: dict, model: nn.Module) -> dict:
    """Return a zbwxp/SegVit state dict (mmseg ViT + ATM head) under this project's names."""
    own = model.state_dict()
    drop = unused_at_inference(own, SEGVIT_UNUSED)
    return fit_pos_embed(rename_keys(state, SEGVIT, drop), own, "bicubic")
