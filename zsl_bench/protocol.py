"""The protocol: splits, the two phases of a run, and the selection policies.

GBU proposed split (protocol.md §1.5, §7):
- test: fit on all of trainval (seen classes), score test_seen ∪ test_unseen over all classes;
- validation fold K: fit on `foldK_train` (trainval images of trainclassesK, less val_seen),
  score `foldK_val_seen` ∪ `foldK_val_unseen` over trainclassesK ∪ valclassesK. val_seen is a fixed,
  seeded share of each train class's images, stored on disk; it mirrors how PS built test_seen.

The selection policies (val, paper, oracle, last) and the calibrations they use live in policies.py (the calibrations in traces.py); here
is the space the `val` policy's γ lives in (`spread_standardise`) and which validation folds a run may use
(`resolve_folds`).
"""
from __future__ import annotations

from dataclasses import dataclass

import re

from zsl_bench.io import ConfigError, DataError

import numpy as np

PROTOCOL_VERSION = "gbu-ps-v1"
TABLE_METRICS = ("T1", "U", "S", "H", "AUSUC")   # what every table reports, in this order
PERCENT_DECIMALS = 4   # results.csv's precision
VAL_SEEN_FRACTION = 0.2
SPLIT_SEED = 0  # val_seen is part of the dataset, not of a run: one fixed draw, stored on disk


def as_percent(fraction: float) -> float:
    """A table metric as every view shows it (tables, compare, regress, figures, MLflow): percent, converted
    and rounded here once, so every view starts from the same number. record.json keeps fractions."""
    return round(100.0 * float(fraction), PERCENT_DECIMALS)


def spread_standardise(scores: np.ndarray) -> np.ndarray:
    """Each image's scores minus their mean over the candidate classes, over their standard deviation (1 where
    all are equal): the space in which the `val` policy's γ is chosen and applied. It uses the image's own
    scores only (never another test image), keeps every image's ranking, and removes any a · s + b (a > 0)
    a refit applies to a method's scores, so a γ chosen on validation means the same on the refit model."""
    s = np.asarray(scores, dtype=np.float64)
    centred = s - s.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return centred / np.where(spread > 0, spread, 1.0)


def build_validation_fold(labels: np.ndarray, trainval: np.ndarray, train_classes: np.ndarray,
                          val_classes: np.ndarray, fold: int, fraction: float = VAL_SEEN_FRACTION,
                          seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Partition trainval into fold train / val_seen / val_unseen image rows (0-based, sorted)."""
    trainval = np.sort(np.asarray(trainval))
    rng = np.random.default_rng([seed, fold])
    in_train = trainval[np.isin(labels[trainval], train_classes)]
    val_seen = []
    for c in np.sort(train_classes):
        rows = in_train[labels[in_train] == c]
        n = int(round(fraction * len(rows)))
        if len(rows) >= 2:
            n = min(max(n, 1), len(rows) - 1)  # keep at least one image on each side
            val_seen.extend(rng.choice(rows, n, replace=False))
    val_seen = np.sort(np.array(val_seen, dtype=np.int64))
    return {
        "train": np.setdiff1d(in_train, val_seen),
        "val_seen": val_seen,
        "val_unseen": trainval[np.isin(labels[trainval], val_classes)],
    }


@dataclass(frozen=True)
class Phase:
    """One fit-and-score setting: the images and classes a method trains on, and what is scored.

    `candidate_classes` are the columns of the score matrix (dataset class indices), in order;
    `is_seen_class` marks the ones the method trained on.
    """
    name: str                      # "validation" or "test"
    train_rows: np.ndarray
    train_classes: np.ndarray
    eval_rows: np.ndarray
    candidate_classes: np.ndarray

    @property
    def is_seen_class(self) -> np.ndarray:
        return np.isin(self.candidate_classes, self.train_classes)

    def eval_columns(self, labels: np.ndarray) -> np.ndarray:
        """Labels of the scored rows as column indices of the score matrix."""
        column = {int(c): i for i, c in enumerate(self.candidate_classes)}
        return np.array([column[int(c)] for c in labels[self.eval_rows]], dtype=np.int64)


def fold_leak(dataset, fold: int, backbone_spec: dict) -> str | None:
    """Why validation fold `fold` would leak with this backbone, or None. A backbone trained here on one fold's
    train images (`source: train_on_seen`) has seen those classes: another fold whose validation classes
    include them would score "unseen" classes the features were trained to separate."""
    if backbone_spec.get("source") != "train_on_seen":
        return None
    trained = int(backbone_spec.get("fold", 1))
    seen_by_backbone = set(dataset.fold_classes(trained)[0].tolist())
    leaked = sorted(set(dataset.fold_classes(fold)[1].tolist()) & seen_by_backbone)
    if not leaked:
        return None
    return (f"validation fold {fold} would leak: the backbone was trained on fold {trained}'s train images, which "
            f"include {len(leaked)} of fold {fold}'s validation classes")


def resolve_folds(requested, dataset, backbone_spec: dict) -> tuple[int, ...]:
    """`train.folds`: "auto" = every fold of the dataset that does not leak with this backbone (real datasets
    with pretrained features: all three xlsa17 folds; the embedded default: fold 1 only); or an explicit list,
    each fold checked."""
    available = dataset.folds
    allowed = tuple(k for k in available if fold_leak(dataset, k, backbone_spec) is None)
    if requested == "auto":
        if not allowed:
            raise DataError(f"no validation fold of {dataset.name} is free of leakage with its backbone")
        return allowed
    folds = tuple(int(k) for k in requested)
    for k in folds:
        if k not in available:
            raise ConfigError(f"train.folds: {dataset.name} has no validation fold {k} (folds: {available})")
        if k not in allowed:
            raise ConfigError(f"train.folds: {fold_leak(dataset, k, backbone_spec)}; use `folds: auto` or "
                              f"[{', '.join(map(str, allowed))}]")
    if len(set(folds)) != len(folds) or not folds:
        raise ConfigError(f"train.folds must name distinct folds, not {list(requested)}")
    return folds


def validation_phase(dataset, fold: int) -> Phase:
    train_classes, val_classes = dataset.fold_classes(fold)
    s = dataset.splits
    return Phase(
        name="validation",
        train_rows=s[f"fold{fold}_train"],
        train_classes=np.sort(train_classes),
        eval_rows=np.concatenate([s[f"fold{fold}_val_seen"], s[f"fold{fold}_val_unseen"]]),
        candidate_classes=np.sort(np.concatenate([train_classes, val_classes])),
    )


def test_phase(dataset) -> Phase:
    s = dataset.splits
    return Phase(
        name="test",
        train_rows=s["trainval"],
        train_classes=np.sort(dataset.seen_classes),
        eval_rows=np.concatenate([s["test_seen"], s["test_unseen"]]),
        candidate_classes=np.arange(dataset.n_classes),
    )


SELECTION_METRICS = ("H", "T1", "AUSUC")   # what validation may maximise (train.selection_metric)


def search_mode(search) -> str:
    """`train.search`: "grid" (True), "none" (False) or "random:N"."""
    if search is True or search is False:
        return "grid" if search else "none"
    if search in ("grid", "none") or (isinstance(search, str) and re.fullmatch(r"random:[1-9]\d*", search)):
        return search
    raise ConfigError(f"train.search must be grid, none or random:N (N ≥ 1), not {search!r}")
