"""SAE: Kodirov, Xiang & Gong, "Semantic Autoencoder for Zero-Shot Learning", CVPR 2017.

Encoder W (A×D) maps features to semantics, its transpose decodes them back:
    min ‖X − WᵀS‖² + λ‖WX − S‖²   ⇒   (SSᵀ) W + W (λ XXᵀ) = (1 + λ) S Xᵀ     (a Sylvester equation)
with X: D×N (L2-normalised samples) and S: A×N (each sample's class signature).
Two ways to score, both by cosine: F→S (project x with W, compare with s_c) and S→F (decode s_c
with Wᵀ, compare with x). The direction is a hyperparameter. Scoring uses W with each row (attribute)
L2-normalised, as the authors' demo (`NormalizeFea(W)`) and the GBU-protocol reimplementations do; W as
fitted is the scoring variant `sae.raw-w`, read off the same fitted models.
"""
from __future__ import annotations

import numpy as np


from zsl_bench.method import ClassSemantics, FitContext, Method, TrainData, l2_normalise_rows, gbu_rule


class SAE(Method):
    input_kind = "vector"
    device = "cpu"
    paper = "Kodirov, Xiang & Gong, CVPR 2017"
    paper_rule = gbu_rule("SAE/sae_gzsl.py:L148-L173 "
                          "(max validation per-class T1 per direction), L224-L245 (U/S/H by plain argmax)")
    # (λ, direction) found on validation by the mvp18 reimplementation (S→F wins on every dataset; see README).
    profiles = {"CUB": {"lambda": 0.2, "direction": "S2F", "w_norm": "rows"},
                "SUN": {"lambda": 0.16, "direction": "S2F", "w_norm": "rows"},
                "AWA2": {"lambda": 0.2, "direction": "S2F", "w_norm": "rows"},
                "*": {"lambda": 0.2, "direction": "S2F", "w_norm": "rows"}}
    # mvp18's grid points (0.2; 100, its F→S value on CUB) among powers of 4.
    search_spaces = {"*": {"lambda": [0.01, 0.04, 0.16, 0.2, 0.64, 2.56, 10.24, 40.96, 100.0, 163.84],
                           "direction": ["F2S", "S2F"]}}
    score_variants = {"raw-w": {"w_norm": "none"}}   # W as fitted (zsl-bench before 2026-11)

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        self.W = sae_encoder(train.x, train.semantics.att[train.y], self.hparams["lambda"])

    def score(self, x: np.ndarray, semantics: ClassSemantics) -> np.ndarray:
        x = l2_normalise_rows(np.asarray(x, dtype=np.float64))
        s = l2_normalise_rows(semantics.att)
        w = l2_normalise_rows(self.W) if self.hparams["w_norm"] == "rows" else self.W
        if self.hparams["direction"] == "F2S":
            return l2_normalise_rows(x @ w.T) @ s.T
        return x @ l2_normalise_rows(s @ w).T

    def state_dict(self) -> dict:
        return {"W": self.W}

    def load_state_dict(self, state: dict) -> None:
        self.W = np.asarray(state["W"], dtype=np.float64)


def sae_encoder(x: np.ndarray, sample_signatures: np.ndarray, lam: float) -> np.ndarray:
    """W (A×D) solving SSᵀW + W·λXXᵀ = (1+λ)SXᵀ, samples L2-normalised first.

    Both Gram matrices are symmetric PSD, so with SSᵀ = U diag(p) Uᵀ and XXᵀ = V diag(q) Vᵀ the equation is
    diagonal in those bases: W = U [(1+λ) (Uᵀ S Xᵀ V)_ij / (p_i + λ q_j)] Vᵀ. The decompositions depend on
    the training set only, so a validation grid over λ computes them once (`_gram_bases`) and each λ costs
    two matrix products. Where the solution is unique (p_i + λ q_j > 0 for all i, j: XXᵀ of full rank, i.e. more
    training images than feature dimensions, as on every dataset here) it equals scipy's `solve_sylvester` to
    rounding (a test checks it); where it is not, both solve the equation but may differ in its null space."""
    p, u, q, v, c = _gram_bases(x, sample_signatures)
    return u @ ((1.0 + lam) * c / (p[:, None] + lam * q[None, :])) @ v.T


_BASES: dict = {}   # (digest of X, digest of S) → eigen-bases; one training set at a time


def _gram_bases(x: np.ndarray, sample_signatures: np.ndarray):
    import hashlib

    x = l2_normalise_rows(np.asarray(x, dtype=np.float64)).T          # D × N
    s = np.asarray(sample_signatures, dtype=np.float64).T              # A × N
    key = (hashlib.blake2b(x.tobytes(), digest_size=16).digest(), hashlib.blake2b(s.tobytes(), digest_size=16).digest(),
           x.shape, s.shape)
    if key not in _BASES:
        p, u = np.linalg.eigh(s @ s.T)
        q, v = np.linalg.eigh(x @ x.T)
        _BASES.clear()
        _BASES[key] = (p, u, q, v, u.T @ (s @ x.T) @ v)
    return _BASES[key]
