"""Cluster selections: parsing the written rules, applying them, counting what each drops."""

from __future__ import annotations

import numpy as np
import pytest

from calohls.data.selection import ClusterSelection, Rule
from calohls.errors import ConfigError


def test_parse_rules_ranges_and_flags():
    sel = ClusterSelection.parse(["e_em>1", "0.5<=e_true<5e2", " abs_eta <= 2.5 ", "truth_matched"])
    assert sel.rules == (
        Rule("e_em", ">", 1.0),
        Rule("e_true", ">=", 0.5),
        Rule("e_true", "<", 500.0),
        Rule("abs_eta", "<=", 2.5),
        Rule("truth_matched"),
    )
    assert sel.to_json() == ["e_em>1", "e_true>=0.5", "e_true<500", "abs_eta<=2.5", "truth_matched"]
    assert ClusterSelection.from_json(sel.to_json()) == sel


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("energy>1", "unknown quantity 'energy'; use one of e_em, e_true, abs_eta"),
        ("e_em=1", "is not a rule"),
        ("matched", "is not a rule"),
        ("1<eta<2", "unknown quantity 'eta'"),
        ("e_em>one", "is not a rule"),
    ],
)
def test_bad_rules_are_refused(text, match):
    with pytest.raises(ConfigError, match=match) as info:
        ClusterSelection.parse([text])
    assert text in str(info.value)


def test_apply_counts_each_cluster_under_its_first_failing_rule():
    scalars = {
        "e_em": np.array([0.5, 2.0, 3.0, 4.0, 600.0]),
        "e_true": np.array([1.0, -1.0, 3.0, 4.0, 700.0]),
        "eta": np.array([0.1, 0.2, -3.0, 0.3, 0.0]),
    }
    keep, dropped = ClusterSelection.parse(["1<e_em<500", "truth_matched", "abs_eta<2.5"]).apply(scalars)
    np.testing.assert_array_equal(keep, [False, False, False, True, False])
    assert dropped == {"e_em>1": 1, "e_em<500": 1, "truth_matched": 1, "abs_eta<2.5": 1}
    keep, dropped = ClusterSelection().apply(scalars)
    assert keep.all()
    assert dropped == {}
