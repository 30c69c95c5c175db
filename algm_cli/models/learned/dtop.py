"""DToP, Dynamic Token Pruning (Tang et al., ICCV 2023; zbwxp/Dynamic-Token-Pruning).

Auxiliary heads end stages of the plain ViT (ViT-L: after layers 8 and 16 of 24, the third stage
ending with the final head; ViT-B: 6 and 8 of 12; the same layers here for every 12-layer ViT).
A token whose top class probability exceeds p0 (`merge.setting`; 0.95 for ViT-L, 0.9 for ViT-B)
is finalised: it skips every later layer and its prediction is its stage head's; of the eligible
tokens the 5 most confident of each predicted class stay active, so later layers keep context for
every class. Choices where this project departs or the sources are silent (documented options):
- heads: per-token LayerNorm + Linear (`exits.ExitHeads`), not the released ATM heads;
- the final decoder reads the full grid (finalised tokens with their stage features) and the
  finalised cells' logits are then replaced by their head's (bilinearly upsampled);
- the heads train jointly with the model (aux_weight x CE on the tokens each head saw, labels at
  the patch centres), with the exits active during training.
"""

from __future__ import annotations

from collections.abc import Mapping

from .exits import ExitSpec


def per_depth(value, depth: int):
    """Return value[depth] when value maps depths (12, 24), else value."""
    if isinstance(value, Mapping):
        if depth in value or str(depth) in value:
            return value[depth] if depth in value else value[str(depth)]
        raise ValueError(f"no entry for a {depth}-layer ViT in {dict(value)}")
    return value


def spec_from_config(merge: Mapping, depth: int) -> ExitSpec:
    """Return DToP's exit spec: p0 = merge.setting, stage layers by depth."""
    return ExitSpec("dtop", tuple(int(v) for v in per_depth(merge["exit_layers"], depth)),
                    float(merge["setting"]), "confidence", int(merge.get("keep_per_class", 5)),
                    "head", float(merge.get("aux_weight", 0.4)))
