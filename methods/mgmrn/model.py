"""Mg-MRN's network (methods.md §4.2), consistent-channel version, with the ablation switches.

Branches are numbered as in the paper's code: 1 = fine (ResNet layer2), 2 = mid (layer3),
3 = coarse (layer4). Every level is brought to the coarse grid by its granularity module
(grouping unit → conv blocks that halve the size), fused, and read by its own visual-semantic
decoder over attribute word vectors. `halvings="released"` (the variant `mgmrn.channels-input-only`)
keeps the released number of resizes, so the fine level stays at twice the coarse grid (README).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zsl_bench.torch_methods import part_stream

BRANCHES = {3: (3,), 2: (2, 3), 1: (1, 2, 3)}   # levels → active branches: coarse only, coarse + mid, all
GROUPING_MODES = ("identity", "official", "decoupled")
FUSION_MODES = ("none", "one-way", "mutual")
# 0.5× resizes per branch (fine, mid, coarse). "consistent": the commented-out alternative of the release
# (model_mg_rfm_mr_scam.py:L77-L78), every level brought to the coarse grid; "released": the released
# n_upsamples (1, 1, 0) with only the input channels fixed, so the fine level stays at twice the grid.
# "equal": no resize, for levels already on one grid (a ViT's blocks). "auto" (the default) picks whichever
# of consistent and equal brings the stored levels to one grid (`auto_halvings`): consistent on a ResNet.
HALVINGS = {"consistent": {1: 2, 2: 1, 3: 0}, "released": {1: 1, 2: 1, 3: 0}, "equal": {1: 0, 2: 0, 3: 0}}
LEVEL_NAMES = {1: "fine (layer2)", 2: "mid (layer3)", 3: "coarse (layer4)"}


def auto_halvings(sizes: dict[int, tuple[int, int]], name: str = "mgmrn") -> str:
    """The halvings mode that brings levels of `sizes` (branch → H × W) to the coarse grid: `consistent` for a
    CNN's stride-2 stages, `equal` for a ViT's blocks on one token grid."""
    for mode in ("consistent", "equal"):
        if len({(halved(h, HALVINGS[mode][k]), halved(w, HALVINGS[mode][k])) for k, (h, w) in sizes.items()}) == 1:
            return mode
    raise ValueError(f"{name}: halvings 'auto' found no mode bringing the maps "
                     f"{', '.join(f'{h}×{w}' for h, w in sizes.values())} to one grid; set halvings explicitly")


def halved(size: int, times: int) -> int:
    """The side length after `times` 0.5× bilinear resizes (torch floors each output size)."""
    for _ in range(times):
        size //= 2
    return size


class GroupingUnit(nn.Module):
    """K part centres and per-part smoothing; each pixel is softly assigned to the parts.

    - `official`: mean over parts of (assignment ⊙ x). The assignments sum to 1, so this is x / K
      exactly (the released code's "region mining" is a constant scale; a test proves it).
    - `identity`: x unchanged.
    - `decoupled` (ours): Σ_k W_k (a_k ⊙ x) with a 1×1 projection per part, initialised to I / K so it
      starts equal to `official`; parts keep their own features and the centres receive gradients.
    """

    def __init__(self, channels: int, parts: int = 5, mode: str = "official"):
        super().__init__()
        if mode not in GROUPING_MODES:
            raise ValueError(f"grouping must be one of {GROUPING_MODES}, not {mode!r}")
        self.mode, self.parts = mode, parts
        centres = torch.empty(parts, channels)
        nn.init.kaiming_normal_(centres)
        self.centres = nn.Parameter(centres.clamp(min=1e-5))
        self.smooth = nn.Parameter(torch.zeros(parts))
        if mode == "decoupled":
            self.mix = nn.Conv2d(parts * channels, channels, 1, bias=False)
            with torch.no_grad():
                eye = torch.eye(channels) / parts
                self.mix.weight.copy_(torch.cat([eye] * parts, dim=1)[:, :, None, None])

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K, H, W] soft assignment of each pixel to the K parts."""
        sq = (x ** 2).sum(1, keepdim=True) - 2 * torch.einsum("bchw,kc->bkhw", x, self.centres) \
            + (self.centres ** 2).sum(1)[None, :, None, None]
        return torch.softmax(-sq / torch.sigmoid(self.smooth)[None, :, None, None], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "identity":
            return x
        a = self.assignments(x)
        if self.mode == "official":                              # mean_k(a_k ⊙ x), without a [B, K, C, H, W] tensor
            return x * a.mean(1, keepdim=True)
        # Σ_k W_k (a_k ⊙ x) as one 1×1 convolution over the K weighted copies stacked on the channels
        return self.mix((a[:, :, None] * x[:, None]).flatten(1, 2))


class SegmentationBlock(nn.Sequential):
    """Conv3×3 → GroupNorm(32) → ReLU, then a 0.5× bilinear resize, repeated `halvings` times (the
    official name says "upsample"; it halves)."""

    def __init__(self, c_in: int, c_out: int, halvings: int):
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(32, c_out), nn.ReLU(inplace=True)]
        for i in range(halvings):
            if i > 0:
                layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(32, c_out),
                           nn.ReLU(inplace=True)]
            layers.append(Halve())
        super().__init__(*layers)


class Halve(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)


class SCAM(nn.Module):
    """Spatial-channel attention fusion: x' = 1×1 conv; x' ⊙ σ(FC(ReLU(FC(GAP x')))) ⊙ σ(conv3×3 x')."""

    def __init__(self, c_in: int, c: int):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c, 1, bias=False)
        # official: fvcore c2_xavier_fill (model_mg_rfm_mr_scam.py:L323-L324) = kaiming_uniform_(a=1), bias 0
        # (fvcore/nn/weight_init.py:L8-L23); the projection has no bias
        nn.init.kaiming_uniform_(self.proj.weight, a=1)
        self.fc1, self.fc2 = nn.Linear(c, c), nn.Linear(c, c)
        self.spatial = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        channel = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]
        return x * channel * torch.sigmoid(self.spatial(x))


class VisualSemanticDecoder(nn.Module):
    """Attribute queries (fixed word vectors) attend over region tokens; no 1/√d scaling (official)."""

    def __init__(self, c: int, m: int, dim_v: int, n_attributes: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim_v, m), nn.Linear(c, m), nn.Linear(c, m)
        self.out = nn.Linear(m, c)
        self.W = nn.Parameter(torch.randn(n_attributes, c))

    def forward(self, tokens: torch.Tensor, w2v: torch.Tensor):
        attention = torch.softmax(self.q(w2v) @ self.k(tokens).transpose(1, 2), dim=-1)   # [B, A, T]
        f = self.out(attention @ self.v(tokens))                                          # [B, A, C]
        return (f * self.W).sum(-1), attention


def regions(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)   # [B, C, H, W] → [B, HW, C]


class MgMRNHead(nn.Module):
    """Everything after the backbone: granularity modules, fusion, decoders."""

    def __init__(self, in_channels: tuple[int, int, int], w2v, width: float = 1.0, levels: int = 3,
                 fusion: str = "one-way", grouping: str = "official", stop_gradient: bool = True, parts: int = 5,
                 halvings: str = "consistent", name: str = "mgmrn"):
        super().__init__()
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, not {fusion!r}")
        if halvings not in HALVINGS:
            raise ValueError(f"halvings must be one of {tuple(HALVINGS)}, not {halvings!r}")
        self.name, self.halvings_mode = name, halvings
        if levels not in (1, 2, 3):
            raise ValueError("levels must be 1 (coarse), 2 (coarse + mid) or 3")
        c = max(32, int(round(2048 * width / 32)) * 32)
        m = max(16, int(round(1024 * width)))
        self.c, self.fusion, self.stop_gradient = c, fusion, stop_gradient
        self.branches = BRANCHES[{1: 3, 2: 2, 3: 1}[levels]]
        self.register_buffer("w2v", torch.as_tensor(w2v, dtype=torch.float32))   # fixed (official)
        n_attr, dim_v = self.w2v.shape
        c3, c4, c5 = in_channels
        halvings = self.halvings = HALVINGS[halvings]
        level_in = {1: c3, 2: c4, 3: c5}
        # Each part from its own stream (part_stream): a variant with fewer levels or another fusion starts its
        # remaining parts from the official configuration's weights, so the ablation is paired.
        self.granularity, self.scam, self.decoders = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        self.fusion_sources = self._fusion_sources()
        for k in self.branches:
            with part_stream("granularity", k):
                self.granularity[str(k)] = nn.Sequential(GroupingUnit(level_in[k], parts, grouping),
                                                         SegmentationBlock(level_in[k], c, halvings[k]))
            if k in self.fusion_sources:
                with part_stream("fusion", k):
                    self.scam[str(k)] = SCAM(len(self.fusion_sources[k]) * c, c)
            with part_stream("decoder", k):
                self.decoders[str(k)] = VisualSemanticDecoder(c, m, dim_v, n_attr)

    def grids(self, sizes: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """branch → the H × W its granularity module outputs for input maps of `sizes` (branch → H × W).
        Raises ValueError, naming the method, the level and the map size, when the halvings would shrink a
        map below 1 × 1 or when a branch would fuse levels of different grids."""
        out = {}
        for k in (k for k in self.branches if k in sizes):
            h, w = (int(v) for v in sizes[k])
            out[k] = (halved(h, self.halvings[k]), halved(w, self.halvings[k]))
            if min(out[k]) < 1:
                raise ValueError(f"{self.name}: the {LEVEL_NAMES[k]} map is {h}×{w}; halving it {self.halvings[k]} "
                                 f"time(s) (halvings '{self.halvings_mode}') would shrink it below 1×1; use larger "
                                 "maps (a larger extract.input_size or image_size)")
        for k, sources in self.fusion_sources.items():
            if all(j in out for j in sources) and len({out[j] for j in sources}) > 1:
                raise ValueError(f"{self.name}: branch {LEVEL_NAMES[k]} fuses levels on different grids "
                                 f"({', '.join(f'{out[j][0]}×{out[j][1]}' for j in sources)}) with halvings "
                                 f"'{self.halvings_mode}' and fusion '{self.fusion}'")
        return out

    def _fusion_sources(self) -> dict[int, tuple[int, ...]]:
        """Which other levels each branch fuses: official = only coarser ones (coarse → fine)."""
        if self.fusion == "none":
            return {}
        out = {}
        for k in self.branches:
            others = [j for j in self.branches if j != k and (self.fusion == "mutual" or j > k)]
            if others:
                out[k] = tuple(others)
        return out

    def forward(self, maps: dict[int, torch.Tensor], only: int | None = None, kept: dict | None = None):
        """maps: branch → backbone features; returns per-branch attribute scores and attention.

        `only=k` computes what branch k's output depends on, nothing else: the same values and
        gradients as a full forward (the official sequential update takes one branch's loss per
        step), with stop-gradient sources evaluated without building a graph.

        `kept` (a dict the caller keeps across the sequential steps of one update on frozen maps) keeps
        those stop-gradient sources for the later steps: a level coarser than the branch being stepped has
        not been stepped yet in this update (fine to coarse), so its output is the same tensor, bit for bit.
        Only valid when a step leaves the parameters it has no gradient for untouched (zero_grad "none").
        """
        wanted = self.branches if only is None else (only,)
        needed = set(wanted) | {j for k in wanted for j in self.fusion_sources.get(k, ())}
        self.grids({k: maps[k].shape[-2:] for k in needed})   # a clear error before a resize to 0×0
        s = {}
        for k in self.branches:
            if k not in needed:
                continue
            reusable = kept is not None and only is not None and k > only
            if k in wanted or not self.stop_gradient:
                s[k] = self.granularity[str(k)](maps[k])
            elif reusable and k in kept:
                s[k] = kept[k]
            else:
                with torch.no_grad():
                    s[k] = self.granularity[str(k)](maps[k])
                if reusable:
                    kept[k] = s[k]
        held = {k: (v.detach() if self.stop_gradient else v) for k, v in s.items()}
        scores, attention = {}, {}
        for k in wanted:
            tokens = regions(s[k])
            if k in self.fusion_sources:
                fused = self.scam[str(k)](torch.cat([held[j] for j in self.fusion_sources[k]], dim=1))
                tokens = torch.cat([tokens, regions(fused)], dim=1)
            scores[k], attention[k] = self.decoders[str(k)](tokens, self.w2v)
        return scores, attention
