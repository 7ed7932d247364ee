"""Within-pair accuracy on a dataset's twin classes: the positive control of an ablation of granularity.

A dataset may declare `class_pairs` (dataset.json, copied into every run's record under `data`): pairs of
unseen classes whose attributes differ only in groups of one kind — the embedded default's `fine` pairs
differ only in small parts (eye, bill, legs), its `coarse` pairs only in the body's shape and pattern
(zsl_bench/data/synthetic.py). For a test image of one twin, the question is only "this twin or the other?":
correct when its score for its own class exceeds its score for the twin. Averaged per class, then over the
pair classes of one kind (chance: 50 %). A variant that loses the level carrying fine detail should lose on
the fine pairs and not on the coarse ones; the per-level probe (benchmarks/granularity_probe.py) says which
level carries what.
"""
from __future__ import annotations

import numpy as np

KINDS_ORDER = ("fine", "coarse")


def pair_kinds(record) -> list[str]:
    """The kinds of pair the record's dataset declares, in table order."""
    kinds = {p["kind"] for p in record.get("data", {}).get("class_pairs", [])}
    return sorted(kinds, key=lambda k: (KINDS_ORDER.index(k) if k in KINDS_ORDER else len(KINDS_ORDER), k))


def pair_accuracy(predictions, pairs: list[dict], policy: str) -> dict[str, float]:
    """kind → within-pair accuracy in % under `policy` (the scores its T1 came from), from predictions.npz."""
    scores, _ = predictions.scores(policy, "T1")
    column = {str(n): i for i, n in enumerate(predictions.class_names)}
    per_kind: dict[str, list[float]] = {}
    for pair in pairs:
        missing = [n for n in pair["classes"] if n not in column]
        if missing:
            raise ValueError(f"class pair {pair['classes']}: {missing} not among the run's test classes")
        a, b = (column[n] for n in pair["classes"])
        for mine, twin in ((a, b), (b, a)):
            rows = predictions.labels == mine
            if rows.any():
                per_kind.setdefault(pair["kind"], []).append(float(np.mean(scores[rows, mine] > scores[rows, twin])))
    return {kind: 100.0 * float(np.mean(v)) for kind, v in per_kind.items()}
