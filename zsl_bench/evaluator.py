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

from zsl_bench.io import ConfigError, DataError
from zsl_bench.method import ZSL_SCORER, ClassSemantics, FitContext, Method, Task, TrainData
from zsl_bench import model_views
from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve, zsl_top1
from zsl_bench.protocol import Phase, test_phase, validation_phase
from zsl_bench.runtime import seed_hash

SELECTION_METRICS = ("H", "T1", "AUSUC")
ORACLE_METRICS = ("T1", "H", "AUSUC")  # each maximised separately on test, as published code does
# which feature-store arrays a method reads: vectors whole, maps through a lazy view
FEATURES_OF_INPUT = {"vector": ("pooled",), "map": ("layer4",), "maps": ("layer2", "layer3", "layer4")}


def grid(default: dict, space: dict[str, list]) -> list[dict]:
    """The default config first, then every grid point (defaults fill unsearched keys), no repeats."""
    configs = [dict(default)]
    keys = sorted(space)
    for values in itertools.product(*(space[k] for k in keys)):
        config = {**default, **dict(zip(keys, values))}
        if config not in configs:
            configs.append(config)
    return configs


def metrics_at_gamma(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray, gamma: float,
                     curve=None, t1_scores: np.ndarray | None = None) -> dict:
    """T1, AUSUC, and GZSL U/S/H at calibration γ and at γ = 0. T1 reads `t1_scores` when the method has
    a separate ZSL scorer (see `zsl_score_matrix`), else the unseen columns of `scores`."""
    curve = curve or seen_unseen_curve(scores, labels, is_seen_class)
    g, g0 = gzsl_accuracies(scores, labels, is_seen_class, gamma), gzsl_accuracies(scores, labels, is_seen_class, 0.0)
    t1 = zsl_top1(scores if t1_scores is None else t1_scores, labels, is_seen_class)
    return {"T1": t1, "AUSUC": curve.auc(),
            "gamma": float(gamma), "U": g.U, "S": g.S, "H": g.H,
            "U_gamma0": g0.U, "S_gamma0": g0.S, "H_gamma0": g0.H}


def phase_metrics(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray,
                  t1_scores: np.ndarray | None = None) -> dict:
    """`metrics_at_gamma` at the γ that maximises H on these very scores."""
    curve = seen_unseen_curve(scores, labels, is_seen_class)
    return metrics_at_gamma(scores, labels, is_seen_class, curve.best_gamma(), curve, t1_scores)


def zsl_score_matrix(zsl_scores: np.ndarray, unseen_rows: np.ndarray, unseen_cols: np.ndarray,
                     shape: tuple[int, int]) -> np.ndarray:
    """A ZSL scorer's [unseen images × unseen classes] scores laid into the N × C matrix of the phase,
    −inf elsewhere: T1 (argmax over unseen columns on unseen rows) reads it like any score matrix."""
    out = np.full(shape, -np.inf, dtype=np.float32)
    out[np.ix_(unseen_rows, unseen_cols)] = zsl_scores
    return out


@dataclass
class Checkpoint:
    """One scored model state of the test sweep that a policy selected."""
    scores: np.ndarray
    metrics: dict | None
    config_id: int
    epoch: int | None
    state: dict | None = None
    t1_scores: np.ndarray | None = None     # from the method's ZSL scorer, if it has one


@dataclass
class RunOutput:
    selection: dict                         # policy → {"metrics", "config_id", "epoch", ...}
    validation_trace: list[dict]
    test_trace: list[dict]
    predictions: dict[str, np.ndarray]
    state: dict
    configs: list[dict]
    parameters: dict                        # model_views.parameters of the val-selected model
    views: dict | None = None               # model_views.attention_views of it (views.npz), if any
    score_variants: dict[str, "RunOutput"] = field(default_factory=dict)


class PolicyPicks:
    """Reads the test sweep for one scoring variant: the val-chosen checkpoint (once), the oracle
    maxima and the defaults' final checkpoint. Knows nothing of how the choice was made."""

    def __init__(self, chosen: dict, labels: np.ndarray, is_seen_class: np.ndarray, gamma_last: float,
                 describe=None):
        """`describe(method, scores)` is called once, on the val-selected model (what reports need of it)."""
        self.chosen, self.labels, self.is_seen_class, self.gamma_last = chosen, labels, is_seen_class, gamma_last
        self.describe, self.description = describe, None
        self.trace: list[dict] = []
        self.val: Checkpoint | None = None
        self.oracle: dict[str, Checkpoint] = {}
        self.last: Checkpoint | None = None

    def observe(self, config_id: int, epoch, scores: np.ndarray, method, t1_scores: np.ndarray | None = None) -> None:
        m = phase_metrics(scores, self.labels, self.is_seen_class, t1_scores)
        self.trace.append({"config_id": config_id, "epoch": epoch, **m})
        if (config_id, epoch) == (self.chosen["config_id"], self.chosen["epoch"]):
            self.val = Checkpoint(scores, metrics_at_gamma(scores, self.labels, self.is_seen_class,
                                                           self.chosen["gamma"], t1_scores=t1_scores),
                                  config_id, epoch, copy.deepcopy(method.state_dict()), t1_scores)
            if self.describe is not None:
                self.description = self.describe(method, scores)
        for metric in ORACLE_METRICS:
            if metric not in self.oracle or m[metric] > self.oracle[metric].metrics[metric]:
                self.oracle[metric] = Checkpoint(scores, m, config_id, epoch, t1_scores=t1_scores)
        if config_id == 0:  # the defaults; the final checkpoint wins
            self.last = Checkpoint(scores, None, config_id, epoch, t1_scores=t1_scores)

    def selection(self, fold: int, selection_metric: str) -> dict:
        last_metrics = metrics_at_gamma(self.last.scores, self.labels, self.is_seen_class, self.gamma_last,
                                        t1_scores=self.last.t1_scores)
        oracle_metrics = {"T1": self.oracle["T1"].metrics["T1"], "AUSUC": self.oracle["AUSUC"].metrics["AUSUC"],
                          **{k: self.oracle["H"].metrics[k] for k in ("U", "S", "H", "gamma")}}
        return {
            "val": {"metrics": self.val.metrics, "config_id": self.val.config_id, "epoch": self.val.epoch,
                    "validation": {k: self.chosen[k] for k in ("T1", "H", "U", "S", "gamma", "AUSUC")},
                    "selected_on": f"validation fold {fold}, max {selection_metric}; γ max val H"},
            "last": {"metrics": last_metrics, "config_id": 0, "epoch": self.last.epoch,
                     "selected_on": "default hyperparameters, final epoch, default γ"},
            "oracle": {"metrics": oracle_metrics,
                       "points": {k: {"config_id": c.config_id, "epoch": c.epoch} for k, c in self.oracle.items()},
                       "selected_on": "test set: T1, H (with test-best γ) and AUSUC each maximised separately"},
        }

    def predictions(self) -> dict[str, np.ndarray]:
        out = {"scores_val": self.val.scores, "gamma_val": np.float64(self.chosen["gamma"]),
               "scores_last": self.last.scores, "gamma_last": np.float64(self.gamma_last),
               **{f"scores_oracle_{k}": c.scores for k, c in self.oracle.items()},
               "gamma_oracle_H": np.float64(self.oracle["H"].metrics["gamma"])}
        if self.val.t1_scores is not None:   # T1 of each policy came from the method's ZSL scorer
            out.update({"scores_zsl_val": self.val.t1_scores, "scores_zsl_last": self.last.t1_scores,
                        "scores_zsl_oracle_T1": self.oracle["T1"].t1_scores})
        return out


class Evaluator:
    def __init__(self, dataset, store, method_cls: type[Method], *, seed: int, fold: int = 1,
                 selection_metric: str = "H", search: bool = True, device: str = "cpu", progress: bool = True,
                 hparams: dict | None = None, search_space: dict[str, list] | None = None):
        """`hparams` overrides the method's defaults for this dataset and `search_space` replaces its grid
        (params.yaml's `methods.<name>.hparams|search_space.<dataset>`)."""
        if selection_metric not in SELECTION_METRICS:
            raise DataError(f"selection_metric must be one of {SELECTION_METRICS}, not {selection_metric!r}")
        self.dataset, self.store, self.method_cls = dataset, store, method_cls
        self.seed, self.fold, self.selection_metric = seed, fold, selection_metric
        self.device, self.progress = device, progress
        default = method_cls.default_hparams(dataset.name, hparams)
        space = method_cls.search_space(dataset.name) if search_space is None else dict(search_space)
        unknown = sorted(set(space) - set(default))
        if unknown:
            raise ConfigError(f"search space of {method_cls.name} names unknown hyperparameters {unknown}; "
                              f"its hyperparameters: {', '.join(sorted(default))}")
        self.search_space = space if search else {}
        self.configs = grid(default, self.search_space)
        self.features = self.features_of(method_cls)
        shapes = tuple(tuple(int(d) for d in store.shape(f)[1:]) for f in self.features)
        self.task = Task(dataset=dataset.name, attribute_names=tuple(dataset.attribute_names),
                         input_kind=method_cls.input_kind, input_shape=shapes[-1] if shapes else (3,),
                         input_shapes=shapes, attribute_embeddings=dataset.attribute_embeddings(),
                         attribute_embeddings_unavailable=dataset.meta.get("attribute_embeddings_unavailable", {}))
        # Scoring-only variants (Mg-MRN's per-branch inference) are read off the same fitted models.
        self.score_variants = {"": {}, **method_cls.score_variants}

    @staticmethod
    def features_of(method_cls) -> tuple[str, ...]:
        """The feature-store arrays a method reads ("image" methods read the dataset's images instead)."""
        return FEATURES_OF_INPUT.get(method_cls.input_kind, ())

    def semantics(self, classes: np.ndarray) -> ClassSemantics:
        classes = np.asarray(classes)
        return ClassSemantics(class_ids=classes, att=self.dataset.att[classes],
                              original=self.dataset.original_att[classes])

    def inputs(self, rows: np.ndarray):
        """Pooled vectors as an array; maps as a lazy `MapView` (a map store need not fit in memory)."""
        if self.method_cls.input_kind == "vector":
            return self.store.read(rows, "pooled")
        if self.method_cls.input_kind == "image":
            from zsl_bench.images import ImageView

            return ImageView(self.dataset, rows)
        from zsl_bench.features import MapView

        return MapView(self.store, self.features, rows)

    def sweep(self, phase: Phase, on_checkpoint) -> None:
        """Fit every config on `phase`; call on_checkpoint(config_id, epoch, {variant: scores}, method, t1_scores)
        at each checkpoint, `method` being the frozen copy that scored and `t1_scores` the ZSL scorer's
        matrix (None for methods without one)."""
        from tqdm import tqdm

        labels = self.dataset.labels
        train = TrainData(x=self.inputs(phase.train_rows),
                          y=np.searchsorted(phase.train_classes, labels[phase.train_rows]),
                          semantics=self.semantics(phase.train_classes))
        x_eval = self.inputs(phase.eval_rows)
        eval_semantics = self.semantics(phase.candidate_classes)
        unseen = self.semantics(phase.candidate_classes[~phase.is_seen_class])
        expected = (len(phase.eval_rows), len(phase.candidate_classes))
        zsl = ZSL_SCORER in self.method_cls.capabilities
        if zsl:   # a separate scorer over unseen classes only, on the unseen-class images: T1 reads it
            unseen_rows = np.flatnonzero(~phase.is_seen_class[phase.eval_columns(labels)])
            unseen_cols = np.flatnonzero(~phase.is_seen_class)
            x_unseen = self.inputs(phase.eval_rows[unseen_rows])
        # One tick per checkpoint (an epoch of an iterative method, or one closed-form fit).
        bar = tqdm(total=sum(int(c.get("epochs", 1)) for c in self.configs), unit="ckpt", leave=False,
                   desc=f"{self.method_cls.name} {phase.name} ({len(self.configs)} config{'s' * (len(self.configs) > 1)})",
                   disable=not self.progress)
        for config_id, config in enumerate(self.configs):
            method = self.method_cls(config, self.task, self.device)

            def checkpoint(epoch, method=method, config_id=config_id):
                # Scoring sees evaluation images and unseen-class semantics, so it runs on a frozen copy:
                # whatever `score` keeps or changes is dropped with the copy and cannot reach training.
                scorer = copy.deepcopy(method)
                if len(self.score_variants) == 1:
                    by_variant = {"": scorer.score(x_eval, eval_semantics)}
                else:
                    by_variant = scorer.score_many(x_eval, eval_semantics, self.score_variants)
                for variant, scores in by_variant.items():
                    by_variant[variant] = scores = np.asarray(scores, dtype=np.float32)
                    if scores.shape != expected:
                        raise ValueError(f"{self.method_cls.name}.score returned {scores.shape}, expected {expected}")
                t1 = None
                if zsl:
                    t1 = np.asarray(scorer.score_zsl(x_unseen, unseen), dtype=np.float32)
                    if t1.shape != (len(unseen_rows), len(unseen_cols)):
                        raise ValueError(f"{self.method_cls.name}.score_zsl returned {t1.shape}, expected "
                                         f"{(len(unseen_rows), len(unseen_cols))}")
                    t1 = zsl_score_matrix(t1, unseen_rows, unseen_cols, expected)
                on_checkpoint(config_id, epoch, by_variant, scorer, t1)
                bar.update(1)

            ctx = FitContext(seed=seed_hash(self.seed, phase.name, config), device=self.device,
                             progress=self.progress, _on_checkpoint=checkpoint, _unseen=unseen,
                             _declared_unseen=self.method_cls.uses_unseen_semantics)
            method.fit(train, ctx)
            if not ctx.checkpoints:  # closed-form methods have one state: score it once
                checkpoint(None)
        bar.close()

    def run(self) -> RunOutput:
        labels = self.dataset.labels
        # 1. Validation: choose (config, epoch) and γ without looking at test.
        val_phase = validation_phase(self.dataset, self.fold)
        val_labels, val_seen_cols = val_phase.eval_columns(labels), val_phase.is_seen_class
        validation = {v: [] for v in self.score_variants}

        def on_validation(config_id, epoch, by_variant, method, t1_scores):
            for v, scores in by_variant.items():
                validation[v].append({"config_id": config_id, "epoch": epoch,
                                      **phase_metrics(scores, val_labels, val_seen_cols, t1_scores)})

        self.sweep(val_phase, on_validation)
        chosen = {v: max(trace, key=lambda r: r[self.selection_metric]) for v, trace in validation.items()}

        # 2. Test: refit on trainval; read each variant's val choice once, and its oracle and last points.
        t_phase = test_phase(self.dataset)
        t_labels, t_seen_cols = t_phase.eval_columns(labels), t_phase.is_seen_class
        common = {"labels": t_labels, "class_ids": t_phase.candidate_classes,
                  "class_names": np.array(self.dataset.class_names)[t_phase.candidate_classes],
                  "seen_class_mask": t_seen_cols, "unseen_sample_mask": ~t_seen_cols[t_labels],
                  "image_rows": t_phase.eval_rows}

        def describe(method, scores):   # the val-selected model, as reports will show it
            return model_views.parameters(method), model_views.attention_views(method, self, common, scores)

        gamma_last = float(self.method_cls.default_calibration_gamma)
        picks = {v: PolicyPicks(chosen[v], t_labels, t_seen_cols, gamma_last, describe if v == "" else None)
                 for v in self.score_variants}

        def on_test(config_id, epoch, by_variant, method, t1_scores):
            for v, scores in by_variant.items():
                picks[v].observe(config_id, epoch, scores, method, t1_scores)

        self.sweep(t_phase, on_test)
        outputs = {}
        for v, p in picks.items():
            if p.val is None:
                raise RuntimeError(f"{self.method_cls.name}: the refit on trainval never reached the validation-"
                                   f"selected checkpoint (config {chosen[v]['config_id']}, epoch "
                                   f"{chosen[v]['epoch']}); a method must checkpoint the same epochs whatever its "
                                   "training set")
            parameters, views = picks[""].description
            outputs[v] = RunOutput(selection=p.selection(self.fold, self.selection_metric),
                                   validation_trace=validation[v], test_trace=p.trace,
                                   predictions={**p.predictions(), **common}, state=p.val.state, configs=self.configs,
                                   parameters=parameters, views=views if v == "" else None)
        base = outputs.pop("")
        base.score_variants = outputs
        return base
