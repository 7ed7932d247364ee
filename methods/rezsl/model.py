"""ReZSL's head on one backbone map [B, C, H, W], and its residual-based weights.

- `AttentionHead`: ReZSL's `AttentionNet` (FouriYe/ReZSL-TIP23@cb25133 REZSL/modeling/Model/mainModel.py
  L218-L293): fixed attribute word vectors as queries over the map's regions, no 1/√d scaling, the attended
  value projected back to C and added to the global-average-pooled feature, then one N(0, 1) probe per
  attribute (AWA2: through a 4096-wide linear layer, no activation) → v2s [B, A].
- `remse_weights`: ReZSL's residual-based weights (REZSL/modeling/Model/rezsl.py L54-L126, "in_batch").
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def regions(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)   # [B, C, H, W] → [B, HW, C]


class AttentionHead(nn.Module):
    def __init__(self, channels: int, w2v, mid: int, hidden: int = 0, ratio: float = 1.0):
        super().__init__()
        self.register_buffer("w2v", torch.as_tensor(w2v, dtype=torch.float32))   # fixed (official)
        n_attr, dim_v = self.w2v.shape
        self.query, self.key = nn.Linear(dim_v, mid), nn.Linear(channels, mid)
        self.value, self.out = nn.Linear(channels, mid), nn.Linear(mid, channels)
        self.hidden = nn.Linear(channels, hidden) if hidden else None
        self.probe = nn.Parameter(torch.randn(n_attr, hidden or channels))   # V_att_final_branch, N(0, 1)
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> dict:
        tokens = regions(x)                                                               # [B, N, C]
        attention = torch.softmax(self.query(self.w2v) @ self.key(tokens).transpose(1, 2), dim=-1)   # [B, A, N]
        final = tokens.mean(1, keepdim=True) + self.ratio * self.out(attention @ self.value(tokens))  # [B, A, C]
        if self.hidden is not None:
            final = self.hidden(final)
        return {"attributes": (final * self.probe).sum(-1), "attention": attention}


def remse_weights(p_hat: torch.Tensor, a_hat: torch.Tensor, y: torch.Tensor, p: float, p2: float) -> torch.Tensor:
    """[B, A] weights of each sample's squared residuals (p_hat − a_hat)², from this batch alone (the
    official "in_batch" type: no memory across batches) and without gradient:
    e[c, a] = mean residual of class c's samples on attribute a;
    w[c, a] = (1 + ln(e / min over classes of e[·, a]))^p · (1 + ln(e / min over attributes of e[c, ·]))^p2,
    minima over positive entries, w = 1 where e = 0. Uniform residual statistics give w = 1 everywhere:
    the plain normalised MSE."""
    with torch.no_grad():
        r = (p_hat.float() - a_hat.float()) ** 2
        classes, inverse = torch.unique(y, return_inverse=True)
        counts = torch.zeros(len(classes), device=r.device).index_add_(0, inverse, torch.ones_like(inverse, dtype=r.dtype))
        e = torch.zeros(len(classes), r.shape[1], device=r.device).index_add_(0, inverse, r) / counts[:, None]
        positive = e > 0
        masked = torch.where(positive, e, torch.full_like(e, float("inf")))
        across_classes = torch.log(e / masked.min(0, keepdim=True).values) + 1
        across_attributes = torch.log(e / masked.min(1, keepdim=True).values) + 1
        ones = torch.ones_like(e)
        w = torch.where(positive, across_classes ** p, ones) * torch.where(positive, across_attributes ** p2, ones)
        return w[inverse]
