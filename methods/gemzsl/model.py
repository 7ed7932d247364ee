"""GEM-ZSL's network and its two attention losses (osierboy/GEM-ZSL@8486b08 GEMZSL/modeling/GEMModel/GEMNet.py
L44-L154), on one backbone map [B, C, H, W]: a global branch GAP(x)·V for the classes, and an attention
branch (queries w2v·W, softmax over the regions) whose spatial maximum regresses the attributes.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class GEMHead(nn.Module):
    def __init__(self, channels: int, w2v):
        super().__init__()
        self.register_buffer("w2v", torch.as_tensor(w2v, dtype=torch.float32))
        dim_v = self.w2v.shape[1]
        self.W = nn.Parameter(torch.randn(dim_v, channels))                  # query projection, N(0, 1)
        self.V = nn.Parameter(torch.randn(channels, self.w2v.shape[0]))     # global branch, N(0, 1), no bias

    def forward(self, x: torch.Tensor) -> dict:
        b, c, h, w = x.shape
        flat = x.flatten(2)                                                  # [B, C, N]
        query = self.w2v @ self.W                                           # [A, C]
        attention = torch.softmax(torch.einsum("ac,bcn->ban", query, flat), dim=-1)
        return {"attributes": flat.mean(2) @ self.V, "attention": attention, "query": query,
                "attention_max": attention.max(-1).values, "grid": (h, w)}


def attribute_decorrelation(query: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """GEM-ZSL's L_AD: per group, the L2 norm over its attributes' query vectors for each channel,
    averaged over channels; then averaged over groups."""
    return sum(query[g].norm(dim=0).mean() for g in groups) / len(groups)


def compactness(attention: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """GEM-ZSL's L_CPT: each attribute's attention times the squared grid distance (in cells) to its own
    peak; mean over attributes and cells, then over the batch. The peak is a constant (argmax)."""
    b, a, n = attention.shape
    h, w = grid
    peak = attention.detach().argmax(-1)                                     # [B, A]
    rows, cols = torch.arange(h, device=attention.device), torch.arange(w, device=attention.device)
    cell_r, cell_c = rows.repeat_interleave(w), cols.repeat(h)             # [N]
    distance = (cell_r - (peak // w)[..., None]) ** 2 + (cell_c - (peak % w)[..., None]) ** 2
    return (attention * distance).reshape(b, -1).mean(-1).mean()
