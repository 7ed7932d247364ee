"""ALE: Akata, Perronnin, Harchaoui & Schmid, "Label-Embedding for Image Classification", TPAMI 2016.

Bilinear compatibility F(x, c) = θ(x)ᵀ W φ(c), θ = L2-normalised features, φ = `att` rows, trained
by SGD on the weighted approximate ranking loss (paper eq. 7, after WSABIE/WARP):
    ℓ(x, y) = (β_r / r) Σ_{c ∈ V} [1 + F(x, c) − F(x, y)],   V = violating classes, r = |V|,
    β_r = Σ_{i=1..r} 1/i
which weighs a sample by how badly its true class ranks. The rank r is computed exactly over the
training classes (the paper samples it; with at most hundreds of classes the exact count is cheap).
Gradients are summed over a minibatch, so a learning rate means what it means for per-sample SGD.
The epoch is selected by the evaluator (every epoch is a checkpoint), not by early stopping on test.
"""
from __future__ import annotations

import numpy as np


from zsl_bench.method import ClassSemantics, FitContext, Method, TrainData, l2_normalise_rows, gbu_rule


class ALE(Method):
    input_kind = "vector"
    device = "cpu"
    paper = "Akata et al., TPAMI 2016"
    paper_rule = gbu_rule("ALE/ale_gzsl.py:L150-L204 "
                          "(epoch by validation per-class T1), L276-L288 (refit on trainval, U/S/H by plain argmax)")
    # Learning rates found on validation by the mvp18 reimplementation, all with L2-normalised features (README).
    profiles = {ds: {"lr": lr, "epochs": 25, "batch_size": 64}
                for ds, lr in {"CUB": 0.3, "SUN": 0.1, "AWA2": 0.01, "*": 0.1}.items()}
    search_spaces = {"*": {"lr": [0.01, 0.03, 0.1, 0.3, 1.0]}}

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        rng = np.random.default_rng(ctx.seed)
        x = l2_normalise_rows(np.asarray(train.x, dtype=np.float64))
        s = train.semantics.att
        n, d = x.shape
        self.W = rng.normal(0.0, 1.0 / np.sqrt(d), size=(d, s.shape[1]))
        beta = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, len(s) + 1))])  # β_r, β_0 = 0
        bs, lr = int(self.hparams["batch_size"]), float(self.hparams["lr"])
        for epoch in range(1, int(self.hparams["epochs"]) + 1):
            order = rng.permutation(n)
            for lo in range(0, n, bs):
                idx = order[lo:lo + bs]
                self.W -= lr * ranking_loss_gradient(x[idx], train.y[idx], self.W, s, beta)
            ctx.evaluate(epoch)

    def score(self, x: np.ndarray, semantics: ClassSemantics) -> np.ndarray:
        return l2_normalise_rows(np.asarray(x, dtype=np.float64)) @ self.W @ semantics.att.T

    def state_dict(self) -> dict:
        return {"W": self.W}

    def load_state_dict(self, state: dict) -> None:
        self.W = np.asarray(state["W"], dtype=np.float64)


def ranking_loss_gradient(x: np.ndarray, y: np.ndarray, W: np.ndarray, s: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Gradient of the summed weighted ranking loss over a batch with respect to W (D × A)."""
    scores = x @ W @ s.T                                         # B × C
    rows = np.arange(len(y))
    margins = 1.0 + scores - scores[rows, y][:, None]
    violating = margins > 0
    violating[rows, y] = False
    rank = violating.sum(axis=1)
    weight = np.where(rank > 0, beta[rank] / np.maximum(rank, 1), 0.0)
    coef = violating * weight[:, None]                           # ∂ℓ/∂F(x, c) for c ≠ y
    coef[rows, y] = -coef.sum(axis=1)                            # ∂ℓ/∂F(x, y)
    return x.T @ coef @ s
