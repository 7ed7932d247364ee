"""The training loop torch methods share: device placement, mixed precision, gradient accumulation,
data parallelism across processes, and a state that a run interrupted at any checkpoint resumes from.

A method keeps its own loss and update rule (Mg-MRN's three sequential steps per batch included): it gives
the loop a stream of index batches, the checkpoint steps, and an `update(idx, batch)` that calls
`loop.step(optimizer, loss_of, n)` once per optimizer step. The loop does everything else the same way for
every method:

- **precision**: `torch.autocast` around each forward (bf16, or fp16 with a gradient scaler; fp32 = off);
- **micro-batches**: a batch larger than `micro_batch` is split, each part's loss weighted by its share of
  the batch, gradients accumulated before the step. Exact for losses that are means over samples; a loss
  with a batch statistic (DAZLE/TransZero's self-calibration, BatchNorm) sees each part on its own;
- **data parallelism** (`torchrun`): each process takes its contiguous share of every batch; gradients are
  summed across processes before the step (each share weighted as above), buffers follow rank 0. The
  batch sequence is the single process's, so a run on P processes computes the single-process update up to
  float summation order (for per-sample-mean losses);
- **state**: model, optimizers, scheduler, scaler, the batch stream and every random generator, taken at
  each checkpoint (`FitContext.evaluate`) and restored by a resumed fit, which then continues bit for bit.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(requested: str, device: str) -> str:
    """`requested` as the loop runs it. fp32 is the default because every official code trains in fp32;
    "auto" is an opt-in speed mode: bf16 on a GPU that supports it, fp16 (with a gradient scaler) on an
    older one, fp32 on CPU."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {requested!r}")
    cuda = str(device).startswith("cuda")
    if requested == "auto":
        if not cuda:
            return "fp32"
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and not cuda:
        raise ValueError("precision fp16 needs a GPU (CPU autocast supports bf16 only); use fp32 or bf16")
    return requested


@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job (rank 0 of 1 without one)."""
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Distributed":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This process's contiguous share of n items (the first processes take the extra ones)."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def gather_rows(self, part: np.ndarray) -> np.ndarray:
        """Every process's `part` (rows of its `share`), stacked in rank order on every process."""
        if self.world == 1:
            return part
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, np.asarray(part))
        return np.concatenate(parts)


class BatchStream:
    """An endless stream of index batches: `draw(rng)` gives the next list (one epoch's batches, or a single
    batch drawn afresh), consumed in order. Its state is the generator's and the batches not yet used."""

    def __init__(self, draw: Callable, rng: np.random.Generator):
        self.draw, self.rng, self.pending = draw, rng, []

    def next(self) -> np.ndarray:
        if not self.pending:
            self.pending = [np.asarray(b) for b in self.draw(self.rng)]
        return self.pending.pop(0)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "pending": [b.copy() for b in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.pending = [np.asarray(b) for b in state["pending"]]


def epoch_checkpoints(epochs: int, steps_per_epoch: int) -> dict[int, int]:
    """A checkpoint after every epoch: step e·P → label e."""
    return {e * steps_per_epoch: e for e in range(1, int(epochs) + 1)}


class TrainLoop:
    """One fit's loop (see the module docstring). `net` is the nn.Module whose state is the model's,
    `optimizers` one optimizer or a list, `scheduler` optional. The settings come from the fit's context
    (`ctx.settings`: precision, micro-batch, loader workers; `Distributed.current()`)."""

    def __init__(self, ctx, net, optimizers, *, device, scheduler=None):
        import torch

        self.ctx, self.net, self.scheduler = ctx, net, scheduler
        self.optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
        self.device = torch.device(device)
        settings = ctx.settings
        self.precision = resolve_precision(settings.precision, str(device))
        self.micro_batch = settings.micro_batch
        self.dist = Distributed.current()
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.stream: BatchStream | None = None
        self.step_count = 0
        self._global_n = self._local_n = self.offset = 0   # the current batch: whole, this process's share, its start
        if self.dist.world > 1:
            self._broadcast(list(self.net.parameters()) + list(self.net.buffers()))

    # --- per batch ------------------------------------------------------------------------------------
    def shard(self, idx) -> tuple[np.ndarray, int]:
        """This process's contiguous share of a batch and its offset in it."""
        idx = np.asarray(idx)
        self._global_n = len(idx)
        if self.dist.world == 1:
            return idx, 0
        part = self.dist.share(len(idx))
        return idx[part], part.start

    def autocast(self):
        import torch

        enabled = self.precision in ("bf16", "fp16")
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=enabled)

    def step(self, optimizer, loss_of: Callable[[slice], object], n: int, set_to_none: bool = True) -> None:
        """One optimizer step on this process's `n` samples of the current batch: `loss_of(part)` is the mean
        loss over `part` (a slice of them). Parts of at most `micro_batch` samples, each weighted by its share
        of the whole batch; gradients summed across processes; then the step (through the scaler in fp16).
        `optimizer` may be a tuple: one loss whose gradients several optimizers step (TF-VAEGAN's encoder,
        generator, feedback and decoder, each with its own Adam)."""
        optimizers = tuple(optimizer) if isinstance(optimizer, (tuple, list)) else (optimizer,)
        for opt in optimizers:
            opt.zero_grad(set_to_none=set_to_none)
        size = int(self.micro_batch or n) or 1
        total = self._global_n or n
        for lo in range(0, n, size):
            part = slice(lo, min(lo + size, n))
            with self.autocast():
                loss = loss_of(part)
            share = (part.stop - part.start) / total
            if share != 1.0:   # a whole batch in one part keeps the single-process graph exactly
                loss = loss * share
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        for opt in optimizers:
            if self.dist.world > 1:
                self._sum_gradients(opt)
            if self.scaler:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler:
            self.scaler.update()

    @property
    def batch_total(self) -> int:
        """Samples in the current batch across every process (a loss summed over the batch, rather than
        averaged, is its per-sample mean times this)."""
        return self._global_n or self._local_n

    def global_rows(self, draw: Callable[[int], object]):
        """This process's rows of a random draw made for the whole batch: `draw(n)` (e.g. noise for n
        samples) runs on every process with the same generator state and each keeps its share, so a run on
        P processes draws what the single process draws."""
        full = draw(self._global_n)
        return full[self.offset:self.offset + self._local_n]

    def sum_across(self, value):
        """A tensor summed over the processes (itself on one): a batch statistic a method needs whole."""
        if self.dist.world > 1:
            import torch.distributed as dist

            value = value.clone()
            dist.all_reduce(value)
        return value

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self, stream: BatchStream, update: Callable, checkpoints: dict[int, object], *,
            load: Callable | None = None, before_step: Callable[[int], None] | None = None,
            before_evaluate: Callable[[object], None] | None = None,
            on_checkpoint: Callable[[object], None] | None = None) -> None:
        """Steps 1 … max(checkpoints): draw a batch, `before_step(step)`, `update(local_idx, batch)`; at each
        checkpoint step `before_evaluate(label)` then `ctx.evaluate(label)`, or `on_checkpoint(label)` instead
        when given (a generative method trains its final classifiers there and evaluates each of their
        epochs, the last with a snapshot). `load(parts)`, given this
        segment's [(step, local_idx, offset)] up to the next checkpoint, yields each batch's data (an image
        DataLoader); without it `batch` is None and `update` reads its inputs itself. A fit whose context
        carries a resume state starts from it, after its checkpoint."""
        self.stream = stream
        self.ctx.attach(self)
        if self.ctx.resume_state is not None:
            self.load_state_dict(self.ctx.resume_state)
        self.net.train()
        last = max(checkpoints)
        while self.step_count < last:
            stop = min(s for s in checkpoints if s > self.step_count)
            segment = []
            for step in range(self.step_count + 1, stop + 1):
                idx = stream.next()
                local, offset = self.shard(idx)
                segment.append((step, idx, local, offset))
            data = load([(s, local, offset) for s, _, local, offset in segment]) if load else iter(())
            for step, idx, local, offset in segment:
                self.step_count = step
                if before_step:
                    before_step(step)
                self._global_n, self._local_n, self.offset = len(idx), len(local), offset
                update(local, next(data, None))
            if before_evaluate:
                before_evaluate(checkpoints[stop])
            if self.dist.world > 1:
                self._broadcast(list(self.net.buffers()))
            (on_checkpoint or self.ctx.evaluate)(checkpoints[stop])
            self.net.train()

    # --- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed fit needs to continue as if never stopped. Under torchrun every process's
        random state is gathered (a collective: every process calls this at the same checkpoint)."""
        import torch

        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.dist.world > 1:
            gathered = [None] * self.dist.world
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        return {"step": self.step_count, "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
                "optimizers": [copy.deepcopy(o.state_dict()) for o in self.optimizers],   # live tensors otherwise
                "scheduler": copy.deepcopy(self.scheduler.state_dict()) if self.scheduler else None,
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "stream": self.stream.state_dict() if self.stream else None, "rng": rng,
                "world": self.dist.world}

    def load_state_dict(self, state: dict) -> None:
        import torch

        if state["world"] != self.dist.world:
            raise RuntimeError(f"this fit was checkpointed on {state['world']} process(es) and is resumed on "
                               f"{self.dist.world}: resume with the same number of processes")
        self.step_count = int(state["step"])
        self.net.load_state_dict(state["net"])
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        if self.scheduler and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.stream and state["stream"] is not None:
            self.stream.load_state_dict(state["stream"])
        rng = state["rng"][self.dist.rank]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # --- across processes -----------------------------------------------------------------------------------
    def _sum_gradients(self, optimizer) -> None:
        """Sum every gradient across processes in one flat all-reduce (each process's loss already carries its
        share of the batch, so the sum is the whole batch's gradient)."""
        import torch
        import torch.distributed as dist

        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _broadcast(self, tensors) -> None:
        """Rank 0's values to every process (parameters at the start, buffers before each checkpoint)."""
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t.data, src=0)
