"""A run is converged when it ended on a plateau, not when it was cut off at its epoch cap while improving."""

from __future__ import annotations

import pytest

from calohls.model.convergence import Convergence, convergence


def test_early_stop_on_a_plateau_is_converged():
    loss = [1.0, 0.5, 0.4, 0.39, 0.39, 0.39, 0.39]
    c = convergence(loss, epoch_cap=100, patience=3)
    assert c.converged
    assert c.reason == "plateau"
    assert c.best_epoch == 4
    assert "converged" in c.message


def test_cap_reached_while_improving_is_not_converged():
    loss = [1.0 / (i + 1) for i in range(30)]
    c = convergence(loss, epoch_cap=30, patience=5)
    assert not c.converged
    assert c.reason == "epoch cap"
    assert c.best_epoch == 30
    assert "NOT converged" in c.message
    assert "raise epochs" in c.message


def test_plateau_reached_exactly_at_the_cap_counts_as_converged():
    loss = [1.0, 0.5, 0.4, 0.4, 0.4, 0.4]
    assert convergence(loss, epoch_cap=6, patience=3).converged


def test_improvements_below_min_delta_do_not_count():
    loss = [1.0, 0.5, *(0.5 - 1e-7 * i for i in range(1, 8))]
    c = convergence(loss, epoch_cap=9, patience=4)
    assert c.best_epoch == 2
    assert c.converged


def test_round_trip_and_empty_history():
    c = convergence([1.0, 0.9], epoch_cap=2, patience=1)
    assert Convergence.from_json(c.to_json()) == c
    with pytest.raises(ValueError, match="no epochs"):
        convergence([], epoch_cap=2, patience=1)
