"""The official ZeroDINO head computation, re-typed for the parity test (tests/test_zerodino.py):
GAInuist/ZeroDINO at a7f0ab0 — network/Local_Prediction.py (DINOMulti), network/Visual_Guided_Encoder.py
(VGE after its backbone), network/Semantic_Guided_Decoder.py (SGD, AnyAttention, MLP, Semantic_Block,
AdaFusion), local_main.py `calculate_losses` and `get_temperature`, utils_confidence.py
`fuse_three_by_confidence` and three_eval_utils.py's GZSL scores (softmax over all classes).

Kept as the release computes it: the word vectors expanded over the batch before every module, top-k by
`torch.topk` + `scatter_` into a zero tensor, the predictors as full `nn.Linear`s read through `einsum` on
their weights (biases never read), the MLP's unused LayerNorm, `F.kl_div` on `p.log()` / `q.log()` with
'batchmean', the separate `alpha` / `beta` Linears after their MLPs.
Starting point: the DINOv2 tokens. The release computes them with timm's `vit_base_patch14_dinov2` inside
VGE: `x_fine` = `forward_features(x)[:, 1:]` (after the final norm), the macro branch = the output of
blocks[0 … 10] (no final norm) without its CLS token. Here both come in as token tensors [B, T, C], the macro
one on its square grid before the two 2 × 2 average poolings (which are re-typed).

`copy_weights(ours, official)` gives the official module our `ZeroDINOHead`'s parameters.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class AvgPoolDown(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool1 = nn.AvgPool2d(2, 2)
        self.pool2 = nn.AvgPool2d(2, 2)

    def forward(self, x_seq, H, W):
        B, N, C = x_seq.shape
        x = x_seq.transpose(1, 2).reshape(B, C, H, W)
        x = self.pool2(self.pool1(x))
        Hd, Wd = x.shape[2:]
        return x.reshape(B, C, Hd * Wd).transpose(1, 2)


class VGEHead(nn.Module):
    """VGE.forward from `x_macro = blocks[:-1](...)` on (the backbone itself is not re-typed)."""

    def __init__(self, dim=768):
        super().__init__()
        self.downsample_macro = AvgPoolDown()
        self.cross_fine = nn.MultiheadAttention(embed_dim=dim, num_heads=4, dropout=0.2, bias=True, batch_first=True)
        self.norm_fine = nn.LayerNorm(dim)
        self.pool_fine = nn.AdaptiveAvgPool1d(1)
        self.cross_macro = nn.MultiheadAttention(embed_dim=dim, num_heads=4, dropout=0.2, bias=True, batch_first=True)
        self.norm_macro = nn.LayerNorm(dim)
        self.pool_macro = nn.AdaptiveAvgPool1d(1)

    def forward(self, x_fine, x_macro_nocls):
        H = W = int(math.sqrt(x_macro_nocls.size(1)))
        x_macro = self.downsample_macro(x_macro_nocls, H, W)
        x_fine_cross, _ = self.cross_fine(x_fine, x_macro, x_macro)
        x_fine = self.norm_fine(x_fine + x_fine_cross)
        pool_fine = self.pool_fine(x_fine.permute(0, 2, 1)).permute(0, 2, 1)
        x_macro_cross, _ = self.cross_macro(x_macro, x_fine, x_fine)
        x_macro = self.norm_macro(x_macro + x_macro_cross)
        pool_macro = self.pool_macro(x_macro.permute(0, 2, 1)).permute(0, 2, 1)
        return x_macro, x_fine, pool_fine, pool_macro


class AnyAttention(nn.Module):
    def __init__(self, dim=768, num_heads=8, attn_drop=0.2, proj_drop=0.2, bias=True, tau=0.4999):
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.tau = nn.Parameter(torch.tensor(tau))
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(dim, dim, bias=bias)
        self.v = nn.Linear(dim, dim, bias=bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, q, k, v, topk=10):
        q, k, v = self.norm_q(q), self.norm_k(k), self.norm_v(v)
        B, Nq, C = q.shape
        Nk, Nv = k.shape[1], v.shape[1]
        q = self.q(q).reshape(B, Nq, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = self.k(k).reshape(B, Nk, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        v = self.v(v).reshape(B, Nv, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        attn_logits = (q @ k.transpose(-2, -1)) * self.scale
        K = min(topk, attn_logits.shape[-1])
        topk_values, topk_indices = torch.topk(attn_logits, k=K, dim=-1)
        topk_softmax = torch.softmax(topk_values / self.tau.clamp(min=1e-8), dim=-1)
        sparse_attn = torch.zeros_like(attn_logits)
        sparse_attn.scatter_(-1, topk_indices, topk_softmax)
        attn = self.attn_drop(sparse_attn)
        out = (attn @ v).transpose(1, 2).reshape(B, Nq, C)
        return self.proj_drop(self.proj(out)), attn


class MLP(nn.Module):
    def __init__(self, dim, drop_rate=0.2, mlp_ratio=2):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop_rate)
        self.norm = nn.LayerNorm(dim)   # never used in forward (as released)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SemanticBlock(nn.Module):
    def __init__(self, attr_num, dim=768):
        super().__init__()
        self.attn = AnyAttention(dim=dim, num_heads=4, bias=True)
        self.mlp = MLP(dim=dim, drop_rate=0.2, mlp_ratio=2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, w2v, local_tokens, topk=10):
        refined_local, attn_mask = self.attn(w2v, local_tokens, local_tokens, topk=topk)
        local_feat = self.norm(refined_local + w2v)
        return self.mlp(local_feat) + local_feat, attn_mask


class AdaFusion(nn.Module):
    def __init__(self, attr_num=312, dim=768, bias=False, drop_rate=0.1):
        super().__init__()
        self.alpha_net = nn.Sequential(nn.Linear(dim, dim // 2, bias=bias), nn.GELU(), nn.Dropout(drop_rate),
                                       nn.Linear(dim // 2, dim // 4, bias=bias), nn.GELU())
        self.alpha = nn.Linear(dim // 4, 1, bias=bias)
        self.beta_net = nn.Sequential(nn.Linear(attr_num, attr_num // 2, bias=bias), nn.GELU(), nn.Dropout(drop_rate),
                                      nn.Linear(attr_num // 2, attr_num // 4, bias=bias), nn.GELU())
        self.beta = nn.Linear(attr_num // 4, 1, bias=bias)

    def forward(self, w2v, x_attr_fine, x_attr_macro, epsilon=1e-6):
        alpha = F.sigmoid(self.alpha(self.alpha_net(w2v)))
        beta = self.beta(self.beta_net(w2v.transpose(1, 2))).transpose(1, 2)
        fused = (alpha * ((x_attr_fine - x_attr_fine.mean(dim=-1, keepdims=True))
                          / (x_attr_fine.var(dim=-1, keepdims=True) + epsilon))
                 + (1 - alpha) * ((x_attr_macro - x_attr_macro.mean(dim=-1, keepdims=True))
                                  / (x_attr_macro.var(dim=-1, keepdims=True) + epsilon)) + beta)
        return fused, alpha, beta


class SGD(nn.Module):
    def __init__(self, attr_num=312, dim=768):
        super().__init__()
        self.word_embedding = nn.Linear(300, dim)
        self.fine_learner = SemanticBlock(attr_num, dim)
        self.coarse_learner = SemanticBlock(attr_num, dim)
        self.adafusion = AdaFusion(attr_num=attr_num, dim=dim)

    def forward(self, x_macro, x_fine, w2v, topk_fine=128, topk_macro=128):
        w2v = self.word_embedding(w2v).expand(x_macro.size(0), -1, -1)
        x_attr_fine, fine_weights = self.fine_learner(w2v, x_fine, topk_fine)
        x_attr_macro, macro_weights = self.coarse_learner(w2v, x_macro, topk_macro)
        x_attr, alpha, beta = self.adafusion(w2v, x_attr_fine, x_attr_macro)
        return x_attr, x_attr_fine, x_attr_macro, fine_weights, macro_weights, alpha, beta


class OfficialZeroDINO(nn.Module):
    """DINOMulti from the VGE head on; `word_dim` replaces the hard-coded 300 (tiny test sizes)."""

    def __init__(self, attr_num, dim, word_dim=300):
        super().__init__()
        self.VGE = VGEHead(dim)
        self.SGD = SGD(attr_num, dim)
        self.SGD.word_embedding = nn.Linear(word_dim, dim)
        self.fine_predictor = nn.Linear(dim, attr_num)
        self.x_fine_predictor = nn.Linear(dim, attr_num)
        self.x_macro_predictor = nn.Linear(dim, attr_num)

    def forward(self, x_fine, x_macro_nocls, w2v, topk_fine=128, topk_macro=128):
        x_macro, x_fine, pool_fine, pool_macro = self.VGE(x_fine, x_macro_nocls)
        x_attr, x_attr_fine, x_attr_macro, fine_w, macro_w, alpha, beta = self.SGD(x_macro, x_fine, w2v,
                                                                                  topk_fine, topk_macro)
        return {"pool_fine": pool_fine, "pool_macro": pool_macro,
                "fine_result": torch.einsum("bae, ae -> ba", x_attr, self.fine_predictor.weight),
                "x_fine_result": torch.einsum("bae, ae -> ba", x_attr_fine, self.x_fine_predictor.weight),
                "x_macro_result": torch.einsum("bae, ae -> ba", x_attr_macro, self.x_macro_predictor.weight),
                "fine_weights": fine_w, "macro_weights": macro_w, "alpha": alpha, "beta": beta}


def get_temperature(epoch, T_max=1, T_min=0.5, T_decay=10):
    return T_min + (T_max - T_min) * np.exp(-epoch / T_decay)


def calculate_loss(output, labels, attrs_tensor, epoch):
    """local_main.py `calculate_losses` without its `.backward()` (the test calls it)."""
    cls = (F.cross_entropy(output["fine_result"] @ attrs_tensor.T, labels)
           + F.cross_entropy(output["x_fine_result"] @ attrs_tensor.T, labels)
           + F.cross_entropy(output["x_macro_result"] @ attrs_tensor.T, labels))
    temperature = get_temperature(epoch)
    p = F.softmax(output["pool_fine"] / temperature, dim=-1).detach()
    q = F.softmax(output["pool_macro"] / temperature, dim=-1)
    m = 0.5 * (p + q)
    kl_p_m = 0.5 * F.kl_div(p.log(), m, reduction="batchmean")
    kl_q_m = 0.5 * F.kl_div(q.log(), m, reduction="batchmean")
    return cls + 5 * (kl_p_m + kl_q_m) * (temperature ** 2)


def fuse_three_by_confidence(pred_fine, pred_macro, pred_attr, prototypes, tau=1.5, beta=0.7, eps=1e-6):
    p = [F.softmax(x @ prototypes.t() / tau, dim=-1) for x in (pred_fine, pred_macro, pred_attr)]
    H = [-(pi * (pi + eps).log()).sum(-1) for pi in p]
    conf = torch.stack([1.0 / h.clamp(min=eps) for h in H], dim=1)
    w = F.softmax(conf / beta, dim=1)
    return w[:, 0:1] * pred_fine + w[:, 1:2] * pred_macro + w[:, 2:3] * pred_attr


def gzsl_scores(output, prototypes):
    """three_eval_utils.py L36 + L77: softmax over every class of the confidence-fused scores (γ not applied)."""
    fused = fuse_three_by_confidence(output["x_fine_result"], output["x_macro_result"], output["fine_result"],
                                     prototypes)
    return F.softmax(fused @ prototypes.T, dim=1)


# our parameter name → the official one (the official's extra parameters: MLP norms and predictor biases,
# which its forward never reads)
def name_map() -> dict[str, str]:
    names = {}
    for ours, theirs in (("cross_fine", "VGE.cross_fine"), ("cross_macro", "VGE.cross_macro")):
        for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            names[f"{ours}.{p}"] = f"{theirs}.{p}"
    for n in ("norm_fine", "norm_macro"):
        for p in ("weight", "bias"):
            names[f"{n}.{p}"] = f"VGE.{n}.{p}"
    for p in ("weight", "bias"):
        names[f"word_embedding.{p}"] = f"SGD.word_embedding.{p}"
    for ours, theirs in (("fine_block", "SGD.fine_learner"), ("macro_block", "SGD.coarse_learner")):
        names[f"{ours}.attn.tau"] = f"{theirs}.attn.tau"
        for m in ("norm_q", "norm_k", "norm_v", "q", "k", "v", "proj"):
            for p in ("weight", "bias"):
                names[f"{ours}.attn.{m}.{p}"] = f"{theirs}.attn.{m}.{p}"
        for p in ("weight", "bias"):
            names[f"{ours}.norm.{p}"] = f"{theirs}.norm.{p}"
            names[f"{ours}.fc1.{p}"] = f"{theirs}.mlp.fc1.{p}"
            names[f"{ours}.fc2.{p}"] = f"{theirs}.mlp.fc2.{p}"
    names.update({"fusion.alpha_net.0.weight": "SGD.adafusion.alpha_net.0.weight",
                  "fusion.alpha_net.3.weight": "SGD.adafusion.alpha_net.3.weight",
                  "fusion.alpha_net.5.weight": "SGD.adafusion.alpha.weight",
                  "fusion.beta_net.0.weight": "SGD.adafusion.beta_net.0.weight",
                  "fusion.beta_net.3.weight": "SGD.adafusion.beta_net.3.weight",
                  "fusion.beta_net.5.weight": "SGD.adafusion.beta.weight",
                  "predictors.fused": "fine_predictor.weight", "predictors.fine": "x_fine_predictor.weight",
                  "predictors.macro": "x_macro_predictor.weight"})
    return names


def copy_weights(ours: nn.Module, official: OfficialZeroDINO) -> None:
    theirs = dict(official.named_parameters())
    with torch.no_grad():
        for mine, their in name_map().items():
            theirs[their].copy_(dict(ours.named_parameters())[mine])
