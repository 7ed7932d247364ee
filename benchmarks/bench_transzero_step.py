#!/usr/bin/env python
"""TransZero training-step time at the official CUB shapes, on this machine's CPU.

B = 50 maps of 2048 × 14 × 14, 312 attributes (300-d word vectors), 200 classes, the CUB config
(d = 300, feed-forward 512, dropout 0.4, decoder self-attention, Adam). One step = forward, the three
losses, backward, optimizer step. The same network and parameters computed two ways:
- `zsl-bench`: methods/transzero/model.py as it runs (grid embedding built once; the shared queries'
  self-attention once per step; dropout masks from `torch.rand`);
- `official pattern`: the official code's way of computing the same mathematics: the geometry
  embedding rebuilt in float32 at every step for every batch element ([B, 196, 196, 64]), the
  queries repeated over the batch before torch's `nn.MultiheadAttention`, `nn.Dropout` everywhere.
methods.md §3.7 measured the official code itself at about 4–5 s per step on 2 CPU cores.

    python benchmarks/bench_transzero_step.py [--steps 5] [--batch 50]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def to_official_pattern(net: nn.Module) -> None:
    """Switch `net` (same parameters) to the official code's computation pattern."""
    from methods.transzero import model

    class PerStepGeometryEncoder(model.GeometryAttentionEncoder):
        def forward(self, x, grid, double_residual=True):
            self._batch = x.shape[0]
            return super().forward(x, grid, double_residual)

        def geometry_penalty(self, h, w, device):
            emb = model.grid_geometry_embedding(h, w, batch=self._batch, dtype=torch.float32).to(device)
            return F.relu(self.geometry(emb).squeeze(-1))     # [B, R, R]

    class RepeatedQueriesDecoder(model.AttributeDecoder):
        def forward(self, queries, memory):
            t = queries.expand(memory.shape[0], *queries.shape)
            if self.self_attention:
                t = self.norm1(t + self.drop1(self.self_attn(t, t, t, need_weights=False)[0]))
            attended, weights = self.cross_attn(t, memory, memory, need_weights=True)
            t = self.norm2(t + self.drop2(attended))
            return self.norm3(t + self.drop3(self.linear2(self.drop_ff(F.relu(self.linear1(t)))))), weights

    net.encoder.__class__ = PerStepGeometryEncoder
    net.decoder.__class__ = RepeatedQueriesDecoder
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, model.Dropout):
                setattr(parent, name, nn.Dropout(child.p))


def timed(step, steps: int, device=None) -> list[float]:
    """Seconds of each of `steps` calls of `step()`, after one warm-up call (allocators, kernels); on a
    GPU the device is synchronised around each call."""
    def sync():
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(steps + 1):
        sync()
        t = time.perf_counter()
        step()
        sync()
        if i:
            times.append(time.perf_counter() - t)
    return times


def cub_training_step(net, batch: int = 50, device=None):
    """One TransZero training step at the CUB shapes (312 attributes, 150 seen + 50 unseen classes, Adam,
    the three losses) on a fixed random batch of 2048 × 14 × 14 maps, as a function of nothing."""
    device = device or torch.device("cpu")
    att = F.normalize(torch.rand(200, 312, device=device), dim=1)
    offset = torch.cat([-torch.ones(150), torch.ones(50)]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)
    maps = torch.rand(batch, 2048, 14, 14, device=device)
    y = torch.randint(0, 150, (batch,), device=device)

    def step():
        z, e, _ = net(maps, att)
        loss = (F.cross_entropy(z, y) - 0.3 * torch.log(torch.softmax(z + offset, 1)[:, 150:].sum(1).mean())
                + 0.005 * ((e - att[y]) ** 2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def cub_net(device=None):
    """TransZero with the CUB config (d 300, feed-forward 512, dropout 0.4, decoder self-attention)."""
    from methods.transzero.model import TransZeroNet

    torch.manual_seed(0)
    net = TransZeroNet(2048, np.random.default_rng(0).normal(size=(312, 300)), d=300, d_ff=512, dropout=0.4,
                       self_attention=True, normalize_V=False)
    return net.to(device or torch.device("cpu"))


def step_times(pattern: str, steps: int, batch: int) -> list[float]:
    net = cub_net()
    if pattern == "official pattern":
        to_official_pattern(net)
    return timed(cub_training_step(net, batch), steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args(argv)
    from zsl_bench.runtime import limit_threads

    limit_threads()
    result = {"batch": args.batch, "shape": [2048, 14, 14], "attributes": 312, "classes": 200,
              "threads": torch.get_num_threads()}
    for pattern in ("zsl-bench", "official pattern"):
        t = step_times(pattern, args.steps, args.batch)
        result[pattern] = {"median_s": round(statistics.median(t), 3), "steps": [round(x, 3) for x in t]}
    result["speedup"] = round(result["official pattern"]["median_s"] / result["zsl-bench"]["median_s"], 2)
    result["official_code_reference_s"] = "4–5 (methods.md §3.7, 2 CPU cores)"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
