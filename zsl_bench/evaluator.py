"""The evaluator: fits a method under the protocol and owns every selection and every metric.

One run = (method, dataset, seed, search space). It does two sweeps over the same configurations
(the method's defaults first, then its search grid):

1. validation sweep: fit on the fold's train images, score val_seen ∪ val_unseen at each checkpoint;
2. test sweep: fit on all of trainval, score test_seen ∪ test_unseen at each checkpoint.

and reads off the three policies of protocol.py:
- `val`: the (config, epoch) with the best validation `selection_metric`, γ chosen on validation for
  H; its test scores are the run's headline. Nothing from the test sweep influences the choice.
- `oracle`: T1, H (with test-best γ) and AUSUC each maximised over the test sweep, as published
  code does; labelled, for parity with papers only.
- `last`: default config, final epoch, the method's default γ.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import numpy as np

from zsl_bench.method import ClassSemantics, FitContext, Method, Task, TrainData
from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve, zsl_top1
from zsl_bench.protocol import Phase, test_phase, validation_phase
from zsl_bench.training import seed_hash

SELECTION_METRICS = ("H", "T1", "AUSUC")
ORACLE_METRICS = ("T1", "H", "AUSUC")  # each maximised separately on test, as published code does
FEATURE_OF_INPUT = {"vector": "pooled", "map": "layer4"}  # which feature-store array a method reads


def grid(default: dict, space: dict[str, list]) -> list[dict]:
    """The default config first, then every grid point (defaults fill unsearched keys), no repeats."""
    configs = [dict(default)]
    keys = sorted(space)
    for values in itertools.product(*(space[k] for k in keys)):
        config = {**default, **dict(zip(keys, values))}
        if config not in configs:
            configs.append(config)
    return configs


def phase_metrics(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray) -> dict:
    """T1, AUSUC, and GZSL at γ = 0 and at the γ that maximises H on these scores."""
    curve = seen_unseen_curve(scores, labels, is_seen_class)
    h = curve.H
    best = int(np.argmax(h)) if h.max() > 0 else None
    at0 = gzsl_accuracies(scores, labels, is_seen_class, 0.0)
    best_gamma = float(curve.gammas[best]) if best is not None else 0.0
    at_best = gzsl_accuracies(scores, labels, is_seen_class, best_gamma)
    return {"T1": zsl_top1(scores, labels, is_seen_class), "AUSUC": curve.auc(),
            "gamma": best_gamma, "U": at_best.U, "S": at_best.S, "H": at_best.H,
            "U_gamma0": at0.U, "S_gamma0": at0.S, "H_gamma0": at0.H}


def metrics_at_gamma(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray, gamma: float) -> dict:
    g, g0 = gzsl_accuracies(scores, labels, is_seen_class, gamma), gzsl_accuracies(scores, labels, is_seen_class, 0.0)
    return {"T1": zsl_top1(scores, labels, is_seen_class),
            "AUSUC": seen_unseen_curve(scores, labels, is_seen_class).auc(),
            "gamma": float(gamma), "U": g.U, "S": g.S, "H": g.H,
            "U_gamma0": g0.U, "S_gamma0": g0.S, "H_gamma0": g0.H}


@dataclass
class Checkpoint:
    """One scored model state of the test sweep that a policy selected."""
    scores: np.ndarray
    metrics: dict | None
    config_id: int
    epoch: int | None
    state: dict | None = None


@dataclass
class RunOutput:
    selection: dict                         # policy → {"metrics", "config", "epoch", ...}
    validation_trace: list[dict]
    test_trace: list[dict]
    predictions: dict[str, np.ndarray]
    state: dict
    configs: list[dict]
    extra: dict = field(default_factory=dict)


class Evaluator:
    def __init__(self, dataset, store, method_cls: type[Method], *, seed: int, fold: int = 1,
                 selection_metric: str = "H", search: bool = True, device: str = "cpu", progress: bool = True):
        if selection_metric not in SELECTION_METRICS:
            raise ValueError(f"selection_metric must be one of {SELECTION_METRICS}, not {selection_metric!r}")
        self.dataset, self.store, self.method_cls = dataset, store, method_cls
        self.seed, self.fold, self.selection_metric = seed, fold, selection_metric
        self.device, self.progress = device, progress
        default = method_cls.default_hparams(dataset.name)
        self.configs = grid(default, method_cls.search_space(dataset.name) if search else {})
        self.feature = FEATURE_OF_INPUT[method_cls.input_kind]
        x_shape = store.shape(self.feature)[1:]
        self.task = Task(dataset=dataset.name, attribute_names=tuple(dataset.attribute_names),
                         input_kind=method_cls.input_kind, input_shape=tuple(int(d) for d in x_shape),
                         attribute_embeddings=dataset.attribute_embeddings())

    def semantics(self, classes: np.ndarray) -> ClassSemantics:
        classes = np.asarray(classes)
        return ClassSemantics(class_ids=classes, att=self.dataset.att[classes],
                              original=self.dataset.original_att[classes])

    def sweep(self, phase: Phase, on_checkpoint) -> None:
        """Fit every config on `phase`; call on_checkpoint(config_id, epoch, scores, method) each time."""
        from tqdm import tqdm

        labels = self.dataset.labels
        train = TrainData(x=self.store.read(phase.train_rows, self.feature),
                          y=np.searchsorted(phase.train_classes, labels[phase.train_rows]),
                          semantics=self.semantics(phase.train_classes))
        x_eval = self.store.read(phase.eval_rows, self.feature)
        eval_semantics = self.semantics(phase.candidate_classes)
        unseen = self.semantics(phase.candidate_classes[~phase.is_seen_class])
        bar = tqdm(list(enumerate(self.configs)), desc=f"{self.method_cls.name} {phase.name}", unit="config",
                   disable=not self.progress, leave=False)
        for config_id, config in bar:
            method = self.method_cls(config, self.task, self.device)

            def checkpoint(epoch, method=method, config_id=config_id):
                scores = np.asarray(method.score(x_eval, eval_semantics), dtype=np.float32)
                if scores.shape != (len(phase.eval_rows), len(phase.candidate_classes)):
                    raise ValueError(f"{self.method_cls.name}.score returned {scores.shape}, expected "
                                     f"{(len(phase.eval_rows), len(phase.candidate_classes))}")
                on_checkpoint(config_id, epoch, scores, method)

            ctx = FitContext(seed=seed_hash(self.seed, phase.name, config), device=self.device,
                             progress=self.progress, _on_checkpoint=checkpoint, _unseen=unseen,
                             _declared_unseen=self.method_cls.uses_unseen_semantics)
            method.fit(train, ctx)
            if not ctx.checkpoints:  # closed-form methods have one state: score it once
                checkpoint(None)

    def run(self) -> RunOutput:
        labels = self.dataset.labels
        # 1. Validation: choose (config, epoch) and γ without looking at test.
        val_phase = validation_phase(self.dataset, self.fold)
        val_labels, val_seen_cols = val_phase.eval_columns(labels), val_phase.is_seen_class
        validation_trace: list[dict] = []

        def on_validation(config_id, epoch, scores, method):
            validation_trace.append({"config_id": config_id, "epoch": epoch,
                                     **phase_metrics(scores, val_labels, val_seen_cols)})

        self.sweep(val_phase, on_validation)
        chosen = max(validation_trace, key=lambda r: r[self.selection_metric])  # first of equals wins
        chosen_key = (chosen["config_id"], chosen["epoch"])

        # 2. Test: refit on trainval; read the val choice once, and the oracle and last points.
        t_phase = test_phase(self.dataset)
        t_labels, t_seen_cols = t_phase.eval_columns(labels), t_phase.is_seen_class
        test_trace: list[dict] = []
        val_point: Checkpoint | None = None
        oracle: dict[str, Checkpoint] = {}
        last: Checkpoint | None = None
        gamma_last = float(self.method_cls.default_calibration_gamma)

        def on_test(config_id, epoch, scores, method):
            nonlocal val_point, last
            m = phase_metrics(scores, t_labels, t_seen_cols)
            test_trace.append({"config_id": config_id, "epoch": epoch, **m})
            if (config_id, epoch) == chosen_key:
                val_point = Checkpoint(scores, metrics_at_gamma(scores, t_labels, t_seen_cols, chosen["gamma"]),
                                       config_id, epoch, copy.deepcopy(method.state_dict()))
            for metric in ORACLE_METRICS:
                if metric not in oracle or m[metric] > oracle[metric].metrics[metric]:
                    oracle[metric] = Checkpoint(scores, m, config_id, epoch)
            if config_id == 0:  # the defaults; the final checkpoint wins
                last = Checkpoint(scores, None, config_id, epoch)

        self.sweep(t_phase, on_test)
        if val_point is None:
            raise RuntimeError(f"{self.method_cls.name}: the refit on trainval never reached the validation-selected "
                               f"checkpoint (config {chosen_key[0]}, epoch {chosen_key[1]}); a method must "
                               "checkpoint the same epochs whatever its training set")
        last.metrics = metrics_at_gamma(last.scores, t_labels, t_seen_cols, gamma_last)

        oracle_metrics = {"T1": oracle["T1"].metrics["T1"], "AUSUC": oracle["AUSUC"].metrics["AUSUC"],
                          **{k: oracle["H"].metrics[k] for k in ("U", "S", "H", "gamma")}}
        selection = {
            "val": {"metrics": val_point.metrics, "config_id": val_point.config_id, "epoch": val_point.epoch,
                    "validation": {k: chosen[k] for k in ("T1", "H", "U", "S", "gamma", "AUSUC")},
                    "selected_on": f"validation fold {self.fold}, max {self.selection_metric}; γ max val H"},
            "last": {"metrics": last.metrics, "config_id": 0, "epoch": last.epoch,
                     "selected_on": "default hyperparameters, final epoch, default γ"},
            "oracle": {"metrics": oracle_metrics,
                       "points": {k: {"config_id": c.config_id, "epoch": c.epoch} for k, c in oracle.items()},
                       "selected_on": "test set: T1, H (with test-best γ) and AUSUC each maximised separately"},
        }
        predictions = {
            "scores_val": val_point.scores, "gamma_val": np.float64(chosen["gamma"]),
            "scores_last": last.scores, "gamma_last": np.float64(gamma_last),
            **{f"scores_oracle_{k}": c.scores for k, c in oracle.items()},
            "gamma_oracle_H": np.float64(oracle["H"].metrics["gamma"]),
            "labels": t_labels, "class_ids": t_phase.candidate_classes,
            "class_names": np.array(self.dataset.class_names)[t_phase.candidate_classes],
            "seen_class_mask": t_seen_cols, "unseen_sample_mask": ~t_seen_cols[t_labels],
            "image_rows": t_phase.eval_rows,
        }
        return RunOutput(selection=selection, validation_trace=validation_trace, test_trace=test_trace,
                         predictions=predictions, state=val_point.state, configs=self.configs)
