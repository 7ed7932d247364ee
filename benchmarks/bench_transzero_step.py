#!/usr/bin/env python
"""TransZero training-step time at the official CUB shapes, ours against the official computation, on this
machine's CPU.

B = 50 maps of 2048 × 14 × 14, 312 attributes (300-d word vectors), 200 classes (150 seen), the CUB config
(d = 300, feed-forward 512, dropout 0.4, decoder self-attention, Adam 1e-4, λ 0.3 / 0.005). One step =
forward, the three losses, backward, Adam step. Two networks with the same parameters:
- `official`: benchmarks/transzero_official_copy.py, the release's computation re-typed (geometry embedding
  rebuilt per step and per image, queries repeated over the batch, `nn.MultiheadAttention` with its
  default `need_weights=True`, `nn.Dropout`, the release's einsums and one-hot losses);
- `zsl-bench`: methods/transzero/model.py as the method trains it (its docstring lists what it computes
  differently), in float32, and with `--bf16` also under bf16 autocast.
First both are checked to compute the same thing (eval mode, same weights and batch: per-attribute scores and
loss within 1e-5 relative); then the steps are timed interleaved (official, ours, official, …), after one
warm-up step each, and the medians and their ratio are printed.

    python benchmarks/bench_transzero_step.py [--steps 7] [--batch 50] [--bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transzero_official_copy import OfficialTransZero, copy_weights  # noqa: E402

SEEN, CLASSES, ATTRIBUTES = 150, 200, 312


def cub_batch(batch: int, seed: int = 0):
    """(class attributes, fixed whatever the seed; a batch of maps; their seen-class labels)."""
    att = torch.rand(CLASSES, ATTRIBUTES, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(batch, 2048, 14, 14, generator=g)
    y = torch.randint(0, SEEN, (batch,), generator=g)
    return att, maps, y


def cub_nets():
    """Our TransZeroNet with the CUB config and the official copy with the same parameters."""
    from zsl_bench_methods.transzero.model import TransZeroNet

    torch.manual_seed(0)
    w2v = torch.as_tensor(np.random.default_rng(0).normal(size=(ATTRIBUTES, 300)), dtype=torch.float32)
    ours = TransZeroNet(2048, w2v, d=300, d_ff=512, dropout=0.4, self_attention=True, normalize_V=False)
    att = cub_batch(1)[0]
    official = OfficialTransZero(att, w2v, SEEN)
    copy_weights(ours, official)
    return ours, official


def our_loss(net, maps, att_n, y, offset):
    """methods/transzero's training loss: CE over all classes, self-calibration on the offset logits, MSE."""
    z, e, _ = net(maps, att_n)
    return (F.cross_entropy(z, y) - 0.3 * torch.log(torch.softmax(z + offset, 1)[:, SEEN:].sum(1).mean())
            + 0.005 * ((e - att_n[y]) ** 2).mean()), e


def agreement(ours, official, batch: int) -> dict:
    """Largest relative differences between the two computations on the same weights (eval: no dropout)."""
    att, maps, y = cub_batch(batch, seed=1)
    att_n = F.normalize(att, dim=1)
    offset = official.vec_bias[0]
    ours.eval(), official.eval()
    with torch.no_grad():
        loss_ours, e_ours = our_loss(ours, maps, att_n, y, offset)
        pred, e_official = official(maps)
        loss_official = official.loss(pred, e_official, y)
    ours.train(), official.train()
    return {"scores_max_rel": float((e_ours - e_official).abs().max() / e_official.abs().max()),
            "loss_rel": float(abs(loss_ours - loss_official) / abs(loss_official))}


def training_step(kind: str, net, batch: int, bf16: bool = False, device=None):
    """One training step of `net` on a fixed batch, as a function of nothing."""
    device = device or torch.device("cpu")
    att, maps, y = (t.to(device) for t in cub_batch(batch))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)
    att_n = F.normalize(att, dim=1)
    offset = torch.cat([-torch.ones(SEEN), torch.ones(CLASSES - SEEN)]).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if kind == "official":
                pred, embed = net(maps)
                loss = net.loss(pred, embed, y)
            else:
                loss = our_loss(net, maps, att_n, y, offset)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def summarise(times: dict[str, list[float]], check: dict) -> dict:
    """Print each computation's median step, its ratio to "official" and the agreement check; return them."""
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        ratio = "" if name == "official" else f"   {medians['official'] / m:.2f}× faster than official"
        print(f"{name:26s} median {m:.3f} s/step over {len(times[name])} steps{ratio}")
    print(f"same numbers (eval, same weights and batch): scores max rel diff {check['scores_max_rel']:.1e}, "
          f"loss rel diff {check['loss_rel']:.1e}")
    return {"agreement": check, "median_s": {k: round(v, 3) for k, v in medians.items()},
            "steps_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "speedup_vs_official": {k: round(medians["official"] / v, 2) for k, v in medians.items() if k != "official"}}


def interleaved(steps: dict, n: int) -> dict[str, list[float]]:
    """Seconds per call of each step function, called in turn n times after one warm-up call each."""
    times = {name: [] for name in steps}
    for i in range(n + 1):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            if i:
                times[name].append(time.perf_counter() - t)
    return times


# --- used by benchmarks/gpu_check.py and bench_attention_family.py (one network, any device) ----------------

def timed(step, steps: int, device=None) -> list[float]:
    """Seconds of each of `steps` calls of `step()`, after one warm-up call; on a GPU the device is
    synchronised around each call."""
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


def cub_net(device=None):
    """Our TransZero with the CUB config on `device`."""
    return cub_nets()[0].to(device or torch.device("cpu"))


def cub_training_step(net, batch: int = 50, device=None):
    """`training_step` of our network with the batch on `device`."""
    return training_step("ours", net, batch, device=device)

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=7, help="timed steps of each (median reported; at least 5)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--bf16", action="store_true", help="also time ours under bf16 autocast")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    from zsl_bench.runtime import limit_threads

    limit_threads()
    ours, official = cub_nets()
    check = agreement(ours, official, args.batch)
    if max(check.values()) > 1e-5:
        print(f"the two computations disagree: {check}", file=sys.stderr)
        return 1
    steps = {"official": training_step("official", official, args.batch),
             "zsl-bench fp32": training_step("ours", ours, args.batch)}
    if args.bf16:
        bf16_net = cub_nets()[0]
        steps["zsl-bench bf16 autocast"] = training_step("ours", bf16_net, args.batch, bf16=True)
    times = interleaved(steps, max(5, args.steps))
    result = {"batch": args.batch, "shape": [2048, 14, 14], "attributes": ATTRIBUTES, "classes": CLASSES,
              "threads": torch.get_num_threads(), "torch": torch.__version__, **summarise(times, check)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
