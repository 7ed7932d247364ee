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


class LeakageError(RuntimeError):
    """A method read unseen-class information during training without declaring it."""


@dataclass(frozen=True)
class ClassSemantics:
    """Per-class side information, one row per class in `class_ids` (dataset class indices)."""
    class_ids: np.ndarray
    att: np.ndarray         # rows with unit L2 norm (xlsa17 `att`)
    original: np.ndarray    # the source's own scale (CUB: % of annotators)

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

    @property
    def n_attributes(self) -> int:
        return len(self.attribute_names)


@dataclass(frozen=True)
class TrainData:
    x: Any                      # "vector": N × D float32 array
    y: np.ndarray               # row of `semantics` for each sample (0 .. C_train − 1)
    semantics: ClassSemantics   # training (seen) classes only


@dataclass
class FitContext:
    """Handed to `fit`: seeds, device, and the evaluator's checkpoint hook."""
    seed: int
    device: str
    progress: bool
    _on_checkpoint: Callable[[int], None]
    _unseen: ClassSemantics
    _declared_unseen: bool
    checkpoints: list[int] = field(default_factory=list)

    def evaluate(self, epoch: int) -> None:
        """Iterative methods call this after each epoch; the evaluator scores the current model."""
        self.checkpoints.append(epoch)
        self._on_checkpoint(epoch)

    def unseen_semantics(self) -> ClassSemantics:
        if not self._declared_unseen:
            raise LeakageError("this method reads unseen-class semantics during fit but does not declare "
                               "uses_unseen_semantics = True")
        return self._unseen


class Method:
    """Base class of method plugins; register subclasses with `@register_method("name")`."""
    name: ClassVar[str] = ""
    input_kind: ClassVar[str] = "vector"            # "vector" | "map" | "maps" | "image"
    uses_unseen_semantics: ClassVar[bool] = False
    default_calibration_gamma: ClassVar[float] = 0.0  # γ of the `last` policy
    paper: ClassVar[str] = ""
    variants: ClassVar[dict[str, dict]] = {}   # named settings: "<name>.<variant>" runs them
    variant: ClassVar[str | None] = None
    # Settings that change only `score` (not training): evaluated on the same fitted models and
    # recorded as runs of "<name>.<variant>" beside the method's own run.
    score_variants: ClassVar[dict[str, dict]] = {}

    @classmethod
    def with_variant(cls, variant: str) -> type["Method"]:
        """A subclass whose defaults carry the variant's overrides (an `input_kind` key switches inputs)."""
        if variant not in cls.variants:
            raise KeyError(f"{cls.name} has no variant {variant!r}; variants: {', '.join(sorted(cls.variants)) or 'none'}")
        overrides = dict(cls.variants[variant])
        input_kind = overrides.pop("input_kind", cls.input_kind)
        base_defaults = cls.default_hparams
        return type(f"{cls.__name__}[{variant}]", (cls,), {
            "name": f"{cls.name}.{variant}", "variant": variant, "input_kind": input_kind,
            "score_variants": {},   # readouts of the base configuration only
            "default_hparams": classmethod(lambda _cls, dataset: {**base_defaults(dataset), **overrides})})

    @classmethod
    def default_hparams(cls, dataset: str) -> dict:
        """The paper's settings for this dataset (the `last` policy and the sweep's first point)."""
        raise NotImplementedError

    @classmethod
    def search_space(cls, dataset: str) -> dict[str, list]:
        """Values tried on validation, per hyperparameter (a full grid)."""
        return {}

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


def l2_normalise_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm; all-zero rows stay zero (SUN's `man-made` word vector is 0)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)
