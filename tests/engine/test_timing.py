"""Interleaved timing: call order, ratios and their spread on a fake clock."""

import pytest

from algm_cli.engine.timing import format_ratio, interleaved, ratio_summary, summary_rows


def test_settings_run_interleaved_and_ratios_are_per_round():
    now, calls = [0.0], []
    cost = {"a": [2, 2, 4, 2, 2], "b": [1, 1, 1, 2, 1]}  # round 3 is loaded for a, 4 for b

    def setting(name):
        def fn():
            calls.append(name)
            now[0] += cost[name][len([c for c in calls if c == name]) - 2]  # after 1 warm-up
        return fn

    times = interleaved({"a": setting("a"), "b": setting("b")}, rounds=5, warmup=1,
                        clock=lambda: now[0])
    assert calls == ["a", "b"] * 6  # warm-up round, then A, B, A, B ...
    assert times == {"a": [2, 2, 4, 2, 2], "b": [1, 1, 1, 2, 1]}
    summary = ratio_summary(times, "b", "a")
    assert summary == {"ratio_median": 2.0, "ratio_min": 1.0, "ratio_max": 4.0, "rounds": 5}
    assert format_ratio(summary) == "2.00x (1.00-4.00, 5 rounds)"
    rows = summary_rows(times, "a", items=8)
    assert rows[1]["setting"] == "b" and rows[1]["per_s"] == 8.0 and rows[0]["ratio_median"] == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounds"):
        interleaved({"a": lambda: None}, rounds=0)
    with pytest.raises(ValueError, match="at least one"):
        interleaved({})
