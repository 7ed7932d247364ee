#!/usr/bin/env python
"""DAZLE training-step time at the official CUB shapes, ours against the official computation, on this
machine's CPU (the same kind of figure as bench_transzero_step.py).

B = 50 maps of 2048 × 14 × 14, 312 attributes (300-d word vectors), 200 classes (150 seen), the CUB
notebook's configuration (normalize_F, trainable word vectors, the ±1 offset, self-calibration λ 0.1,
RMSprop 1e-4 with momentum 0.9 and weight decay 1e-4). Two networks with the same parameters:
- `official`: hbdat/cvpr20_DAZLE `core/DAZLE.py` (e5a0460) `forward` + `compute_loss` re-typed below as the
  release computes them: its three-operand einsums, the dense-attention baseline scores it computes and
  never uses (S_b_p, S_b_pp), the [B, A, K] product summed over attributes, Pred_att, the one-hot loss;
- `zsl-bench`: methods/dazle as it trains (V·W products first, the scores as one [B, A] @ [A, K] product,
  nothing unused).
Both are first checked to compute the same class scores and loss (within 1e-5 relative); then the steps are
timed interleaved, after a warm-up step each, and the medians and their ratio printed.

    python benchmarks/bench_dazle_step.py [--steps 7] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_transzero_step import ATTRIBUTES, CLASSES, SEEN, cub_batch, interleaved, summarise  # noqa: E402


class OfficialDAZLE(nn.Module):
    """The release's DAZLE with the CUB notebook's switches (is_bias, is_conservative, normalize_F)."""

    def __init__(self, att, w2v, dim_f: int = 2048, lambda_: float = 0.1):
        super().__init__()
        self.V = nn.Parameter(F.normalize(w2v.clone()))
        self.att = nn.Parameter(F.normalize(att), requires_grad=False)
        self.W_1 = nn.Parameter(torch.randn(w2v.shape[1], dim_f))
        self.W_2 = nn.Parameter(torch.zeros(w2v.shape[1], dim_f))
        self.W_3 = nn.Parameter(torch.zeros(w2v.shape[1], dim_f))
        mask = torch.ones(1, att.shape[0])
        mask[:, :SEEN] *= -1
        self.vec_bias = nn.Parameter(mask, requires_grad=False)
        self.weight_ce = nn.Parameter(torch.eye(att.shape[0]), requires_grad=False)
        self.unseen = torch.arange(SEEN, att.shape[0])
        self.lambda_ = lambda_

    def forward(self, fs):
        b, c = fs.shape[:2]
        fs = F.normalize(fs.reshape(b, c, -1), dim=1)
        r = fs.size(2)
        s = torch.einsum("iv,vf,bfr->bir", self.V, self.W_1, fs)
        a_b = fs.new_full((b, self.att.shape[1], r), 1 / r)
        a_b_p = self.att.new_full((b, self.att.shape[1]), fill_value=1)
        s_b_p = torch.einsum("bir,bir->bi", a_b, s)
        torch.einsum("ki,bi,bi->bk", self.att, a_b_p, s_b_p)             # S_b_pp: computed, never used
        a = F.softmax(torch.einsum("iv,vf,bfr->bir", self.V, self.W_2, fs), dim=-1)
        f_p = torch.einsum("bir,bfr->bif", a, fs)
        s_p = torch.einsum("bir,bir->bi", a, s)
        a_p = torch.sigmoid(torch.einsum("iv,vf,bif->bi", self.V, self.W_3, f_p))
        s_pp = torch.sum(torch.einsum("ki,bi,bi->bik", self.att, a_p, s_p), axis=1) + self.vec_bias
        torch.einsum("iv,vf,bif->bi", self.V, self.W_1, f_p)              # Pred_att: computed, never used here
        return s_pp

    def loss(self, s_pp, labels):
        one_hot = self.weight_ce[labels]
        ce = torch.mean(-torch.einsum("bk,bk->b", F.log_softmax(s_pp - self.vec_bias, dim=1), one_hot))
        cal = -torch.log(torch.mean(torch.sum(F.softmax(s_pp, dim=-1)[:, self.unseen], dim=1)))
        return ce + self.lambda_ * cal


def nets():
    from zsl_bench_methods.dazle import build_dazle

    torch.manual_seed(0)
    w2v = torch.as_tensor(np.random.default_rng(0).normal(size=(ATTRIBUTES, 300)), dtype=torch.float32)
    ours = build_dazle(2048, w2v.numpy(), normalize_V=False, normalize_F=True, trainable_w2v=True, uniform_gate=False)
    official = OfficialDAZLE(cub_batch(1)[0], w2v)
    with torch.no_grad():
        for name in ("V", "W_1", "W_2", "W_3"):
            getattr(official, name).copy_(getattr(ours, name))
        for w in (ours.W_2, ours.W_3, official.W_2, official.W_3):   # non-zero, so the attention matters
            w.copy_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
    return ours, official


def our_loss(net, maps, att_n, y, offset):
    """methods/dazle's loss: CE over all classes without the offset, self-calibration on the offset logits."""
    z, _ = net(maps, att_n)
    return F.cross_entropy(z, y) - 0.1 * torch.log(torch.softmax(z + offset, 1)[:, SEEN:].sum(1).mean()), z


def step_fn(kind: str, net, batch: int):
    att, maps, y = cub_batch(batch)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-4, weight_decay=1e-4, momentum=0.9)
    att_n = F.normalize(att, dim=1)
    offset = torch.cat([-torch.ones(SEEN), torch.ones(CLASSES - SEEN)])

    def step():
        loss = net.loss(net(maps), y) if kind == "official" else our_loss(net, maps, att_n, y, offset)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from zsl_bench.runtime import limit_threads

    limit_threads()
    ours, official = nets()
    att, maps, y = cub_batch(args.batch, seed=1)
    with torch.no_grad():
        loss_ours, z = our_loss(ours, maps, F.normalize(att, dim=1), y, official.vec_bias[0])
        s_pp = official(maps)
        check = {"scores_max_rel": float((z + official.vec_bias - s_pp).abs().max() / s_pp.abs().max()),
                 "loss_rel": float(abs(loss_ours - official.loss(s_pp, y)) / abs(official.loss(s_pp, y)))}
    if max(check.values()) > 1e-5:
        print(f"the two computations disagree: {check}", file=sys.stderr)
        return 1
    times = interleaved({"official": step_fn("official", official, args.batch),
                         "zsl-bench": step_fn("ours", ours, args.batch)}, max(5, args.steps))
    result = {"batch": args.batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
              **summarise(times, check)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
