"""Checkpoint converters with format detection for `checkpoint=PATH`.

Formats (detected from the key names):
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
- `setr_mmseg`: fudan-zvg/SETR naive / PUP checkpoints: `backbone.{patch_embed,cls_token,
  pos_embed,blocks}` (timm names) and `decode_head` / `auxiliary_head.{j}` with `norm`,
  `conv_{k}` (the last one the classifier) and `syncbn_fc_{k}`; position embeddings resized.
LayerNorm eps of the MiT encoder (1e-6 in blocks and stage norms, 1e-5 in patch embeddings and
the spatial reduction) equals NVlabs' release; transformers' port (its weights are NVlabs'
converted) uses nn.LayerNorm's 1e-5 everywhere, so a `segformer_hf` checkpoint here gives NVlabs'
logits, not transformers' (they differ by that eps only). SETR's (1e-6) is `models/setr.py`'s.
SETR-MLA (its neck inside the backbone) and SegViT checkpoints (`backbone.*` plain ViT, format
`mmseg_vit`) are detected but not converted yet: they get a clear error.
A checkpoint that does not fit gets one line listing its unmatched keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .pretrained import load_weights_file, mismatch

FORMATS = ("project", "segmenter", "segformer_mmseg", "segformer_hf", "setr_mmseg", "mmseg_vit")
IGNORED = ("decode_head.conv_seg.",)  # mmseg's unused default classifier


def detect_format(state: dict) -> str:
    """Return the checkpoint format of a bare state dict (see the module docstring)."""
    keys = list(state)
    if any(k.startswith("segformer.encoder.") for k in keys):
        return "segformer_hf"
    if any(k.startswith(("backbone.patch_embed1.", "backbone.block1.")) for k in keys):
        return "segformer_mmseg"
    if any(k.startswith("backbone.blocks.") for k in keys) and any(
            k.startswith(("decode_head.conv_0.", "decode_head.norm.")) for k in keys):
        return "setr_mmseg"
    if any(k.startswith("backbone.") for k in keys):
        return "mmseg_vit"
    if any(k.startswith("encoder.") for k in keys) and any(
            k.startswith(("decoder.", "encoder.cls_token", "encoder.pos_embed")) for k in keys):
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
    """Return `state` with every key rewritten by `rules` (mmseg's unused keys dropped)."""
    out = {}
    for key, value in state.items():
        if key.startswith(IGNORED):
            continue
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def stack_key_value(state: dict) -> dict:
    """Return `state` with separate attn.key / attn.value tensors stacked into attn.kv (k first)."""
    out = dict(state)
    for key in [k for k in state if ".attn.key." in k]:
        value_key = key.replace(".attn.key.", ".attn.value.")
        if value_key in out:
            out[key.replace(".attn.key.", ".attn.kv.")] = torch.cat([out.pop(key),
                                                                     out.pop(value_key)])
    return out


def _stage_count(own: dict, prefix: str) -> int:
    """Return how many conv stages the head under `prefix` has in the model's state dict."""
    return len({k.split(".")[len(prefix.split("."))] for k in own
                if k.startswith(prefix + "stages.")})


def convert_setr(state: dict, model: nn.Module) -> dict:
    """Return a fudan-zvg/SETR naive / PUP state dict under this project's SETR names."""
    from .vit import resize_pos_embed

    own = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.startswith(IGNORED) or key.startswith(("backbone.norm.", "backbone.head.")):
            continue
        m = re.match(r"^(decode_head|auxiliary_head\.(\d+))\.(norm|conv_(\d+)|syncbn_fc_(\d+))\.(.*)$",
                     key)
        if key.startswith("backbone."):
            key = "encoder." + key[len("backbone."):]
        elif m:
            head = "head." if m[1] == "decode_head" else f"aux_heads.{m[2]}."
            if m[3] == "norm":
                key = f"{head}norm.{m[6]}"
            elif m[4] is not None:
                k = int(m[4])
                last = k == _stage_count(own, head)
                key = f"{head}classifier.{m[6]}" if last else f"{head}stages.{k}.0.{m[6]}"
            else:
                key = f"{head}stages.{m[5]}.1.{m[6]}"
        out[key] = value
    if "encoder.pos_embed" in out and "encoder.pos_embed" in own:
        side = int(round((own["encoder.pos_embed"].shape[1] - 1) ** 0.5))
        out["encoder.pos_embed"] = resize_pos_embed(out["encoder.pos_embed"], (side, side))
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
    if fmt == "setr_mmseg":
        return convert_setr(state, model), fmt
    if fmt == "mmseg_vit":
        raise ValueError("mmseg SETR-MLA / SegViT checkpoints (backbone.* plain ViT) are "
                         "recognised but not converted yet; convert them to this project's key "
                         "names")
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
    state, fmt = convert_state_dict(read_checkpoint(path), model)
    own = model.state_dict()
    problems = mismatch(own, state)
    if problems:
        raise ValueError(f"checkpoint {path} ({fmt} format) does not fit the model: {problems}")
    model.load_state_dict(state)
    return fmt

