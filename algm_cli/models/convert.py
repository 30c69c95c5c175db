"""Checkpoint converters with format detection for `checkpoint=PATH`.

Formats (detected from the key names; each has key prefixes no other format has):
- `project`: this project's own checkpoints (`{"model": state_dict, ...}`), loaded as they are;
- `segmenter`: official Segmenter / released ALGM checkpoints (rstrudel/segmenter,
  tue-mps/algm-segmenter): same module names, classification head dropped, position embeddings
  resized (`models.segmenter.convert_official_state_dict`);
- `segformer_mmseg`: NVlabs/SegFormer (mmseg 0.x) checkpoints: `backbone.patch_embed{1-4}`,
  `backbone.block{1-4}.{j}`, `backbone.norm{1-4}`, `decode_head.linear_c{1-4}`,
  `decode_head.linear_fuse.{conv,bn}`, `decode_head.linear_pred`;
- `segformer_hf`: Hugging Face transformers `SegformerForSemanticSegmentation` state dicts:
  `segformer.encoder.*` (separate query / key / value; key and value are stacked into our `kv`)
  and `decode_head.linear_c.{i}`, `linear_fuse`, `batch_norm`, `classifier`.
- `setr_mmseg`: fudan-zvg/SETR naive / PUP checkpoints: `backbone.blocks.*` (timm names) with
  `decode_head.{norm,conv_k,syncbn_fc_k}` (`models/convert_mmseg.py`);
- `setr_mla_mmseg`: fudan-zvg/SETR MLA checkpoints: `backbone.blocks.*` with the MLA neck inside
  the backbone (`backbone.mla.*`, `backbone.norm_{k}`) and `decode_head.mlahead.*`;
- `segvit_mmseg`: zbwxp/SegVit checkpoints: mmseg's ViT (`backbone.layers.*`) with the ATM head
  (`decode_head.decoder_{l}.*`, `decode_head.q`, `decode_head.class_embed`);
- `mmseg_vit`: any other `backbone.*` checkpoint (an mmseg ViT without a SETR / SegViT head):
  recognised and refused with a clear error.
SETR and SegViT conversion (key maps, position-embedding resizing, the keys left out because the
release never uses them at inference): `models/convert_mmseg.py`.
LayerNorm eps of the MiT encoder (1e-6 in blocks and stage norms, 1e-5 in patch embeddings and
the spatial reduction) equals NVlabs' release; transformers' port (its weights are NVlabs'
converted) uses nn.LayerNorm's 1e-5 everywhere, so a `segformer_hf` checkpoint here gives NVlabs'
logits, not transformers' (they differ by that eps only). SETR's and SegViT's backbone eps
(1e-6) is `models/setr.py`'s, the ATM decoder's (1e-5) `models/segvit.py`'s.
A checkpoint that does not fit gets one line listing its unmatched keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .convert_mmseg import convert_segvit, convert_setr, convert_setr_mla, rename_keys
from .pretrained import load_weights_file, mismatch

FORMATS = ("project", "segmenter", "segformer_mmseg", "segformer_hf", "setr_mmseg",
           "setr_mla_mmseg", "segvit_mmseg", "mmseg_vit")
IGNORED = ("decode_head.conv_seg.",)  # mmseg's unused default classifier


def detect_format(state: dict) -> str:
    """Return the checkpoint format of a bare state dict (see the module docstring)."""
    keys = list(state)

    def has(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    if has("segformer.encoder."):
        return "segformer_hf"
    if has("backbone.patch_embed1.", "backbone.block1."):
        return "segformer_mmseg"
    if has("backbone.blocks.") and has("backbone.mla.", "decode_head.mlahead."):
        return "setr_mla_mmseg"
    if has("backbone.blocks.") and has("decode_head.conv_0.", "decode_head.norm."):
        return "setr_mmseg"
    if has("backbone.layers.") and has("decode_head.decoder_", "decode_head.class_embed."):
        return "segvit_mmseg"
    if has("backbone."):
        return "mmseg_vit"
    if has("encoder.") and has("decoder.", "encoder.cls_token", "encoder.pos_embed"):
        return "segmenter"
    return "project"


def _stage(match: re.Match, group: int = 1) -> int:
    """Return the 0-based stage of a 1-based stage number in `match`."""
    return int(match[group]) - 1


# (pattern, replacement) applied in order to every key; a callable gets the match
MMSEG_SEGFORMER: list[tuple[str, str | Callable]] = [
    (r"^backbone\.patch_embed(\d)\.", lambda m: f"encoder.stages.{_stage(m)}.patch_embed."),
    (r"^backbone\.block(\d)\.(\d+)\.", lambda m: f"encoder.stages.{_stage(m)}.blocks.{m[2]}."),
    (r"^backbone\.norm(\d)\.", lambda m: f"encoder.stages.{_stage(m)}.norm."),
    (r"\.attn\.norm\.", ".attn.sr_norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".ffn.dwconv."),
    (r"\.mlp\.fc", ".ffn.fc"),
    (r"^decode_head\.linear_c(\d)\.proj\.", lambda m: f"decode_head.proj.{_stage(m)}."),
    (r"^decode_head\.linear_fuse\.conv\.", "decode_head.fuse.0."),
    (r"^decode_head\.linear_fuse\.bn\.", "decode_head.fuse.1."),
    (r"^decode_head\.linear_pred\.", "decode_head.classifier."),
]
HF_SEGFORMER: list[tuple[str, str | Callable]] = [
    (r"^segformer\.encoder\.patch_embeddings\.(\d)\.layer_norm\.", r"encoder.stages.\1.patch_embed.norm."),
    (r"^segformer\.encoder\.patch_embeddings\.(\d)\.", r"encoder.stages.\1.patch_embed."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.", r"encoder.stages.\1.blocks.\2."),
    (r"^segformer\.encoder\.layer_norm\.(\d)\.", r"encoder.stages.\1.norm."),
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.attention\.self\.query\.", ".attn.q."),
    (r"\.attention\.self\.sr\.", ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", ".attn.sr_norm."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.attention\.self\.(key|value)\.", r".attn.\1."),  # stacked into kv below
    (r"\.mlp\.dense1\.", ".ffn.fc1."),
    (r"\.mlp\.dwconv\.dwconv\.", ".ffn.dwconv."),
    (r"\.mlp\.dense2\.", ".ffn.fc2."),
    (r"^decode_head\.linear_c\.(\d)\.proj\.", r"decode_head.proj.\1."),
    (r"^decode_head\.linear_fuse\.", "decode_head.fuse.0."),
    (r"^decode_head\.batch_norm\.", "decode_head.fuse.1."),
]


def rename(state: dict, rules: list) -> dict:
    """Return `state` with every key rewritten by `rules` (mmseg's unused classifier dropped)."""
    return rename_keys(state, rules, lambda key: key.startswith(IGNORED))


def stack_key_value(state: dict) -> dict:
    """Return `state` with separate attn.key / attn.value tensors stacked into attn.kv (k first)."""
    out = dict(state)
    for key in [k for k in state if ".attn.key." in k]:
        value_key = key.replace(".attn.key.", ".attn.value.")
        if value_key in out:
            out[key.replace(".attn.key.", ".attn.kv.")] = torch.cat([out.pop(key),
                                                                     out.pop(value_key)])
    return out


def convert_state_dict(raw: dict, model: nn.Module) -> tuple[dict, str]:
    """Return (the checkpoint in `model`'s key format, the detected format)."""
    state = raw
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    fmt = detect_format(state)
    if fmt == "segformer_mmseg":
        return rename(state, MMSEG_SEGFORMER), fmt
    if fmt == "segformer_hf":
        return stack_key_value(rename(state, HF_SEGFORMER)), fmt
    converters = {"setr_mmseg": convert_setr, "setr_mla_mmseg": convert_setr_mla,
                  "segvit_mmseg": convert_segvit}
    if fmt in converters:
        return converters[fmt](state, model), fmt
    if fmt == "mmseg_vit":
        raise ValueError("an mmseg checkpoint (backbone.*) without a SETR head (decode_head."
                         "conv_0 / norm, backbone.mla) or a SegViT head (decode_head.decoder_1): "
                         "no converter for it; convert it to this project's key names")
    if fmt == "segmenter":
        from .segmenter import convert_official_state_dict

        return convert_official_state_dict(state, model), fmt
    return state, fmt


def read_checkpoint(path: Path) -> dict:
    """Return the dict stored in a checkpoint file (.pt/.pth or .safetensors)."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    raw = load_weights_file(path, "checkpoint ")
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint {path} holds a {type(raw).__name__}, expected a state dict")
    return raw


def load_any_checkpoint(model: nn.Module, path: str | Path) -> str:
    """Load a checkpoint of any supported format into `model`; return the detected format.

    Raises ValueError with one line naming the file, its format and the unmatched keys.
    """
    path = Path(path)
    raw = read_checkpoint(path)
    try:
        state, fmt = convert_state_dict(raw, model)
    except ValueError as err:
        raise ValueError(f"checkpoint {path}: {err}") from None
    own = model.state_dict()
    problems = mismatch(own, state)
    if problems:
        raise ValueError(f"checkpoint {path} ({fmt} format) does not fit the model: {problems}")
    model.load_state_dict(state)
    return fmt

