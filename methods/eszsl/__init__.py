"""ESZSL: Romera-Paredes & Torr, "An embarrassingly simple approach to zero-shot learning", ICML 2015.

The paper's closed form, with samples as rows (X: N×D, Y: N×z targets, S: z×A signatures):
    V = (XᵀX + α I)⁻¹ Xᵀ Y S (SᵀS + γ I)⁻¹,      score(x, c) = x V s_cᵀ
α and γ are searched on a log10 grid, as GBU did. Targets: Y = 1 for the true class and 0 elsewhere, as in
the authors' code and every GBU-protocol reimplementation (README); the paper's text writes {−1, 1},
kept as the variant `eszsl.pm1`. The two are not equivalent: ±1 adds a class-dependent term.
"""
from __future__ import annotations

import numpy as np


from zsl_bench.method import ClassSemantics, FitContext, Method, TrainData, gbu_rule


class ESZSL(Method):
    input_kind = "vector"
    device = "cpu"
    paper = "Romera-Paredes & Torr, ICML 2015"
    paper_rule = gbu_rule("ESZSL/eszsl_gzsl.py:L123-L141 "
                          "(max validation per-class T1), L166-L176 (refit on trainval, U/S/H by plain argmax)")
    # log10(α), log10(γ) found on validation with {0, 1} targets by the mvp18 reimplementation (see README):
    # the paper gives none for PS. Any other dataset starts from (3, 0).
    profiles = {"CUB": {"log10_alpha": 3, "log10_gamma": -1, "targets": "01"},
                "SUN": {"log10_alpha": 3, "log10_gamma": 2, "targets": "01"},
                "AWA2": {"log10_alpha": 3, "log10_gamma": 0, "targets": "01"},
                "*": {"log10_alpha": 3, "log10_gamma": 0, "targets": "01"}}
    search_spaces = {"*": {"log10_alpha": list(range(-3, 4)), "log10_gamma": list(range(-3, 4))}}
    variants = {"pm1": {"targets": "pm1"}}   # the paper's {−1, 1} targets

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        self.V = eszsl_closed_form(train.x, train.y, train.semantics.att,
                                   10.0 ** self.hparams["log10_alpha"], 10.0 ** self.hparams["log10_gamma"],
                                   targets=self.hparams["targets"])

    def score(self, x: np.ndarray, semantics: ClassSemantics) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.V @ semantics.att.T

    def state_dict(self) -> dict:
        return {"V": self.V}

    def load_state_dict(self, state: dict) -> None:
        self.V = np.asarray(state["V"], dtype=np.float64)


TARGETS = {"01": 0.0, "pm1": -1.0}   # the value of Y off the true class (1 on it)


def eszsl_closed_form(x: np.ndarray, y: np.ndarray, signatures: np.ndarray, alpha: float, gamma: float,
                      targets: str = "01") -> np.ndarray:
    """D × A matrix V of ESZSL. `y` indexes rows of `signatures` (z × A); `targets` "01" or "pm1".

    With XᵀX = Q diag(λ) Qᵀ and SᵀS = U diag(μ) Uᵀ (both symmetric PSD),
    V = (XᵀX + αI)⁻¹ XᵀYS (SᵀS + γI)⁻¹ = Q [(Qᵀ XᵀYS U)_ij / ((λ_i + α)(μ_j + γ))] Uᵀ. The decompositions and
    the middle product depend on the training set only, so a validation grid over (α, γ) computes them once
    (`_bases`) and each point costs two matrix products instead of two D × D solves; equal to the solves to
    rounding (a test checks it; α, γ > 0 keep both systems definite)."""
    if targets not in TARGETS:
        raise ValueError(f"ESZSL targets {targets!r}: one of {', '.join(TARGETS)}")
    lam, q, mu, u, c = _bases(x, y, signatures, targets)
    return q @ (c / ((lam[:, None] + alpha) * (mu[None, :] + gamma))) @ u.T


_BASES: dict = {}   # digest of (X, y, S, targets) → eigen-bases; one training set at a time (as SAE's)


def _bases(x: np.ndarray, y: np.ndarray, signatures: np.ndarray, targets: str):
    import hashlib

    x = np.asarray(x, dtype=np.float64)
    s = np.asarray(signatures, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    key = tuple(hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest() for a in (x, y, s)) + \
        (x.shape, s.shape, targets)
    if key not in _BASES:
        ys = np.full((len(y), len(s)), TARGETS[targets]) @ s   # Y S without forming Y: off-class rows first …
        ys += (1.0 - TARGETS[targets]) * s[y]                   # … then the true class's row
        lam, q = np.linalg.eigh(x.T @ x)
        mu, u = np.linalg.eigh(s.T @ s)
        _BASES.clear()
        _BASES[key] = (lam, q, mu, u, q.T @ (x.T @ ys) @ u)
    return _BASES[key]
