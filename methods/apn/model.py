"""APN's head (wenjiaXu/APN-ZSL@e5976f7 model/model_proto.py L96-L154, `resnet_proto_IoU`) and losses
(model/main_utils.py L394-L495), on one backbone map [B, C, H, W] (official: layer4, 2048 × 7 × 7 at 224 px).

- global branch: a 1 × 1 convolution by `global_vectors` [A, C] (no bias), pooled over the map (max for
  CUB, mean for SUN/AWA2) → attributes [B, A]; the classes read these.
- prototype branch: similarity maps M_k = ⟨p_k, f_ij⟩ by `prototypes` [A, C], max-pooled → [B, A].
Both initialised U[0, 2·10⁻⁴) (official `2e-4 * torch.rand`).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class APNHead(nn.Module):
    def __init__(self, channels: int, n_attributes: int, global_pool: str):
        super().__init__()
        if global_pool not in ("max", "avg"):
            raise ValueError(f"apn: global_pool must be 'max' or 'avg', not {global_pool!r}")
        self.global_vectors = nn.Parameter(2e-4 * torch.rand(n_attributes, channels))
        self.prototypes = nn.Parameter(2e-4 * torch.rand(n_attributes, channels))
        self.global_pool = global_pool

    def forward(self, x: torch.Tensor) -> dict:
        g = torch.einsum("ac,bchw->bahw", self.global_vectors, x)
        similarity = torch.einsum("ac,bchw->bahw", self.prototypes, x)
        return {"attributes": g.amax((2, 3)) if self.global_pool == "max" else g.mean((2, 3)),
                "prototype_attributes": similarity.amax((2, 3)), "similarity": similarity}


def group_lasso(weights: torch.Tensor, group: list[int]) -> torch.Tensor:
    """Official `add_glasso`: sqrt(Σ_c (Σ_{k∈group} W[k, c]² + 1e-8)), the Frobenius norm of the group's
    block (the paper writes Σ_c ‖W_g,c‖₂; README)."""
    return torch.sqrt((weights[group] ** 2).sum(0).add(1e-8).sum())


def decorrelation(prototypes, global_vectors, groups, l_regular: float, regular: float) -> torch.Tensor:
    """L_AD over the attribute groups for the prototypes (λ l_regular) and the global vectors (λ regular);
    without groups (AWA2's scripts) the plain Frobenius norms."""
    if not groups:
        return l_regular * prototypes.norm() + regular * global_vectors.norm()
    return sum(l_regular * group_lasso(prototypes, g) + regular * group_lasso(global_vectors, g) for g in groups)


def compactness(similarity: torch.Tensor) -> torch.Tensor:
    """L_CPT: Σ over the batch, attributes and cells of sigmoid(M_k) times the squared grid distance (in
    cells) to the map's peak (a constant: argmax); a sum, as the official code takes it."""
    b, a, h, w = similarity.shape
    peak = similarity.detach().flatten(2).argmax(-1)                        # [B, A]
    rows = torch.arange(h, device=similarity.device).repeat_interleave(w)
    cols = torch.arange(w, device=similarity.device).repeat(h)
    distance = (rows - (peak // w)[..., None]) ** 2 + (cols - (peak % w)[..., None]) ** 2
    return (torch.sigmoid(similarity.flatten(2)) * distance).sum()
