"""SAE: Kodirov, Xiang & Gong, "Semantic Autoencoder for Zero-Shot Learning", CVPR 2017.

Encoder W (A×D) maps features to semantics, its transpose decodes them back:
    min ‖X − WᵀS‖² + λ‖WX − S‖²   ⇒   (SSᵀ) W + W (λ XXᵀ) = (1 + λ) S Xᵀ     (a Sylvester equation)
with X: D×N (L2-normalised samples) and S: A×N (each sample's class signature).
Two ways to score, both by cosine: F→S (project x with W, compare with s_c) and S→F (decode s_c
with Wᵀ, compare with x). The direction is a hyperparameter.
"""
from __future__ import annotations

import numpy as np

from zsl_bench.method import ClassSemantics, FitContext, Method, TrainData, l2_normalise_rows


class SAE(Method):
    input_kind = "vector"
    device = "cpu"
    paper = "Kodirov, Xiang & Gong, CVPR 2017"
    official_selection = "λ on a validation class split"
    # (λ, direction) found on validation by the mvp18 reimplementation (S→F wins on every dataset; see README).
    profiles = {"CUB": {"lambda": 0.2, "direction": "S2F"}, "SUN": {"lambda": 0.16, "direction": "S2F"},
                "AWA2": {"lambda": 0.2, "direction": "S2F"}, "*": {"lambda": 0.2, "direction": "S2F"}}
    search_spaces = {"*": {"lambda": [0.01, 0.04, 0.16, 0.64, 2.56, 10.24, 40.96, 163.84],
                           "direction": ["F2S", "S2F"]}}

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        self.W = sae_encoder(train.x, train.semantics.att[train.y], self.hparams["lambda"])

    def score(self, x: np.ndarray, semantics: ClassSemantics) -> np.ndarray:
        x = l2_normalise_rows(np.asarray(x, dtype=np.float64))
        s = l2_normalise_rows(semantics.att)
        if self.hparams["direction"] == "F2S":
            return l2_normalise_rows(x @ self.W.T) @ s.T
        return x @ l2_normalise_rows(s @ self.W).T

    def state_dict(self) -> dict:
        return {"W": self.W}

    def load_state_dict(self, state: dict) -> None:
        self.W = np.asarray(state["W"], dtype=np.float64)


def sae_encoder(x: np.ndarray, sample_signatures: np.ndarray, lam: float) -> np.ndarray:
    """W (A×D) solving SSᵀW + W·λXXᵀ = (1+λ)SXᵀ, samples L2-normalised first."""
    from scipy.linalg import solve_sylvester

    x = l2_normalise_rows(np.asarray(x, dtype=np.float64)).T          # D × N
    s = np.asarray(sample_signatures, dtype=np.float64).T              # A × N
    return solve_sylvester(s @ s.T, lam * (x @ x.T), (1.0 + lam) * (s @ x.T))
