"""DoViT (WACV 2024; FLHonker/DoViT-code): dynamic token stopping.

Auxiliary heads tap the ViT (ViT-L: after layers 6, 12, 18 and 23 of 24; the same depth fractions
on a 12-layer ViT: 3, 6, 9 and 11); a token whose top class probability exceeds exit_conf
(`merge.setting`, 0.985 as released) is stopped: it skips the attention and MLP of every later
layer, and a reconstruction step puts it back at its grid position (with its features of the
layer it stopped at) before the decoder, which predicts every token. Choices: per-token
LayerNorm + Linear heads, trained jointly (aux_weight x CE), stops active during training.
"""

from __future__ import annotations

from collections.abc import Mapping

from .dtop import per_depth
from .exits import ExitSpec


def spec_from_config(merge: Mapping, depth: int) -> ExitSpec:
    """Return DoViT's exit spec: exit_conf = merge.setting, tap layers by depth."""
    return ExitSpec("dovit", tuple(int(v) for v in per_depth(merge["exit_layers"], depth)),
                    float(merge["setting"]), "confidence", 0, "decoder",
                    float(merge.get("aux_weight", 0.4)))
