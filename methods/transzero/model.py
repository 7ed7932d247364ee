"""TransZero's network (methods.md §3.2), checked against shiming-chen/TransZero `model.py` (7c10cdb).

Same mathematics as the official code; what differs is how it is computed
(benchmarks/bench_transzero_step.py measures each):
- the relative-geometry embedding of the grid (sin/cos of log relative offsets, 64 values per pair of
  cells) depends only on the grid, so it is built once per grid instead of at every step and for
  every batch element; the learnt Linear(64→1) + ReLU on top of it still runs at every step;
- the decoder's attribute queries are the same for every image, so the self-attention among them
  (projections, scores, softmax) is computed once per step and only its dropout is drawn per image;
- dropout masks are drawn with `torch.rand` (same Bernoulli keep-and-rescale as `nn.Dropout`, whose
  CPU kernel is ~3× slower at these sizes);
- every attention multiplies its projection matrices together before applying them (`fold`): scores as
  t · (W_qᵀ k_j) + b_q · k_j with k_j = W_k m_j + b_k, outputs as Σ_j w_ij (W_o W_v m_j + W_o b_v) + b_o.
  The same sums regrouped (every parameter keeps its gradient), without the per-image query and output
  projections: about a quarter of the step's arithmetic at the CUB shapes;
- the grid is the input's H × W (the official code hard-codes 14 × 14).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def grid_geometry_embedding(h: int, w: int, dim: int = 64, wave_len: float = 1000.0, batch: int | None = None,
                            dtype=torch.float64, out_dtype=torch.float32) -> torch.Tensor:
    """[R, R, dim] sin/cos embedding of (log|Δx|/w', log|Δy|/h', log w-ratio, log h-ratio) between cells.

    Cell (i, j) spans [i/h, (i+1)/h] × [j/w, (j+1)/w]; as in the official code the "size" is the
    relative extent plus 1 and offsets are clamped at 1e-3 before the log. With `batch`, the
    embedding is computed for each of `batch` copies of the grid ([batch, R, R, dim], in `dtype`),
    which is what the official code does at every step (a test checks each copy is the per-grid one).
    """
    lead = () if batch is None else (batch,)
    rows = (torch.arange(h, dtype=dtype).repeat_interleave(w) / h).expand(*lead, h * w)   # x_min, row-major
    cols = (torch.arange(w, dtype=dtype).repeat(h) / w).expand(*lead, h * w)
    cx, cy = rows + 0.5 / h, cols + 0.5 / w
    size_x, size_y = torch.full_like(cx, 1.0 / h + 1.0), torch.full_like(cy, 1.0 / w + 1.0)
    dx = torch.log(torch.clamp(torch.abs((cx[..., :, None] - cx[..., None, :]) / size_x[..., :, None]), min=1e-3))
    dy = torch.log(torch.clamp(torch.abs((cy[..., :, None] - cy[..., None, :]) / size_y[..., :, None]), min=1e-3))
    dw = torch.log(size_x[..., :, None] / size_x[..., None, :])
    dh = torch.log(size_y[..., :, None] / size_y[..., None, :])
    position = torch.stack([dx, dy, dw, dh], dim=-1) * 100.0                   # [..., R, R, 4]
    freqs = 1.0 / wave_len ** (torch.arange(dim // 8, dtype=dtype) / (dim // 8))
    angles = (position[..., None] * freqs).reshape(*lead, h * w, h * w, -1)   # [..., R, R, dim/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(out_dtype)


class Dropout(nn.Module):
    """`nn.Dropout`'s mathematics: keep each element with probability 1 − p and scale it by 1/(1 − p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))   # the mask built in place


def fold(w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o):
    """Attention's projections multiplied together (module docstring), for raw queries t and raw
    keys/values m: q·k_j = t · F.linear(m, kw, kb)_j + F.linear(m, ow, ob)_j and
    out = weights @ F.linear(m, vw, vb) + b_o. Returns (kw, kb, ow, ob, vw, vb, b_o).

    The products are formed in float64 and rounded once to the parameters' dtype: formed in float32 they
    add a rounding the official computation does not have, and our float32 gradients drifted up to ten
    times further from the float64 truth than the release's (tests/test_region_methods.py measures both).
    They are d × d, so this costs little; autocast leaves float64 alone, and F.linear casts the results."""
    dtype = w_q.dtype
    w_q, b_q, w_k, b_k, w_v, b_v, w_o = (t.double() for t in (w_q, b_q, w_k, b_k, w_v, b_v, w_o))
    folded = (w_q.T @ w_k, w_q.T @ b_k, (w_k.T @ b_q)[None], (b_q @ b_k)[None], w_o @ w_v, w_o @ b_v)
    return (*(t.to(dtype) for t in folded), b_o)


def folded_attention(folded, dropout: nn.Module, query, key, value, scale: float, penalty=None):
    """softmax(scale · q·k − penalty) → dropout → weighted values → output projection, computed with
    `fold`'s products. Returns the output and the (dropped-out) weights. `query` may be unbatched [L, d]
    and shared by a batch of keys; a `BatchDropout` then draws a mask per image."""
    kw, kb, ow, ob, vw, vb, b_o = folded
    logits = (query @ F.linear(key, kw, kb).transpose(-2, -1) + F.linear(key, ow, ob).transpose(-2, -1)) * scale
    if penalty is not None:
        logits = logits - penalty
    weights = dropout(torch.softmax(logits, dim=-1))
    return weights @ F.linear(value, vw, vb) + b_o, weights


def attend(mha: nn.MultiheadAttention, dropout: nn.Module, query, key, value):
    """One-head attention with `mha`'s parameters (packed q/k/v projection, out_proj), as
    `nn.MultiheadAttention` computes it, regrouped by `fold`. Returns the output and the weights."""
    (w_q, w_k, w_v), (b_q, b_k, b_v) = mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)
    folded = fold(w_q, b_q, w_k, b_k, w_v, b_v, mha.out_proj.weight, mha.out_proj.bias)
    return folded_attention(folded, dropout, query, key, value, 1.0 / math.sqrt(mha.embed_dim))


class BatchDropout(nn.Module):
    """Dropout that first repeats an unbatched [L, M] input over a batch of `size`, so every image gets
    its own mask (in eval, the input is returned unbatched and broadcasts later)."""

    def __init__(self, p: float):
        super().__init__()
        self.drop, self.size = Dropout(p), 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop.p > 0 and x.dim() == 2:
            x = x.expand(self.size, *x.shape)
        return self.drop(x)


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
        self.attention_dropout = Dropout(attention_dropout)   # fixed at 0.1 in the official code (quirk)
        self.drop_attn, self.ln_attn = Dropout(dropout), nn.LayerNorm(d)
        self.drop_layer, self.ln_layer = Dropout(dropout), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
        self.drop_ff_inner, self.drop_ff, self.ln_ff = Dropout(dropout), Dropout(dropout), nn.LayerNorm(d)
        self.d = d
        self._grid = None

    def geometry_penalty(self, h: int, w: int, device) -> torch.Tensor:
        dtype = self.geometry.weight.dtype
        if self._grid is None or self._grid[0] != (h, w) or self._grid[1].device != device or self._grid[1].dtype != dtype:
            self._grid = ((h, w), grid_geometry_embedding(h, w, out_dtype=dtype).to(device))
        return F.relu(self.geometry(self._grid[1]).squeeze(-1))               # [R, R], learnt each step

    def forward(self, x: torch.Tensor, grid: tuple[int, int], double_residual: bool = True) -> torch.Tensor:
        folded = fold(*(p for fc in (self.fc_q, self.fc_k, self.fc_v, self.fc_o) for p in (fc.weight, fc.bias)))
        attn, _ = folded_attention(folded, self.attention_dropout, x, x, x, 1.0 / math.sqrt(self.d),
                                   self.geometry_penalty(*grid, x.device))
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
        # nn.MultiheadAttention holds the parameters (same layout and initialisation as torch's layer);
        # `attend` computes with them so the shared queries' self-attention runs once per step.
        self.self_attn = nn.MultiheadAttention(d, 1, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, 1, dropout=dropout, batch_first=True)
        self.self_attn_dropout, self.cross_attn_dropout = BatchDropout(dropout), Dropout(dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2, self.drop3, self.drop_ff = (Dropout(dropout) for _ in range(4))
        self.linear1, self.linear2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor):
        """queries [A, d], shared by every image; memory [B, R, d] → [B, A, d] and cross-attention weights."""
        t = queries
        if self.self_attention:
            self.self_attn_dropout.size = memory.shape[0]
            t = self.norm1(t + self.drop1(attend(self.self_attn, self.self_attn_dropout, t, t, t)[0]))
        attended, weights = attend(self.cross_attn, self.cross_attn_dropout, t, memory, memory)
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
        h, w = maps.shape[-2:]
        regions = F.normalize(maps.flatten(2), dim=1).transpose(1, 2)        # [B, R, C], unit regions
        v = F.normalize(self.V, dim=1) if self.normalize_V else self.V
        memory = self.encoder(self.embed_regions(regions), (h, w), self.double_residual)
        t, weights = self.decoder(self.embed_attributes(v), memory)
        return torch.einsum("ad,bad->ba", v @ self.W_1, t), weights

    def forward(self, maps: torch.Tensor, class_att: torch.Tensor):
        """Class logits z [B, K] without the ±1 offset, attribute scores e [B, A], attention [B, A, R]."""
        e, weights = self.attribute_scores(maps)
        return e @ class_att.T, e, weights
