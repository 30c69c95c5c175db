"""ImageNet-pretrained backbone weights: timm's hub mechanism or a local file in timm's key format.

`model.pretrained` is false (random init), true (timm's default pretrained tag of the backbone,
fetched through the Hugging Face cache; for the ViTs the AugReg ImageNet-21k weights fine-tuned
on 1k that Segmenter, SETR and SegViT start from) or a PATH to a .pth / .pt / .bin / .safetensors
file holding a state dict with timm's key names (`cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.{i}.*`, `norm.*`; a classification head is ignored). Position embeddings of another grid
are resized to the model's (the caller's rule). Offline without the weights the error is one line
naming the weights and both ways to provide them. Segformer's MiT encoders load ImageNet-1k MiT
weights instead (NVlabs or Hugging Face `nvidia/mit-b*` files; models/mit_weights.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# keys of a classifier checkpoint that a segmentation backbone does not use
HEAD_PREFIXES = ("head.", "fc_norm.", "pre_logits.", "head_drop.")
# Hugging Face id of the ImageNet-1k MiT classifiers Segformer starts from (models/mit_weights.py)
MIT_HUB_ID = "nvidia/mit-{variant}"


def weights_spec(value) -> bool | str:
    """Return `model.pretrained` as False, True or a path string (raises ValueError otherwise)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip()
    if text.lower() in ("true", "false", "none", "null", ""):
        return text.lower() == "true"
    if not text.endswith(FILE_SUFFIXES):
        raise ValueError(f"model.pretrained={text!r}: expected true, false or a path to a "
                         f"{'/'.join(FILE_SUFFIXES)} file in timm's key format (MiT: NVlabs "
                         f"or Hugging Face)")
    return text


def describe(value, backbone: str = "") -> str:
    """Return the row label of `model.pretrained`: none, timm, hf:<MiT hub id> or file:<path>.

    True is timm's default weights of a ViT backbone, or `nvidia/mit-b{N}` for `mit_b{N}`.
    """
    spec = weights_spec(value)
    if spec is False:
        return "none"
    if spec is True:
        mit = backbone.startswith("mit_")
        return f"hf:{MIT_HUB_ID.format(variant=backbone.removeprefix('mit_'))}" if mit else "timm"
    return f"file:{Path(spec).resolve()}"


def hub_name(timm_name: str) -> str:
    """Return the Hugging Face id of timm's default pretrained weights for `timm_name`."""
    cfg = timm.models.get_pretrained_cfg(timm_name)
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub or timm_name


def unavailable(timm_name: str, reason: str) -> ValueError:
    """Return the one-line error for pretrained weights that cannot be had."""
    return ValueError(
        f"model.pretrained=true needs the weights {hub_name(timm_name)} ({reason}): download them "
        f"once online (python -c \"import timm; timm.create_model('{timm_name}', "
        f"pretrained=True)\" fills the Hugging Face cache) or set model.pretrained=PATH to a "
        f"local .pth/.safetensors state dict in timm's key format")


def load_weights_file(path: Path, label: str = "") -> object:
    """Return the object stored in a .pt/.pth or .safetensors file; one clear ValueError else."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        what = "torch file" if label else "weights file"
        raise ValueError(f"{label}{path} is not a readable {what}: {err}") from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Return the tensor dict stored in `path` (a bare state dict or under model/state_dict)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model.pretrained={path}: no such file")
    state = load_weights_file(path)
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return state


def load_timm_file(module: nn.Module, path: str | Path,
                   resize: Callable[[Tensor], Tensor] | None = None) -> None:
    """Load a timm-format state dict from `path` into the timm model `module` (head ignored).

    resize maps the file's `pos_embed` to the model's shape. Raises ValueError naming the
    missing, unexpected and mis-shaped keys when the file does not fit.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(HEAD_PREFIXES)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    if "pos_embed" in state and resize is not None:
        state["pos_embed"] = resize(state["pos_embed"])
    problems = mismatch(own, state)
    if problems:
        raise ValueError(f"model.pretrained={path} does not fit the backbone: {problems}")
    module.load_state_dict(state, strict=False)


def mismatch(own: dict, state: dict, limit: int = 5) -> str:
    """Return '' when `state` fits `own` exactly, else one line of missing/unexpected/shape keys."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            parts.append(f"{label} {keys[:limit]}{' ...' if len(keys) > limit else ''}"
                         f" ({len(keys)})")
    if shapes:
        parts.append("shape mismatches " + "; ".join(shapes[:3]))
    return ", ".join(parts)


def create_timm(timm_name: str, pretrained, pretrained_size: int, img_size: int,
                resize: Callable[[Tensor, tuple[int, int]], Tensor] | None = None,
                **kwargs) -> nn.Module:
    """Return timm's `timm_name`: random, hub-pretrained or with a file's weights.

    Hub weights come at their native `pretrained_size` (the caller resizes the position
    embeddings); for a file the model is built at `img_size` and the file's position embeddings
    are resized to that grid with `resize(pos_embed, grid)`.
    """
    spec = weights_spec(pretrained)
    if spec is True:
        timm_log = logging.getLogger("timm")
        level = timm_log.level
        timm_log.setLevel(logging.WARNING)  # keep a failure to one line (no "Loading ..." first)
        try:
            return timm.create_model(timm_name, pretrained=True, img_size=pretrained_size, **kwargs)
        except (OSError, RuntimeError, ValueError) as err:
            reason = "not in the Hugging Face cache and the hub is unreachable"
            if "offline" not in str(err).lower() and "cache" not in str(err).lower():
                reason = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            raise unavailable(timm_name, reason) from None
        finally:
            timm_log.setLevel(level)
    model = timm.create_model(timm_name, pretrained=False, img_size=img_size, **kwargs)
    if spec:
        grid = tuple(int(g) for g in model.patch_embed.grid_size)
        load_timm_file(model, spec, None if resize is None else lambda pe: resize(pe, grid))
    return model
