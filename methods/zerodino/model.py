"""ZeroDINO's head on frozen ViT patch tokens (our own code; README says what it follows and where).

Two token sets of one image: `fine` (the last block's patch tokens, T = H·W) and `macro` (an earlier
block's patch tokens average-pooled 2× `macro_pools` times, T' tokens). The visual-guided encoder lets
each set attend to the other (fine first, then macro over the updated fine tokens), each with a residual
and a LayerNorm. The semantic-guided decoder turns the attribute word vectors into queries that attend,
with a top-k sparse softmax at a learnt temperature, to each set; an adaptive fusion mixes the two
(standardised) attribute features. Three per-attribute predictors give three [B, A] attribute scores.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def grid_tokens(grid: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] → [B, H·W, C] (row-major cells, the token order of a ViT)."""
    return grid.flatten(2).transpose(1, 2)


class SparseAttributeAttention(nn.Module):
    """Attribute queries over tokens: LayerNorm'd q/k/v, `heads` heads, per head only the `topk` largest
    logits kept, softmax of those at temperature τ (a parameter), output projection. The queries are the
    same for every image, so their projection is computed once per call."""

    def __init__(self, dim: int, heads: int, tau: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.tau = nn.Parameter(torch.tensor(float(tau)))
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)

    def split(self, x):   # [..., N, C] → [..., h, N, C/h]
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(self, queries, tokens, topk: int):
        """queries [A, C] (shared), tokens [B, T, C] → ([B, A, C], attention [B, h, A, T])."""
        q = self.split(self.q(self.norm_q(queries)))                       # [h, A, d]
        k = self.split(self.k(self.norm_k(tokens)))                        # [B, h, T, d]
        v = self.split(self.v(self.norm_v(tokens)))
        logits = (q @ k.transpose(-1, -2)) * self.scale / self.tau.clamp(min=1e-8)   # [B, h, A, T]
        if topk < logits.shape[-1]:   # keep the k largest per row: the rest get zero weight and no gradient
            kth = logits.topk(topk, dim=-1).values[..., -1:]   # (masked after the division: τ gets no 0 · ∞)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        out = (self.attn_drop(attn) @ v).transpose(1, 2).flatten(2)        # [B, A, C]
        return self.proj_drop(self.proj(out)), attn


class SemanticBlock(nn.Module):
    """Word-vector queries → sparse attention over tokens, residual + LayerNorm, then a GELU MLP (×2 width)
    with a residual."""

    def __init__(self, dim: int, heads: int, tau: float, dropout: float):
        super().__init__()
        self.attn = SparseAttributeAttention(dim, heads, tau, dropout, dropout)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, queries, tokens, topk: int):
        refined, attn = self.attn(queries, tokens, topk)
        x = self.norm(refined + queries)
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(x))))), attn


class AdaptiveFusion(nn.Module):
    """α per attribute (an MLP of its query) and β per channel (an MLP across attributes), both functions of
    the word vectors only: fused = α·std(fine) + (1 − α)·std(macro) + β, where std(x) = (x − mean) / (var + ε)
    over channels (the official divides by the unbiased variance, not its square root)."""

    def __init__(self, n_attributes: int, dim: int, dropout: float, eps: float = 1e-6):
        super().__init__()
        a, self.eps = n_attributes, eps
        self.alpha_net = nn.Sequential(nn.Linear(dim, dim // 2, bias=False), nn.GELU(), nn.Dropout(dropout),
                                       nn.Linear(dim // 2, dim // 4, bias=False), nn.GELU(),
                                       nn.Linear(dim // 4, 1, bias=False))
        self.beta_net = nn.Sequential(nn.Linear(a, a // 2, bias=False), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(a // 2, a // 4, bias=False), nn.GELU(),
                                      nn.Linear(a // 4, 1, bias=False))

    def standardise(self, x):
        return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + self.eps)

    def forward(self, queries, fine, macro):
        alpha = torch.sigmoid(self.alpha_net(queries))        # [A, 1]
        beta = self.beta_net(queries.T).T                     # [1, C]
        return alpha * self.standardise(fine) + (1 - alpha) * self.standardise(macro) + beta, alpha, beta


class ZeroDINOHead(nn.Module):
    """fine [B, C, H, W] (last block's patch tokens), mid [B, C, H', W'] (an earlier block's) → outputs."""

    def __init__(self, dim: int, word_vectors, *, cross_heads: int = 4, semantic_heads: int = 4,
                 macro_pools: int = 2, tau: float = 0.4999, cross_dropout: float = 0.2,
                 semantic_dropout: float = 0.2, fusion_dropout: float = 0.1, fine_standardise: bool = True):
        super().__init__()
        word_vectors = torch.as_tensor(word_vectors, dtype=torch.float32)
        a = word_vectors.shape[0]
        self.register_buffer("word_vectors", word_vectors)      # fixed (the official keeps them fixed too)
        self.macro_pools, self.fine_standardise = int(macro_pools), bool(fine_standardise)
        # visual-guided encoder
        self.cross_fine = nn.MultiheadAttention(dim, cross_heads, dropout=cross_dropout, batch_first=True)
        self.norm_fine = nn.LayerNorm(dim)
        self.cross_macro = nn.MultiheadAttention(dim, cross_heads, dropout=cross_dropout, batch_first=True)
        self.norm_macro = nn.LayerNorm(dim)
        # semantic-guided decoder
        self.word_embedding = nn.Linear(word_vectors.shape[1], dim)
        self.fine_block = SemanticBlock(dim, semantic_heads, tau, semantic_dropout)
        self.macro_block = SemanticBlock(dim, semantic_heads, tau, semantic_dropout)
        self.fusion = AdaptiveFusion(a, dim, fusion_dropout)
        # per-attribute predictors: score_a = ⟨feature_a, w_a⟩ (the official Linear's bias is never read)
        bound = dim ** -0.5
        self.predictors = nn.ParameterDict({name: nn.Parameter(torch.empty(a, dim).uniform_(-bound, bound))
                                            for name in ("fused", "fine", "macro")})

    def encode(self, fine_grid, mid_grid):
        """The two token sets after the visual-guided encoder, and their means over tokens."""
        fine = grid_tokens(fine_grid)
        if self.fine_standardise:   # stands in for the backbone's final LayerNorm (README: deviations)
            fine = F.layer_norm(fine, fine.shape[-1:], eps=1e-6)
        macro = mid_grid
        for _ in range(self.macro_pools):
            macro = F.avg_pool2d(macro, 2)
        macro = grid_tokens(macro)
        fine = self.norm_fine(fine + self.cross_fine(fine, macro, macro, need_weights=False)[0])
        macro = self.norm_macro(macro + self.cross_macro(macro, fine, fine, need_weights=False)[0])
        return fine, macro

    def forward(self, fine_grid, mid_grid, topk_fine: int = 128, topk_macro: int = 128) -> dict:
        fine, macro = self.encode(fine_grid, mid_grid)
        queries = self.word_embedding(self.word_vectors)                          # [A, C]
        attr_fine, attn_fine = self.fine_block(queries, fine, topk_fine)
        attr_macro, attn_macro = self.macro_block(queries, macro, topk_macro)
        fused, alpha, beta = self.fusion(queries, attr_fine, attr_macro)
        p = self.predictors
        return {"fused": (fused * p["fused"]).sum(-1), "fine": (attr_fine * p["fine"]).sum(-1),
                "macro": (attr_macro * p["macro"]).sum(-1),
                "pool_fine": fine.mean(1), "pool_macro": macro.mean(1),
                "attention_fine": attn_fine.mean(1), "attention_macro": attn_macro.mean(1),
                "alpha": alpha, "beta": beta}


def confidence_fusion(out: dict, prototypes, tau: float = 1.5, beta: float = 0.7, eps: float = 1e-6):
    """The test-time prediction: the three attribute scores mixed per image with weights softmax(C / β) of
    their confidences C = 1 / entropy of softmax(scores · prototypesᵀ / τ) over the candidate classes."""
    preds = [out["fine"], out["macro"], out["fused"]]
    conf = []
    for pred in preds:
        p = torch.softmax(pred @ prototypes.T / tau, dim=-1)
        conf.append(1.0 / (-(p * (p + eps).log()).sum(-1)).clamp(min=eps))
    w = torch.softmax(torch.stack(conf, 1) / beta, dim=1)
    return sum(w[:, i:i + 1] * pred for i, pred in enumerate(preds)), w


def js_consistency(pool_fine, pool_macro, temperature: float):
    """The granularity-consistency loss exactly as released: p = softmax(fine / T) (no gradient),
    q = softmax(macro / T) over channels, m = (p + q) / 2, (½ KL(m‖p) + ½ KL(m‖q)) · T², batch mean. (The
    usual Jensen–Shannon divergence is KL(p‖m) + KL(q‖m); the release's kl_div arguments give KL(m‖·).)"""
    p = torch.softmax(pool_fine / temperature, dim=-1).detach()
    q = torch.softmax(pool_macro / temperature, dim=-1)
    m = 0.5 * (p + q)
    kl = lambda r: (m * (m.log() - r.log())).sum(-1).mean()   # noqa: E731  KL(m‖r), batch mean
    return 0.5 * (kl(p) + kl(q)) * temperature ** 2
