"""TransZero's network (methods.md §3.2), checked against shiming-chen/TransZero `model.py` (7c10cdb).

Same mathematics as the official code, two differences in how it is computed:
- the relative-geometry embedding of the grid (sin/cos of log relative offsets, 64 values per pair of
  cells) depends only on the grid, so it is built once per grid instead of at every step and for
  every batch element; the learnt Linear(64→1) + ReLU on top of it still runs at every step;
- the grid is the input's H × W (the official code hard-codes 14 × 14).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def grid_geometry_embedding(h: int, w: int, dim: int = 64, wave_len: float = 1000.0) -> torch.Tensor:
    """[R, R, dim] sin/cos embedding of (log|Δx|/w', log|Δy|/h', log w-ratio, log h-ratio) between cells.

    Cell (i, j) spans [i/h, (i+1)/h] × [j/w, (j+1)/w]; as in the official code the "size" is the
    relative extent plus 1 and offsets are clamped at 1e-3 before the log.
    """
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w) / h   # x_min of each cell, row-major
    cols = torch.arange(w, dtype=torch.float64).repeat(h) / w
    cx, cy = rows + 0.5 / h, cols + 0.5 / w
    size_x, size_y = torch.full_like(cx, 1.0 / h + 1.0), torch.full_like(cy, 1.0 / w + 1.0)
    dx = torch.log(torch.clamp(torch.abs((cx[:, None] - cx[None, :]) / size_x[:, None]), min=1e-3))
    dy = torch.log(torch.clamp(torch.abs((cy[:, None] - cy[None, :]) / size_y[:, None]), min=1e-3))
    dw = torch.log(size_x[:, None] / size_x[None, :])
    dh = torch.log(size_y[:, None] / size_y[None, :])
    position = torch.stack([dx, dy, dw, dh], dim=-1) * 100.0                   # [R, R, 4]
    freqs = 1.0 / wave_len ** (torch.arange(dim // 8, dtype=torch.float64) / (dim // 8))
    angles = (position[..., None] * freqs).reshape(h * w, h * w, -1)         # [R, R, dim/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).float()


class GeometryAttentionEncoder(nn.Module):
    """One encoder layer: single-head attention with the relative-geometry penalty, then the official
    double residual (attention block LN, then the layer's own LN) and a feed-forward block with LN."""

    def __init__(self, d: int, d_ff: int, dropout: float, attention_dropout: float = 0.1):
        super().__init__()
        self.fc_q, self.fc_k, self.fc_v, self.fc_o = (nn.Linear(d, d) for _ in range(4))
        for fc in (self.fc_q, self.fc_k, self.fc_v, self.fc_o):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.geometry = nn.Linear(64, 1)
        self.attention_dropout = nn.Dropout(attention_dropout)   # fixed at 0.1 in the official code (quirk)
        self.drop_attn, self.ln_attn = nn.Dropout(dropout), nn.LayerNorm(d)
        self.drop_layer, self.ln_layer = nn.Dropout(dropout), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
        self.drop_ff_inner, self.drop_ff, self.ln_ff = nn.Dropout(dropout), nn.Dropout(dropout), nn.LayerNorm(d)
        self.d = d
        self._grid = None

    def geometry_penalty(self, h: int, w: int, device) -> torch.Tensor:
        if self._grid is None or self._grid[0] != (h, w) or self._grid[1].device != device:
            self._grid = ((h, w), grid_geometry_embedding(h, w).to(device))
        return F.relu(self.geometry(self._grid[1]).squeeze(-1))               # [R, R], learnt each step

    def forward(self, x: torch.Tensor, grid: tuple[int, int], double_residual: bool = True) -> torch.Tensor:
        q, k, v = self.fc_q(x), self.fc_k(x), self.fc_v(x)
        logits = q @ k.transpose(1, 2) / math.sqrt(self.d) - self.geometry_penalty(*grid, x.device)
        attn = self.fc_o(self.attention_dropout(torch.softmax(logits, dim=-1)) @ v)
        a = self.ln_attn(x + self.drop_attn(attn))
        if double_residual:  # EncoderLayer adds the input once more (kept for parity)
            a = self.ln_layer(x + self.drop_layer(a))
        return self.ln_ff(a + self.drop_ff(self.fc2(self.drop_ff_inner(F.relu(self.fc1(a))))))


class AttributeDecoder(nn.Module):
    """Post-norm decoder layer: optional self-attention among attribute queries, cross-attention to the
    regions, ReLU feed-forward (torch's TransformerDecoderLayer arithmetic, one head)."""

    def __init__(self, d: int, d_ff: int, dropout: float, self_attention: bool):
        super().__init__()
        self.self_attention = self_attention
        self.self_attn = nn.MultiheadAttention(d, 1, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, 1, dropout=dropout, batch_first=True)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2, self.drop3, self.drop_ff = (nn.Dropout(dropout) for _ in range(4))
        self.linear1, self.linear2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor):
        t = queries
        if self.self_attention:
            t = self.norm1(t + self.drop1(self.self_attn(t, t, t, need_weights=False)[0]))
        attended, weights = self.cross_attn(t, memory, memory, need_weights=True)
        t = self.norm2(t + self.drop2(attended))
        t = self.norm3(t + self.drop3(self.linear2(self.drop_ff(F.relu(self.linear1(t))))))
        return t, weights


class TransZeroNet(nn.Module):
    def __init__(self, dim_f: int, w2v, d: int, d_ff: int, dropout: float, self_attention: bool,
                 normalize_V: bool, double_residual: bool = True):
        super().__init__()
        v = F.normalize(torch.as_tensor(w2v, dtype=torch.float32), dim=1)
        self.V = nn.Parameter(v)                                  # trainable, initialised row-normalised
        self.W_1 = nn.Parameter(torch.randn(v.shape[1], d))
        self.embed_regions = nn.Linear(dim_f, d)
        self.embed_attributes = nn.Linear(v.shape[1], d)
        self.encoder = GeometryAttentionEncoder(d, d_ff, dropout)
        self.decoder = AttributeDecoder(d, d_ff, dropout, self_attention)
        self.normalize_V, self.double_residual = normalize_V, double_residual

    def attribute_scores(self, maps: torch.Tensor):
        """maps [B, C, H, W] → per-attribute scores e [B, A] and decoder attention [B, A, R]."""
        b, _, h, w = maps.shape
        regions = F.normalize(maps.flatten(2), dim=1).transpose(1, 2)        # [B, R, C], unit regions
        v = F.normalize(self.V, dim=1) if self.normalize_V else self.V
        memory = self.encoder(self.embed_regions(regions), (h, w), self.double_residual)
        queries = self.embed_attributes(v).unsqueeze(0).expand(b, -1, -1)
        t, weights = self.decoder(queries, memory)
        return torch.einsum("ad,bad->ba", v @ self.W_1, t), weights

    def forward(self, maps: torch.Tensor, class_att: torch.Tensor):
        """Class logits z [B, K] without the ±1 offset, attribute scores e [B, A], attention [B, A, R]."""
        e, weights = self.attribute_scores(maps)
        return e @ class_att.T, e, weights
