"""PAUMER (Courdier et al., BMVC 2023, arXiv 2311.00586; no public code): patch pausing.

After chosen layers an auxiliary head predicts each patch's class distribution; a patch whose
normalised entropy H(p) / log K is below `merge.setting` is paused for the remaining layers and
rejoins, with its features of that layer, before the decoder. Choices where the paper (as this
project has it) is silent, all options: heads after layers 4 and 8 of 12 (8 and 16 of 24),
per-token LayerNorm + Linear, trained jointly (aux_weight x CE); paused patches are neither
queries nor keys/values of later layers; the decoder predicts every patch.
"""

from __future__ import annotations

from collections.abc import Mapping

from .dtop import per_depth
from .exits import ExitSpec


def spec_from_config(merge: Mapping, depth: int) -> ExitSpec:
    """Return PAUMER's exit spec: entropy threshold = merge.setting, pause layers by depth."""
    return ExitSpec("paumer", tuple(int(v) for v in per_depth(merge["exit_layers"], depth)),
                    float(merge["setting"]), "entropy", 0, "decoder",
                    float(merge.get("aux_weight", 0.4)))
