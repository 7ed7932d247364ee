"""Within-pair accuracy on declared twin classes (zsl_bench.twin_pairs): the ablation's positive control."""
from dataclasses import dataclass

import numpy as np
import pytest

from zsl_bench.twin_pairs import pair_accuracy, pair_kinds


@dataclass
class Scored:
    """The part of records.Predictions pair_accuracy reads: labels, class names and the policy's T1 scores."""
    labels: np.ndarray
    class_names: np.ndarray
    t1: np.ndarray

    def scores(self, policy, metric):
        assert metric == "T1"
        return self.t1, 0.0


def test_only_the_twin_matters_and_classes_weigh_equally():
    names = np.array(["a", "b", "c", "d", "e"])
    labels = np.array([0, 0, 0, 1, 2, 2, 3])
    t1 = np.array([[5, 1, 9, 0, 0],    # a above its twin b (c, not a twin, is higher: irrelevant)
                   [1, 5, 0, 0, 0],    # a below b
                   [2, 1, 0, 0, 0],    # a above b
                   [0, 3, 0, 0, 0],    # b above a
                   [0, 0, 1, 2, 0],    # c below d
                   [0, 0, 3, 2, 0],    # c above d
                   [0, 0, 0, 1, 1]],   # d tied with... its twin c is 0: d above
                  dtype=float)
    pairs = [{"kind": "fine", "classes": ["a", "b"], "groups": []}, {"kind": "coarse", "classes": ["c", "d"],
                                                                       "groups": []}]
    got = pair_accuracy(Scored(labels, names, t1), pairs, "val")
    assert got["fine"] == pytest.approx(100 * np.mean([2 / 3, 1.0]))
    assert got["coarse"] == pytest.approx(100 * np.mean([1 / 2, 1.0]))
    with pytest.raises(ValueError, match="not among"):
        pair_accuracy(Scored(labels, names, t1), [{"kind": "fine", "classes": ["a", "z"]}], "val")
    assert pair_kinds({"data": {"class_pairs": pairs[::-1]}}) == ["fine", "coarse"]
    assert pair_kinds({"data": {}}) == []
