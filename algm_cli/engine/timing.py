"""Interleaved timing: compare settings round by round in one process, robust to a noisy machine.

Timing setting A in one block and then B in another lets a change of machine load between the
blocks (other processes, frequency scaling) decide the ratio. Here every round times each setting
once, in a fixed order (A, B, A, B, ...), so both see the same load in every round; each round
gives one ratio, and the median ratio over >= 5 rounds with its min-max spread is what is
reported. Repeated runs should agree within that spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

from tqdm import tqdm

MIN_ROUNDS = 5


def interleaved(
    settings: Mapping[str, Callable[[], object]],
    rounds: int = MIN_ROUNDS,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Return {setting: [seconds of each round]}; every round calls each setting's fn once, in order.

    warmup: untimed calls of every setting (in the same interleaved order) before round 1.
    sync: waits for queued device work (e.g. torch.cuda.synchronize) around each timed call.
    """
    if rounds < 1:
        raise ValueError(f"interleaved timing needs rounds >= 1; got {rounds}")
    if not settings:
        raise ValueError("interleaved timing needs at least one setting")
    for _ in range(warmup):
        for fn in settings.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in tqdm(range(rounds), desc="rounds", leave=False):
        for name, fn in settings.items():
            sync()
            start = clock()
            fn()
            sync()
            times[name].append(clock() - start)
    return times


def ratio_summary(times: Mapping[str, list[float]], setting: str, reference: str) -> dict:
    """Return the per-round speed ratio time(reference) / time(setting): median, min, max, rounds.

    A ratio > 1 means `setting` is faster than `reference`.
    """
    ratios = [r / s for r, s in zip(times[reference], times[setting])]
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "rounds": len(ratios)}


def summary_rows(times: Mapping[str, list[float]], reference: str, items: int = 1) -> list[dict]:
    """Return one row per setting: median seconds, items/s and its speed ratio vs `reference`."""
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        summary = ratio_summary(times, name, reference)
        rows.append({"setting": name, "median_s": median, "per_s": items / median,
                     "vs": reference, **summary})
    return rows


def format_ratio(summary: dict) -> str:
    """Return e.g. '1.23x (1.18-1.30, 5 rounds)'."""
    return (f"{summary['ratio_median']:.2f}x ({summary['ratio_min']:.2f}-"
            f"{summary['ratio_max']:.2f}, {summary['rounds']} rounds)")
