"""Token merging on bare tensors: ALGM's CLAP and GBM, ToMe, and unmerging.

Pure functions, no model knowledge, no global state::

    state = MergeState.start(batch_size, num_tokens, device=x.device)
    x, state = clap_merge(x, state, grid=(h, w), window=(2, 2), threshold=tau)
    x, state = gbm_merge(x, state, threshold=tau)
    x, state = tome_merge(x, state, r=r)
    full = state.unmerge(x)   # (B, N_original, C)
"""

from .bipartite import best_edges, gbm_merge, tome_merge
from .clap import clap_merge, window_scores
from .counts import check_threshold, released_gbm_threshold
from .state import MergeState, MergeStep, apply_assignment, gather_tokens

__all__ = [
    "MergeState",
    "MergeStep",
    "apply_assignment",
    "best_edges",
    "check_threshold",
    "clap_merge",
    "gather_tokens",
    "gbm_merge",
    "released_gbm_threshold",
    "tome_merge",
    "window_scores",
]
