"""MSDN's network (shiming-chen/MSDN@ec3598b core/MSDN.py L24-L411, the configuration its three training
scripts use): two attention sub-nets over the same frozen region features and shared trainable attribute
word vectors V (A × 300, rows unit-norm at init; renormalised at every forward only when `normalize_V`).

- attribute → visual (A→V): region scores s[b, i, r] = V_i W1 f_r; attention over the *regions*,
  softmax_r(V_i W2 f_r); e1[b, i] = Σ_r attention · s.
- visual → attribute (V→A): region scores s'[b, r, i] = f_r W3 V_i; attention over the *attributes*,
  softmax_i(V_i W4 f_r); e2[b, i] = Σ_r attention · s'.
Class logits z_k = e_k · a_cᵀ over unit-norm class attributes; regions f_r are unit-norm 2048-vectors.
W1 ~ N(0, 1); W2, W3, W4 zeros (official: W_1, W_2, W_1_1, W_2_1). No bias, dropout or non-linearity. The
official W_3 / W_3_1 feed no loss and no prediction, and are left out (README).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MSDNNet(nn.Module):
    def __init__(self, channels: int, w2v, normalize_V: bool):
        super().__init__()
        w2v = F.normalize(torch.as_tensor(w2v, dtype=torch.float32), dim=1)
        dim_v = w2v.shape[1]
        self.V = nn.Parameter(w2v.clone())                                  # trainable (official trainable_w2v)
        self.W1 = nn.Parameter(torch.randn(dim_v, channels))               # A→V region scores
        self.W2 = nn.Parameter(torch.zeros(dim_v, channels))               # A→V attention (uniform at init)
        self.W3 = nn.Parameter(torch.zeros(channels, dim_v))               # V→A region scores (zero at init)
        self.W4 = nn.Parameter(torch.zeros(dim_v, channels))               # V→A attention (uniform at init)
        self.normalize_V = normalize_V

    def attribute_scores(self, maps: torch.Tensor):
        """maps [B, C, H, W] → (e1, e2) [B, A] each, and the two attentions [B, A, R]."""
        f = F.normalize(maps.flatten(2), dim=1)                             # [B, C, R], unit regions
        v = F.normalize(self.V, dim=1) if self.normalize_V else self.V
        s1 = torch.einsum("ic,bcr->bir", v @ self.W1, f)
        a1 = torch.softmax(torch.einsum("ic,bcr->bir", v @ self.W2, f), dim=-1)    # over regions
        s2 = torch.einsum("ic,bcr->bir", v @ self.W3.T, f)                  # s'[b, r, i], stored as [b, i, r]
        a2 = torch.softmax(torch.einsum("ic,bcr->bir", v @ self.W4, f), dim=1)     # over attributes
        return (a1 * s1).sum(-1), (a2 * s2).sum(-1), a1, a2

    def forward(self, maps: torch.Tensor, class_att: torch.Tensor):
        """Class logits of both sub-nets (without the built-in offset) and the A→V attention."""
        e1, e2, a1, _ = self.attribute_scores(maps)
        att = F.normalize(class_att, dim=1)
        return e1 @ att.T, e2 @ att.T, a1


def distillation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """MSDN's mutual distillation (`compute_contrastive_loss`, core/MSDN.py L237-L251) on the two sub-nets'
    offset logits: (1/B) Σ_b Σ_k |d|³ / ‖d_b‖₂ with d = z1 − z2, plus the Jensen–Shannon divergence of
    their softmaxes (no temperature); symmetric, gradients reach both sub-nets. Zero when they agree."""
    d = z1 - z2
    weighted = (d ** 2 / d.norm(dim=1, keepdim=True).clamp_min(1e-30) * d.abs()).sum(1).mean()
    p, q = torch.softmax(z1, dim=1), torch.softmax(z2, dim=1)
    log_m = torch.log((p + q) / 2)
    js = 0.5 * (F.kl_div(log_m, q, reduction="batchmean") + F.kl_div(log_m, p, reduction="batchmean"))
    return weighted + js
