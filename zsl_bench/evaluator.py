"""The evaluator: fits a method under the protocol and owns every metric.

One run = (method, dataset, seed, search space). It does two kinds of sweep over the same configurations
(the method's defaults first, then its search grid or random draws):

1. validation, once per fold of `folds`: fit on the fold's train images, score val_seen ∪ val_unseen at
   each checkpoint; the folds' metrics are averaged per checkpoint (`traces.mean_over_folds`);
2. test: refit on all of trainval, score test_seen ∪ test_unseen at each checkpoint, recording every
   calibration's numbers (`traces.test_row`).

The selection policies of `policies.py` (val, paper, oracle, last) pick from those traces; the scores of
the checkpoints they pick are kept as the test sweep streams by (`policies.Keeper`). Nothing from the test
sweep influences the `val` choice: its plan is fixed before the test sweep starts.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import numpy as np

from zsl_bench.io import ConfigError, DataError
from zsl_bench.journal import RunJournal
from zsl_bench.method import ZSL_SCORER, ClassSemantics, FitContext, Method, Task, TrainData, TrainSettings
from zsl_bench import model_views
from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve, zsl_top1
from zsl_bench.protocol import SELECTION_METRICS, Phase, search_mode, spread_standardise, test_phase, validation_phase
from zsl_bench.policies import HEADLINE_POLICY, POLICIES, Keeper, RunContext
from zsl_bench.traces import mean_over_folds, test_row
from zsl_bench.runtime import seed_hash
from zsl_bench.training import Distributed

# which feature-store arrays a method reads: vectors whole, maps through a lazy view


def grid(default: dict, space: dict[str, list]) -> list[dict]:
    """The default config first, then every grid point (defaults fill unsearched keys), no repeats."""
    configs = [dict(default)]
    keys = sorted(space)
    for values in itertools.product(*(space[k] for k in keys)):
        config = {**default, **dict(zip(keys, values))}
        if config not in configs:
            configs.append(config)
    return configs


def validation_row(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray,
                   t1_scores: np.ndarray | None = None):
    """One fold's metrics of a validation checkpoint, and its seen–unseen curve in the `val` calibration's
    space (spread-standardised scores; `traces.mean_over_folds` combines the folds' curves). T1 reads
    `t1_scores` when the method has a separate ZSL scorer (see `zsl_score_matrix`); AUSUC is of the raw
    scores, as on test."""
    z = spread_standardise(scores)
    curve = seen_unseen_curve(z, labels, is_seen_class)
    g, g0 = gzsl_accuracies(z, labels, is_seen_class, curve.best_gamma()), gzsl_accuracies(z, labels, is_seen_class, 0.0)
    row = {"T1": zsl_top1(scores if t1_scores is None else t1_scores, labels, is_seen_class),
           "AUSUC": seen_unseen_curve(scores, labels, is_seen_class).auc(), "U": g.U, "S": g.S, "H": g.H,
           "gamma": g.gamma, "U_gamma0": g0.U, "S_gamma0": g0.S, "H_gamma0": g0.H}
    return row, curve


def zsl_score_matrix(zsl_scores: np.ndarray, unseen_rows: np.ndarray, unseen_cols: np.ndarray,
                     shape: tuple[int, int]) -> np.ndarray:
    """A ZSL scorer's [unseen images × unseen classes] scores laid into the N × C matrix of the phase,
    −inf elsewhere: T1 (argmax over unseen columns on unseen rows) reads it like any score matrix."""
    out = np.full(shape, -np.inf, dtype=np.float32)
    out[np.ix_(unseen_rows, unseen_cols)] = zsl_scores
    return out


@dataclass
class RunOutput:
    selection: dict                         # policy → {"metrics", "points", "selected_on"}
    validation_trace: list[dict]            # mean over the validation folds, per checkpoint (what selection reads)
    validation_folds: list[dict]            # the same per fold
    test_trace: list[dict]
    predictions: dict[str, np.ndarray]
    state: dict
    configs: list[dict]
    parameters: dict                        # model_views.parameters of the val-selected model
    views: dict | None = None               # model_views.attention_views of it (views.npz), if any
    score_variants: dict[str, "RunOutput"] = field(default_factory=dict)


def random_configs(default: dict, space: dict[str, list], n: int) -> list[dict]:
    """The defaults, then `n` draws from the grid's values, each hyperparameter from its own stream
    (DomainBed's `random_hparams`: seed_hash(draw, name)), so adding a hyperparameter never changes the
    values another draws. The same draws for every run seed: seeds measure training noise, not grids."""
    configs = [dict(default)]
    for i in range(n):
        config = {**default}
        for k in sorted(space):
            rng = np.random.default_rng(seed_hash("search", i, k))
            config[k] = space[k][int(rng.integers(len(space[k])))]
        if config not in configs:
            configs.append(config)
    return configs


class Evaluator:
    def __init__(self, dataset, store, method_cls: type[Method], *, seed: int, folds=(1,),
                 selection_metric: str = "H", search="grid", device: str = "cpu", progress: bool = True,
                 hparams: dict | None = None, search_space: dict[str, list] | None = None, replicate: int = 0,
                 settings: TrainSettings | None = None, defaults: dict | None = None):
        """`folds`: the validation class folds selection averages over; `search`: "grid", "none" or
        "random:N" (True/False: grid/none). `defaults`: the method's defaults for this dataset with the user's
        overrides applied, as the caller resolved them (runner.plan_run); else `hparams` overrides them here, and
        `search_space` replaces its grid (params.yaml's `methods.<name>.hparams|search_space.<dataset>`);
        `settings` how torch fits run (precision, micro-batch, loader workers)."""
        if selection_metric not in SELECTION_METRICS:
            raise DataError(f"selection_metric must be one of {SELECTION_METRICS}, not {selection_metric!r}")
        self.dataset, self.store, self.method_cls = dataset, store, method_cls
        self.seed, self.folds, self.selection_metric = seed, tuple(int(f) for f in folds), selection_metric
        if not self.folds:
            raise ConfigError("train.folds names no validation fold")
        self.device, self.progress, self.replicate = device, progress, int(replicate)
        self.settings = settings or TrainSettings()
        self._resume_from(RunJournal(None))
        default = self.default_hparams = (dict(defaults) if defaults is not None
                                          else method_cls.default_hparams(dataset.name, hparams))
        space = method_cls.search_space(dataset.name) if search_space is None else dict(search_space)
        unknown = sorted(set(space) - set(default))
        if unknown:
            raise ConfigError(f"search space of {method_cls.name} names unknown hyperparameters {unknown}; "
                              f"its hyperparameters: {', '.join(sorted(default))}")
        self.search = search_mode(search)
        self.search_space = space if self.search != "none" else {}
        self.configs = (random_configs(default, space, int(self.search.split(":")[1]))
                        if self.search.startswith("random:") else grid(default, self.search_space))
        self.features = self.features_of(method_cls, store, default)
        shapes = tuple(tuple(int(d) for d in store.shape(f)[1:]) for f in self.features)
        self.task = Task(dataset=dataset.name, attribute_names=tuple(dataset.attribute_names),
                         input_kind=method_cls.input_kind, input_shape=shapes[-1] if shapes else (3,),
                         input_shapes=shapes, attribute_embeddings=dataset.attribute_embeddings(),
                         attribute_embeddings_unavailable=dataset.meta.get("attribute_embeddings_unavailable", {}))
        # Scoring-only variants (Mg-MRN's per-branch inference) are read off the same fitted models.
        self.score_variants = {"": {}, **method_cls.score_variants}

    @staticmethod
    def features_of(method_cls, store, hparams: dict) -> tuple[str, ...]:
        """The feature-store arrays a method reads with `hparams` ("image" methods read the dataset's images
        instead); pooled vectors are the ones the store serves to vector methods (`FeatureStore.vectors`)."""
        return tuple(store.resolve(name) for name in method_cls.feature_arrays(hparams))

    def semantics(self, classes: np.ndarray) -> ClassSemantics:
        classes = np.asarray(classes)
        return ClassSemantics(class_ids=classes, att=self.dataset.att[classes],
                              original=self.dataset.original_att[classes],
                              text={kind: rows[classes] for kind, rows in self.store.class_text().items()})

    def inputs(self, rows: np.ndarray):
        """Pooled vectors as an array; maps as a lazy `MapView` (a map store need not fit in memory)."""
        if self.method_cls.input_kind == "vector":
            return self.store.read(rows, self.features[0])
        if self.method_cls.input_kind == "image":
            from zsl_bench.images import ImageView

            return ImageView(self.dataset, rows)
        from zsl_bench.features import MapView

        return MapView(self.store, self.features, rows)

    # --- resuming: what an interrupted run had done (journal.py) ------------------------------------------
    def _resume_from(self, journal: RunJournal) -> None:
        snapshot, events = journal.load()
        self._journal, self._events = journal, events
        self._done = [tuple(w) for w in snapshot["done"]] if snapshot else []
        self._current = snapshot["current"] if snapshot else None
        self._test_state = snapshot["test_state"] if snapshot else None   # keepers and kept, once testing
        self._test_live = None

    def _record(self, event: tuple) -> None:
        """An event of a checkpoint (validation row and curve, test row) goes to the journal as it happens."""
        self._journal.append(event)

    def _save(self, current: dict | None) -> None:
        test_state = None
        if self._test_live:
            keepers, kept = self._test_live
            test_state = {"keepers": {v: k.state_dict() for v, k in keepers.items()}, "kept": kept}
        self._journal.save({"done": self._done, "current": current, "test_state": test_state})

    def sweep(self, phase: Phase, on_checkpoint, name: str | None = None) -> None:
        """Fit every config on `phase`; call on_checkpoint(config_id, epoch, {variant: scores}, method, t1_scores)
        at each checkpoint, `method` being the frozen copy that scored and `t1_scores` the ZSL scorer's
        matrix (None for methods without one). `name` identifies the sweep in the journal: fits it finished
        before an interruption are skipped, the one in progress resumes from its last checkpoint."""
        from tqdm import tqdm

        name = name or phase.name
        labels = self.dataset.labels
        train = TrainData(x=self.inputs(phase.train_rows),
                          y=np.searchsorted(phase.train_classes, labels[phase.train_rows]),
                          semantics=self.semantics(phase.train_classes))
        # Under torchrun each process scores its share of the evaluation images; the shares are gathered.
        dist = Distributed.current()
        mine = dist.share(len(phase.eval_rows))
        x_eval = self.inputs(phase.eval_rows[mine])
        eval_semantics = self.semantics(phase.candidate_classes)
        unseen = self.semantics(phase.candidate_classes[~phase.is_seen_class])
        expected = (len(phase.eval_rows), len(phase.candidate_classes))
        zsl = ZSL_SCORER in self.method_cls.capabilities
        if zsl:   # a separate scorer over unseen classes only, on the unseen-class images: T1 reads it
            unseen_rows = np.flatnonzero(~phase.is_seen_class[phase.eval_columns(labels)])
            unseen_cols = np.flatnonzero(~phase.is_seen_class)
            mine_unseen = dist.share(len(unseen_rows))
            x_unseen = self.inputs(phase.eval_rows[unseen_rows[mine_unseen]])
        # One tick per checkpoint (an epoch of an iterative method, or one closed-form fit).
        bar = tqdm(total=sum(self.method_cls.checkpoint_count(c) for c in self.configs), unit="ckpt", leave=False,
                   desc=f"{self.method_cls.name} {phase.name} ({len(self.configs)} config{'s' * (len(self.configs) > 1)})",
                   disable=not self.progress)
        for config_id, config in enumerate(self.configs):
            where = (name, config_id)
            if where in self._done:
                bar.update(self.method_cls.checkpoint_count(config))
                continue
            resume = self._current if self._current and tuple(self._current["where"]) == where else None
            method = self.method_cls(config, self.task, self.device)

            def checkpoint(epoch, method=method, config_id=config_id, where=where):
                # Scoring sees evaluation images and unseen-class semantics, so it runs on a frozen copy:
                # whatever `score` keeps or changes is dropped with the copy and cannot reach training.
                scorer = copy.deepcopy(method)
                if len(self.score_variants) == 1:
                    by_variant = {"": scorer.score(x_eval, eval_semantics)}
                else:
                    by_variant = scorer.score_many(x_eval, eval_semantics, self.score_variants)
                for variant, scores in by_variant.items():
                    by_variant[variant] = scores = dist.gather_rows(np.asarray(scores, dtype=np.float32))
                    if scores.shape != expected:
                        raise ValueError(f"{self.method_cls.name}.score returned {scores.shape}, expected {expected}")
                t1 = None
                if zsl:
                    t1 = dist.gather_rows(np.asarray(scorer.score_zsl(x_unseen, unseen), dtype=np.float32))
                    if t1.shape != (len(unseen_rows), len(unseen_cols)):
                        raise ValueError(f"{self.method_cls.name}.score_zsl returned {t1.shape}, expected "
                                         f"{(len(unseen_rows), len(unseen_cols))}")
                    t1 = zsl_score_matrix(t1, unseen_rows, unseen_cols, expected)
                on_checkpoint(config_id, epoch, by_variant, scorer, t1)
                # every process takes it (under torchrun a collective), rank 0 writes it
                state = ctx.snapshot() if ctx.resumable else None
                if state is not None:
                    self._save({"where": where, "checkpoints": list(ctx.checkpoints), "trainer": state})
                bar.update(1)

            # Common random numbers: every configuration of the grid, and every ablation variant of the method,
            # starts from the same stream (initialisation, batch order), so their differences are paired —
            # validation compares configurations, not draws, and an ablation's ΔH is the switch's, not the
            # seed's. Replicate r > 0: an independent stream (the A/A rerun that measures the draw itself).
            fit_seed = (seed_hash(self.seed, phase.name) if not self.replicate else
                        seed_hash(self.seed, phase.name, "replicate", self.replicate))
            ctx = FitContext(seed=fit_seed, device=self.device,
                             progress=self.progress, _on_checkpoint=checkpoint, _unseen=unseen,
                             _declared_unseen=self.method_cls.uses_unseen_semantics, settings=self.settings,
                             resume_state=resume["trainer"] if resume else None,
                             checkpoints=list(resume["checkpoints"]) if resume else [])
            bar.update(len(ctx.checkpoints))
            method.fit(train, ctx)
            if not ctx.checkpoints:  # closed-form methods have one state: score it once
                checkpoint(None)
            self._done.append(where)
            self._current = None
            self._save(None)
        bar.close()

    def validate(self) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
        """Sweep every validation fold; returns per variant the trace selection reads (mean over folds) and
        the per-fold rows. Nothing from test is seen here."""
        labels = self.dataset.labels
        fold_rows = {v: {f: [] for f in self.folds} for v in self.score_variants}
        curves = {v: {} for v in self.score_variants}

        def add(v, row, curve):
            fold_rows[v][row["fold"]].append(row)
            curves[v].setdefault((row["config_id"], row["epoch"]), []).append(curve)

        for kind, v, row, curve in self._events:   # checkpoints an interrupted run had scored
            if kind == "validation":
                add(v, row, curve)
        for fold in self.folds:
            phase = validation_phase(self.dataset, fold)
            fold_labels, seen_cols = phase.eval_columns(labels), phase.is_seen_class

            def on_validation(config_id, epoch, by_variant, method, t1_scores, fold=fold):
                for v, scores in by_variant.items():
                    row, curve = validation_row(scores, fold_labels, seen_cols, t1_scores)
                    row = {"fold": fold, "config_id": config_id, "epoch": epoch, **row}
                    add(v, row, curve)
                    self._record(("validation", v, row, curve))

            self.sweep(phase, on_validation, name=f"validation-fold{fold}")
        return ({v: mean_over_folds(fold_rows[v], curves[v]) for v in self.score_variants},
                {v: [r for f in self.folds for r in fold_rows[v][f]] for v in self.score_variants})

    def run(self, journal: RunJournal | None = None) -> RunOutput:
        """The whole run. With a `journal` holding an interrupted run of the same request, it continues that
        run from its last checkpoint (finished fits are not repeated) and ends with the same numbers."""
        if journal is not None:
            self._resume_from(journal)
        labels = self.dataset.labels
        # 1. Validation: the trace every policy that may not look at test chooses from.
        validation, validation_folds = self.validate()
        contexts = {v: RunContext(validation=validation[v], selection_metric=self.selection_metric, folds=self.folds,
                                  paper_rule=self.method_cls.paper_rule) for v in self.score_variants}
        plans = {v: {name: plan for name, policy in POLICIES.items() if (plan := policy.plan(contexts[v]))}
                 for v in self.score_variants}

        # 2. Test: refit on trainval; record every checkpoint under every calibration, and keep the scores of
        #    each policy's selected checkpoints as the sweep streams by.
        t_phase = test_phase(self.dataset)
        t_labels, t_seen_cols = t_phase.eval_columns(labels), t_phase.is_seen_class
        common = {"labels": t_labels, "class_ids": t_phase.candidate_classes,
                  "class_names": np.array(self.dataset.class_names)[t_phase.candidate_classes],
                  "seen_class_mask": t_seen_cols, "unseen_sample_mask": ~t_seen_cols[t_labels],
                  "image_rows": t_phase.eval_rows}
        val_gamma = {v: {(r["config_id"], r["epoch"]): r["gamma"] for r in validation[v]} for v in self.score_variants}
        rule = self.method_cls.paper_rule
        grid_step = rule.gamma_step if rule else 0.01
        default_gamma = self.method_cls.fixed_gamma(self.default_hparams)
        # Keepers and the headline's model (its state, what reports show of it) are journalled with each snapshot.
        keepers = {v: Keeper(plans[v]) for v in self.score_variants}
        kept = {v: {} for v in self.score_variants}
        if self._test_state:
            for v in self.score_variants:
                keepers[v].load_state_dict(self._test_state["keepers"][v])
            kept = self._test_state["kept"]
        self._test_live = (keepers, kept)
        traces = {v: [] for v in self.score_variants}
        for kind, v, row, _ in self._events:
            if kind == "test":
                traces[v].append(row)

        def on_test(config_id, epoch, by_variant, method, t1_scores):
            for v, scores in by_variant.items():
                t1 = zsl_top1(scores if t1_scores is None else t1_scores, t_labels, t_seen_cols)
                row = {"config_id": config_id, "epoch": epoch,
                       **test_row(scores, t_labels, t_seen_cols, t1=t1, default_gamma=default_gamma,
                                  grid_step=grid_step, val_gamma=val_gamma[v].get((config_id, epoch)))}
                traces[v].append(row)
                self._record(("test", v, row, None))
                if HEADLINE_POLICY in keepers[v].observe(row, scores, t1_scores):
                    kept[v]["state"] = copy.deepcopy(method.state_dict())
                    if v == "":
                        kept[v]["description"] = (model_views.parameters(method),
                                                  model_views.attention_views(method, self, common, scores))

        self.sweep(t_phase, on_test, name="test")
        outputs = {}
        for v in self.score_variants:
            if "state" not in kept[v]:
                raise RuntimeError(f"{self.method_cls.name}: the refit on trainval never reached the validation-"
                                   f"selected checkpoint; a method must checkpoint the same epochs whatever its "
                                   "training set")
            selection, predictions = keepers[v].outputs(traces[v])
            head = selection[HEADLINE_POLICY]
            chosen = _row_at(validation[v], head["config_id"], head["epoch"])
            head["validation"] = {k: chosen[k] for k in ("T1", "H", "U", "S", "gamma", "AUSUC")}
            parameters, views = kept[""]["description"]
            outputs[v] = RunOutput(selection=selection, validation_trace=validation[v],
                                   validation_folds=validation_folds[v], test_trace=traces[v],
                                   predictions={**predictions, **common}, state=kept[v]["state"], configs=self.configs,
                                   parameters=parameters, views=views if v == "" else None)
        base = outputs.pop("")
        base.score_variants = outputs
        return base


def _row_at(rows: list[dict], config_id: int, epoch) -> dict:
    return next(r for r in rows if (r["config_id"], r["epoch"]) == (config_id, epoch))
