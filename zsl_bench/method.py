"""The method plugin interface (design.md, "The method plugin").

A method sees seen-class samples and seen-class semantics in `fit`, and returns raw compatibility
scores in `score`. Calibration, masking, selection and every metric belong to the evaluator.

Unseen-class semantics reach a method only through `score()`, unless the class declares
`uses_unseen_semantics = True` (TransZero's self-calibration does); then, and only then,
`ctx.unseen_semantics()` hands them over during `fit`. The declaration is reported as a column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from zsl_bench.io import ConfigError


class LeakageError(RuntimeError):
    """A method read unseen-class information during training without declaring it."""


@dataclass(frozen=True)
class ClassSemantics:
    """Per-class side information, one row per class in `class_ids` (dataset class indices)."""
    class_ids: np.ndarray
    att: np.ndarray         # rows with unit L2 norm (xlsa17 `att`)
    original: np.ndarray    # the source's own scale (CUB: % of annotators)
    # Class text embeddings of the feature store's CLIP model, by kind ("names": class names through the
    # dataset's prompt templates; "attributes": the class's attribute phrases), one row per class; empty
    # unless the store was extracted with a CLIP image tower. Unseen rows reach a method as `att`'s do.
    text: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass(frozen=True)
class Task:
    """What a method may know when it is built: nothing about which classes are unseen."""
    dataset: str
    attribute_names: tuple[str, ...]
    input_kind: str
    input_shape: tuple[int, ...]    # one sample, e.g. (D,) for pooled vectors, (C, H, W) for a map
    input_shapes: tuple[tuple[int, ...], ...] = ()   # every level, for "maps" (layer2, layer3, layer4)
    # one text vector per attribute, by kind ("w2v", "minilm"): names carry no class information
    attribute_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    attribute_embeddings_unavailable: dict[str, str] = field(default_factory=dict)   # kind → why prepare left it out

    @property
    def n_attributes(self) -> int:
        return len(self.attribute_names)


@dataclass(frozen=True)
class TrainData:
    x: Any                      # "vector": N × D float32 array
    y: np.ndarray               # row of `semantics` for each sample (0 .. C_train − 1)
    semantics: ClassSemantics   # training (seen) classes only


@dataclass(frozen=True)
class TrainSettings:
    """How the harness runs a torch fit (params.yaml `train`; zsl_bench/training.py applies them). Precision
    and micro-batch can change a run's numbers, so they are in its key; loader workers only its speed."""
    precision: str = "fp32"            # auto | fp32 | bf16 | fp16 (training.resolve_precision)
    micro_batch: int | None = None     # most samples per forward; a larger batch is accumulated
    loader_workers: int = 0            # image-decoding processes of the DataLoader (0: in the training process)


@dataclass
class FitContext:
    """Handed to `fit`: seeds, device, the run's training settings, and the evaluator's checkpoint hook.
    A fit that trains with `training.TrainLoop` attaches it, so every checkpoint can save the loop's state,
    and starts from `resume_state` when the evaluator resumes an interrupted run."""
    seed: int
    device: str
    progress: bool
    _on_checkpoint: Callable[[int], None]
    _unseen: ClassSemantics
    _declared_unseen: bool
    checkpoints: list[int] = field(default_factory=list)
    settings: TrainSettings = field(default_factory=TrainSettings)
    resume_state: dict | None = None
    resumable: bool = True     # whether the checkpoint being scored is one a resumed fit restarts from
    _trainer: Any = None

    def evaluate(self, epoch, snapshot: bool = True) -> None:
        """Iterative methods call this after each epoch; the evaluator scores the current model. `epoch` is the
        checkpoint's label: an int, or a str naming a nested checkpoint (a generative method's final-classifier
        epoch c after generator epoch g: "g3/c12"); selection picks among labels, so a label records every
        level chosen. `snapshot=False`: not a point a resumed fit can restart from (the classifier epochs
        inside a generator epoch): the journal's loop state is taken only where it is True."""
        self.checkpoints.append(epoch)
        self.resumable = snapshot
        self._on_checkpoint(epoch)

    def attach(self, trainer) -> None:
        """The fit's loop (anything with `state_dict()`): what a checkpoint saves to resume from."""
        self._trainer = trainer

    def snapshot(self) -> dict | None:
        """The attached loop's state now, or None (a fit without one restarts from scratch when resumed)."""
        return self._trainer.state_dict() if self._trainer is not None else None

    def unseen_semantics(self) -> ClassSemantics:
        if not self._declared_unseen:
            raise LeakageError("this method reads unseen-class semantics during fit but does not declare "
                               "uses_unseen_semantics = True")
        return self._unseen


# How authors picked the checkpoint they report, for the `paper` selection policy (policies.py).
PAPER_CHECKPOINTS = ("test", "validation")
# How authors calibrated GZSL: "fixed" γ = default_calibration_gamma (raw score units), "zero" (none),
# "test-grid" (the γ with the best test H on a grid of `gamma_step`, swept from 0 outwards).
PAPER_CALIBRATIONS = ("fixed", "zero", "test-grid")


@dataclass(frozen=True)
class PaperRule:
    """The selection and calibration rule of a method's own paper or released code: what the `paper`
    policy reproduces from a run's traces, so a reader can set our number beside the published one.

    checkpoint "test": each metric of `separately` is maximised over the method's checkpoints on test (its
    evaluation cadence), the others are read at the H checkpoint. checkpoint "validation": the one
    checkpoint with the best validation `validation_metric` (GBU's protocol for the classic methods).
    """
    checkpoint: str
    calibration: str
    source: str                                # where the official code or paper does this
    separately: tuple[str, ...] = ("T1", "H")
    validation_metric: str = "T1"
    gamma_step: float = 0.01
    # The variant whose run gives the T1 the authors report, where their ZSL runs used other settings than the
    # GZSL ones (f-CLSWGAN's ZSL scripts): the `paper` column's T1 is read from `<method>.<t1_from>`.
    t1_from: str | None = None

    def __post_init__(self):
        if self.checkpoint not in PAPER_CHECKPOINTS:
            raise TypeError(f"PaperRule.checkpoint must be one of {PAPER_CHECKPOINTS}, not {self.checkpoint!r}")
        if self.calibration not in PAPER_CALIBRATIONS:
            raise TypeError(f"PaperRule.calibration must be one of {PAPER_CALIBRATIONS}, not {self.calibration!r}")
        if not set(self.separately) <= {"T1", "H", "AUSUC"} or "H" not in self.separately:
            raise TypeError(f"PaperRule.separately must include H and name only T1, H, AUSUC: {self.separately}")

    def describe(self, default_gamma: float) -> str:
        gamma = {"fixed": f"γ = {default_gamma:g} (fixed by the authors)", "zero": "no calibration (γ = 0)",
                 "test-grid": f"γ swept on test in steps of {self.gamma_step:g}"}[self.calibration]
        if self.checkpoint == "test":
            where = ("test: best " + ", best ".join(self.separately) + " over the evaluation cadence, each "
                     "separately")
        else:
            where = f"validation: the checkpoint with the best validation {self.validation_metric}"
        t1 = f"; T1 from the `{self.t1_from}` variant's runs (the authors' ZSL settings)" if self.t1_from else ""
        return f"{where}; {gamma}{t1} ({self.source})"


# Optional capabilities a method declares in `capabilities` (the core never guesses by duck typing).
ATTENTION_MAPS = "attention_maps"     # `attention_maps(x, weights)`: written into the run folder at train time
PARAMETER_COUNT = "parameter_count"   # `parameter_count()`: learned values and fixed state entries
ZSL_SCORER = "zsl_scorer"             # `score_zsl(x, unseen)`: T1 from a classifier over unseen classes only
CAPABILITIES = {ATTENTION_MAPS: "attention_maps", PARAMETER_COUNT: "parameter_count",
                ZSL_SCORER: "score_zsl"}   # capability → the method implementing it
# The feature-store arrays each input kind reads, by role ("pooled": the store's vectors; fine/mid/coarse: its
# map levels, a ResNet's layer2/3/4 or a ViT's chosen blocks; `FeatureStore.resolve`).
FEATURES_OF_INPUT = {"vector": ("pooled",), "map": ("coarse",), "maps": ("fine", "mid", "coarse")}
DEVICES = ("any", "cpu")               # "any": cuda when train.device allows; "cpu": numpy code, always CPU
ANY_DATASET = "*"                      # a profile used for any dataset the method has no own profile for


class Method:
    """Base class of method plugins. A method is found by its entry point in the `zsl_bench.methods`
    group; the entry point's name is the method's name (the registry sets `name`)."""
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    input_kind: ClassVar[str] = "vector"            # "vector" | "map" | "maps" | "image"
    device: ClassVar[str] = "any"                   # see DEVICES
    uses_unseen_semantics: ClassVar[bool] = False
    # Reads a token model's patch tokens (a ViT's): on a store of CNN maps the run is not applicable
    # (a configured sweep records the skip and why; an explicit request is a one-line error).
    requires_token_maps: ClassVar[bool] = False
    default_calibration_gamma: ClassVar[float] = 0.0  # γ of the `last` policy
    # How the authors picked and calibrated what they report (the `paper` policy); None: not known.
    paper_rule: ClassVar[PaperRule | None] = None
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # Default hyperparameters per dataset name; ANY_DATASET serves datasets without their own profile.
    # A dataset with neither is an error, never a silent fallback to another dataset's settings.
    profiles: ClassVar[dict[str, dict]] = {}
    search_spaces: ClassVar[dict[str, dict[str, list]]] = {}   # dataset (or ANY_DATASET) → grid
    # Where the authors' ZSL numbers came from separate runs with other settings than their GZSL runs: those
    # settings per dataset, applied when the hyperparameter `script` is "zsl" (a `zsl` variant sets it, and
    # `PaperRule.t1_from` reads the paper's T1 from it). A dataset without an entry keeps its profile.
    zsl_settings: ClassVar[dict[str, dict]] = {}
    variants: ClassVar[dict[str, dict]] = {}   # named settings: "<name>.<variant>" runs them
    variant: ClassVar[str | None] = None
    # Settings that change only `score` (not training): evaluated on the same fitted models and
    # recorded as runs of "<name>.<variant>" beside the method's own run.
    score_variants: ClassVar[dict[str, dict]] = {}

    @classmethod
    def with_variant(cls, variant: str) -> type["Method"]:
        """A subclass whose defaults carry the variant's overrides (an `input_kind` key switches inputs)."""
        if variant not in cls.variants:
            raise ConfigError(f"{cls.name} has no variant {variant!r}; variants: "
                              f"{', '.join(sorted(cls.variants)) or 'none'}")
        overrides = dict(cls.variants[variant])
        input_kind = overrides.pop("input_kind", cls.input_kind)
        return type(f"{cls.__name__}[{variant}]", (cls,), {
            "__module__": cls.__module__,   # the variant's code is its base's (run keys hash that folder)
            "name": f"{cls.name}.{variant}", "variant": variant, "input_kind": input_kind,
            "variant_overrides": overrides, "score_variants": {}})   # readouts of the base configuration only

    variant_overrides: ClassVar[dict] = {}
    # variant → {input_kind: why it computes exactly what the official configuration computes there}: the
    # ablation stage does not run such a variant on those inputs and its table says why.
    identical_when: ClassVar[dict[str, dict[str, str]]] = {}

    @classmethod
    def identical_to_base(cls) -> str | None:
        """Why this variant is provably the official configuration on its inputs, or None."""
        return cls.identical_when.get(cls.variant or "", {}).get(cls.input_kind)

    @classmethod
    def profile(cls, dataset: str) -> dict:
        """The method's own defaults for `dataset` (its profile, or the any-dataset profile)."""
        if dataset in cls.profiles:
            return dict(cls.profiles[dataset])
        if ANY_DATASET in cls.profiles:
            return dict(cls.profiles[ANY_DATASET])
        raise ConfigError(f"method {cls.name} has no default hyperparameters for dataset {dataset!r} (profiles: "
                          f"{', '.join(sorted(cls.profiles)) or 'none'}); start from one with "
                          f"`methods.{cls.name.split('.')[0]}.hparams.{dataset}.profile: <name>` in params.yaml")

    @classmethod
    def default_hparams(cls, dataset: str, overrides: dict | None = None) -> dict:
        """The settings for this dataset (the `last` policy and the sweep's first point): the method's
        profile, then the user's `overrides` (params.yaml), then the variant's switch, which wins."""
        overrides = dict(overrides or {})
        base = overrides.pop("profile", None)
        hparams = cls.profile(base if base is not None else dataset)
        unknown = sorted(set(overrides) - set(hparams))
        if unknown:
            raise ConfigError(f"method {cls.name} has no hyperparameter {', '.join(map(repr, unknown))}; "
                              f"its hyperparameters: {', '.join(sorted(hparams))}")
        if {**hparams, **overrides, **cls.variant_overrides}.get("script") == "zsl":
            hparams = {**hparams, **cls.zsl_settings.get(base if base is not None else dataset, {})}
        return {**hparams, **overrides, **cls.variant_overrides}

    @classmethod
    def feature_arrays(cls, hparams: dict) -> tuple[str, ...]:
        """The feature-store arrays a fit with `hparams` reads ("image" methods read the dataset's images).
        By input kind; a method whose official network sees another resolution overrides it (APN reads
        `coarse@224`, the coarsest level extracted at 224 px as `extract.<dataset>.<backbone>.extra_sizes` asks)."""
        return FEATURES_OF_INPUT.get(cls.input_kind, ())

    @classmethod
    def search_space(cls, dataset: str) -> dict[str, list]:
        """Values tried on validation, per hyperparameter (a full grid)."""
        space = cls.search_spaces.get(dataset, cls.search_spaces.get(ANY_DATASET, {}))
        return {k: list(v) for k, v in space.items()}

    @classmethod
    def check_declarations(cls) -> None:
        """What the registry checks when it loads a method: known values, and every declared capability
        implemented (overridden), so the core can rely on the declaration alone."""
        where = f"method {cls.name} ({cls.__module__}.{cls.__qualname__})"
        if cls.paper_rule is not None and not isinstance(cls.paper_rule, PaperRule):
            raise TypeError(f"{where}: paper_rule must be a zsl_bench.method.PaperRule")
        if cls.device not in DEVICES:
            raise TypeError(f"{where}: device must be one of {DEVICES}, not {cls.device!r}")
        for cap in cls.capabilities:
            if cap not in CAPABILITIES:
                raise TypeError(f"{where}: unknown capability {cap!r}; known: {', '.join(CAPABILITIES)}")
            if getattr(cls, CAPABILITIES[cap]) is getattr(Method, CAPABILITIES[cap]):
                raise TypeError(f"{where} declares {cap!r} but does not implement {CAPABILITIES[cap]}()")

    def __init__(self, hparams: dict, task: Task, device: str = "cpu"):
        self.hparams = dict(hparams)
        self.task = task
        self.device = device

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        raise NotImplementedError

    def score(self, x: Any, semantics: ClassSemantics) -> np.ndarray:
        """N × len(semantics) raw compatibility scores, higher = more compatible."""
        raise NotImplementedError

    def score_many(self, x: Any, semantics: ClassSemantics, variants: dict[str, dict]) -> dict[str, np.ndarray]:
        """Scores under several scoring-only settings (`score_variants`; "" = as fitted). Override when
        one pass can serve them all."""
        out = {}
        for name, overrides in variants.items():
            fitted = self.hparams
            self.hparams = {**fitted, **overrides}
            try:
                out[name] = self.score(x, semantics)
            finally:
                self.hparams = fitted
        return out

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    @classmethod
    def checkpoint_count(cls, hparams: dict) -> int:
        """How many times a fit with `hparams` calls `ctx.evaluate` (progress bars): one per epoch by default."""
        return int(hparams.get("epochs", 1))

    # --- optional capabilities (declare them in `capabilities`) -------------------------------------------
    def attention_maps(self, x: Any, attribute_weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """name → [N, H, W] attention over the feature grid, attributes averaged with `attribute_weights`
        ([N, A]); each map sums to 1 over the cells."""
        raise NotImplementedError

    def parameter_count(self) -> dict:
        """{"learned": values a fit changes, "fixed": names of state entries that are not trained}."""
        raise NotImplementedError

    @classmethod
    def fixed_gamma(cls, hparams: dict | None = None) -> float:
        """γ of the `last` policy and of a `fixed` paper rule: the hyperparameter `calibration_gamma` where the
        authors fixed one per dataset (GEM-ZSL, APN), else the class's `default_calibration_gamma`."""
        return float((hparams or {}).get("calibration_gamma", cls.default_calibration_gamma))

    @classmethod
    def official_selection(cls, hparams: dict | None = None) -> str:
        """The paper rule in words (records, `zsl-bench methods`)."""
        return cls.paper_rule.describe(cls.fixed_gamma(hparams)) if cls.paper_rule else "not stated"

    def score_zsl(self, x: Any, unseen: ClassSemantics) -> np.ndarray:
        """N × len(unseen) scores of unseen-class images over the unseen classes only, for methods whose
        ZSL prediction is a separate classifier (a generative method's classifier trained on synthetic
        unseen features, say). Called on the same frozen copy as `score`; the evaluator computes T1 from
        it and U/S/H/AUSUC from `score`."""
        raise NotImplementedError


def gbu_rule(where: str) -> PaperRule:
    """The rule GBU (Xian et al., TPAMI 2019) applies to the classic methods, as the GBU-protocol
    reimplementation mvp18/Popular-ZSL-Algorithms@2377647 does it at `where` (its files and lines)."""
    return PaperRule(checkpoint="validation", calibration="zero", validation_metric="T1",
                     source="GBU (Xian et al., TPAMI 2019, arXiv 1707.00600): hyperparameters on the validation "
                            "classes, GZSL by argmax over all classes without calibration (its validation metric "
                            "not confirmed); as the GBU-protocol reimplementation mvp18/Popular-ZSL-Algorithms@2377647 "
                            f"does it: {where}")


def dataset_profiles(common: dict, per_dataset: dict, synthetic: dict) -> dict:
    """`Method.profiles` from the settings every dataset shares, each paper dataset's own (`per_dataset`) and
    the embedded default's (`synthetic`)."""
    return {**{ds: {**common, **p} for ds, p in per_dataset.items()}, "synthetic": {**common, **synthetic}}


def l2_normalise_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm; all-zero rows stay zero (SUN's `man-made` word vector is 0)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)
