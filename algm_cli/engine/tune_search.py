"""ALGM* search: the lowest inference threshold whose mIoU still reaches the baseline's.

The paper's ALGM* (main Sec. 5.1, supp. Sec. 3.5 and Fig. 3) keeps the trained ALGM model and
lowers only the inference threshold tau. Lower tau merges more tokens, so the model gets faster and
its mIoU (usually) falls; ALGM* is the smallest tau whose mIoU is still >= the baseline's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _probe(evaluate: Callable[[float], float], tau: float,
           probes: list[tuple[float, float]]) -> float:
    """Evaluate `tau`, record (tau, mIoU) in `probes`, return the mIoU."""
    miou = float(evaluate(float(tau)))
    probes.append((float(tau), miou))
    return miou


def _grid_search(evaluate, baseline_miou: float, grid: Sequence[float]) -> tuple[float, list]:
    """Evaluate every grid point; return the lowest passing one and all probes."""
    if len(grid) == 0:
        raise ValueError("grid is empty: give at least one threshold to probe")
    probes: list[tuple[float, float]] = []
    passing = [tau for tau in grid if _probe(evaluate, tau, probes) >= baseline_miou]
    if not passing:
        best = max(probes, key=lambda p: p[1])
        raise ValueError(f"no grid threshold reaches the baseline mIoU {baseline_miou:.3f} "
                         f"(best: tau={best[0]:g} with mIoU {best[1]:.3f}); "
                         "probe higher thresholds")
    return float(min(passing)), probes


def _bisect(evaluate, baseline_miou: float, low: float, high: float,
            tol: float) -> tuple[float, list]:
    """Bisection on [low, high] for the lowest passing tau, assuming mIoU non-decreasing in tau."""
    probes: list[tuple[float, float]] = []
    top = _probe(evaluate, high, probes)
    if top < baseline_miou:
        raise ValueError(f"the upper threshold high={high:g} gives mIoU {top:.3f} < baseline "
                         f"{baseline_miou:.3f}: bisection needs high to pass; raise high "
                         "(1.0 merges nothing) or check that the baseline is the same model's")
    if _probe(evaluate, low, probes) >= baseline_miou:
        return float(low), probes
    fail, ok = float(low), float(high)
    while ok - fail > tol:
        mid = (fail + ok) / 2
        if _probe(evaluate, mid, probes) >= baseline_miou:
            ok = mid
        else:
            fail = mid
    return ok, probes


def find_star_threshold(evaluate: Callable[[float], float], baseline_miou: float, low: float,
                        high: float, tol: float = 0.005,
                        grid: list[float] | None = None) -> tuple[float, list[tuple[float, float]]]:
    """Return (lowest tau with mIoU >= baseline, every probe (tau, mIoU) in evaluation order).

    With `grid`, every grid point is evaluated and the lowest passing one is returned (no
    monotonicity assumed; ValueError when none passes). Without it, bisection on [low, high]:
    this ASSUMES mIoU is non-decreasing in tau (a higher threshold merges fewer tokens). `high` must
    pass (checked first, ValueError otherwise); if `low` already passes it is returned; otherwise
    the interval (failing end, passing end] shrinks until narrower than `tol`, and the passing end
    is returned, so the result is always a probed threshold that passed.
    """
    if grid is not None:
        return _grid_search(evaluate, baseline_miou, list(grid))
    if not low < high:
        raise ValueError(f"need low < high, got low={low:g}, high={high:g}")
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol:g}")
    return _bisect(evaluate, baseline_miou, float(low), float(high), float(tol))
