"""ImageNet-1k MiT weights for Segformer's encoder (`model.pretrained` of model=segformer).

The MiT-B0..B5 ImageNet-1k classifiers that Segformer starts from are public in two formats
holding the same weights:
- NVlabs/SegFormer `mit_b{0..5}.pth` (what the released configs load with `pretrained=`):
  `patch_embed{1-4}.{proj,norm}`, `block{1-4}.{j}.{norm1,norm2}`, `.attn.{q,kv,sr,norm,proj}`,
  `.mlp.{fc1,dwconv.dwconv,fc2}`, `norm{1-4}` and a classifier `head.*`;
- Hugging Face `nvidia/mit-b{0..5}` (transformers' `SegformerForImageClassification`):
  `segformer.encoder.*` with separate query / key / value, and a classifier `classifier.*`.
Both are renamed with the checkpoint tables of models/convert.py (the NVlabs names are the mmseg
backbone's without `backbone.`); only the encoder is loaded: classifiers and, for a Segformer
segmentation checkpoint of either format, decode heads are ignored. `model.pretrained=true`
reads `nvidia/mit-b{N}` from the Hugging Face cache (downloading it when online) with
huggingface_hub alone: the safetensors or .bin file is read as a plain state dict.
LayerNorm eps stays NVlabs' (1e-6 in blocks and stage norms, 1e-5 in patch embeddings and the
spatial reduction); transformers' model uses 1e-5 throughout, with the same (converted) weights.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from .convert import HF_SEGFORMER, MMSEG_SEGFORMER, rename, stack_key_value
from .pretrained import MIT_HUB_ID, mismatch, read_state_dict, weights_spec

# files of a hub repository, tried in this order (nvidia/mit-b* ship pytorch_model.bin)
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
# classifier (NVlabs, transformers) and decode-head keys: not part of the encoder
IGNORED_PREFIXES = ("head.", "classifier.", "decode_head.", "auxiliary_head.")


def mit_hub_id(variant: str) -> str:
    """Return the Hugging Face id of the ImageNet-1k MiT weights of `variant` (b0..b5)."""
    return MIT_HUB_ID.format(variant=variant)


def mit_format(state: dict) -> str:
    """Return the key format of an MiT state dict: nvlabs, mmseg, hf or unknown."""
    keys = list(state)
    if any(k.startswith("segformer.encoder.") for k in keys):
        return "hf"
    if any(k.startswith(("backbone.patch_embed1.", "backbone.block1.")) for k in keys):
        return "mmseg"
    if any(k.startswith(("patch_embed1.", "block1.")) for k in keys):
        return "nvlabs"
    return "unknown"


def encoder_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Return (the encoder's tensors under `MiTEncoder` key names, the detected format).

    Classifier and decode-head keys are dropped; keys that match no rule stay as they are (the
    caller reports them as unexpected).
    """
    fmt = mit_format(state)
    kept = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    if fmt == "nvlabs":
        kept = rename({f"backbone.{k}": v for k, v in kept.items()}, MMSEG_SEGFORMER)
    elif fmt == "mmseg":
        kept = rename(kept, MMSEG_SEGFORMER)
    elif fmt == "hf":
        kept = stack_key_value(rename(kept, HF_SEGFORMER))
    return {k.removeprefix("encoder."): v for k, v in kept.items()}, fmt


def mit_unavailable(variant: str, reason: str) -> ValueError:
    """Return the one-line error for hub MiT weights that cannot be had."""
    hub = mit_hub_id(variant)
    return ValueError(
        f"model.pretrained=true needs the ImageNet-1k MiT weights {hub} ({reason}): download "
        f"them once online (python -c \"from huggingface_hub import hf_hub_download; "
        f"hf_hub_download('{hub}', 'pytorch_model.bin')\" fills the Hugging Face cache) or set "
        f"model.pretrained=PATH to a local NVlabs mit_{variant}.pth or Hugging Face {hub} "
        f"weights file")


def hub_file(variant: str) -> Path:
    """Return the local file of `nvidia/mit-{variant}` from the HF cache (downloaded if online)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    reason = "not in the Hugging Face cache and the hub is unreachable"
    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(mit_hub_id(variant), filename))
        except (LocalEntryNotFoundError, EntryNotFoundError):
            continue  # not cached while offline, or the repository lacks this file
        except (OSError, ValueError) as err:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            break
    raise mit_unavailable(variant, reason)


def load_mit_weights(encoder: nn.Module, pretrained, variant: str) -> str:
    """Load ImageNet MiT weights into `encoder` (a `MiTEncoder`); return the file's format.

    pretrained: True (the hub's `nvidia/mit-{variant}`) or a path (.pth/.pt/.bin/.safetensors)
    in the NVlabs or Hugging Face format. Raises ValueError (one line naming the file and the
    unmatched keys) when the weights do not fit this variant.
    """
    spec = weights_spec(pretrained)
    if spec is False:
        raise ValueError("load_mit_weights needs model.pretrained=true or a path")
    path = hub_file(variant) if spec is True else Path(spec)
    state, fmt = encoder_state(read_state_dict(path))
    problems = mismatch(encoder.state_dict(), state)
    if problems:
        raise ValueError(f"model.pretrained={path} ({fmt} format) does not fit the mit_{variant} "
                         f"encoder: {problems}")
    encoder.load_state_dict(state)
    return fmt
