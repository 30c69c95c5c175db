"""ALGM* search on fake evaluation functions with known answers."""

import pytest

from algm_cli.engine.tune_search import find_star_threshold


def linear(tau: float) -> float:
    """mIoU rising with tau: 40 at tau 0, 50 at tau 1; reaches 48.5 at tau 0.85."""
    return 40.0 + 10.0 * tau


def test_bisection_finds_the_lowest_passing_tau():
    tau, probes = find_star_threshold(linear, 48.5, low=0.5, high=1.0, tol=0.001)
    assert 0.85 <= tau <= 0.851
    assert linear(tau) >= 48.5
    assert probes[0] == (1.0, 50.0) and probes[1] == (0.5, 45.0)
    assert (tau, linear(tau)) in probes


def test_bisection_returns_low_when_it_already_passes():
    tau, probes = find_star_threshold(linear, 42.0, low=0.5, high=1.0)
    assert tau == 0.5 and len(probes) == 2


def test_bisection_raises_when_high_fails():
    with pytest.raises(ValueError, match="high=0.9"):
        find_star_threshold(linear, 49.5, low=0.5, high=0.9)


def test_grid_evaluates_every_point_and_takes_the_lowest_passing():
    table = {0.6: 44.0, 0.7: 46.1, 0.8: 45.0, 0.9: 46.5, 1.0: 46.0}  # not monotone
    tau, probes = find_star_threshold(table.__getitem__, 46.0, low=0.0, high=1.0,
                                      grid=[0.9, 0.6, 0.7, 0.8, 1.0])
    assert tau == 0.7
    assert [t for t, _ in probes] == [0.9, 0.6, 0.7, 0.8, 1.0]


def test_grid_without_a_passing_point_raises():
    with pytest.raises(ValueError, match="no grid threshold"):
        find_star_threshold(linear, 60.0, low=0.5, high=1.0, grid=[0.5, 1.0])


def test_bad_interval_raises():
    with pytest.raises(ValueError, match="low < high"):
        find_star_threshold(linear, 45.0, low=1.0, high=0.5)
