"""The two families of map methods (the core never imports this module; methods never import each other):
- `AllClassMapMethod` and `AllClassTargets`: one map level in, cross-entropy over every class plus
  self-calibration with the built-in ±offset (the DAZLE → TransZero / MSDN family), trained by the shared
  `training.TrainLoop` with the official scripts' sampling and evaluation cadence;
- `OneMapMethod`: a head on the last backbone map, frozen maps or a fine-tuned backbone, trained on
  episodes or shuffled passes with a per-epoch learning-rate rule (the GEM-ZSL → ReZSL family, APN);
- `attribute_groups_by_name`: attribute indices grouped by the type before `::` (the decorrelation losses);
- `attribute_weighted_attention`: attention of attribute queries over a grid → one map per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsl_bench.method import ClassSemantics, FitContext, TrainData
from zsl_bench.training import BatchStream, TrainLoop, epoch_checkpoints
from zsl_bench.torch_methods import (TorchMethod, class_balanced_batches, epoch_batches, level_backbone, make_optimizer,
                                     score_in_batches, torch_generator)

SAMPLINGS = ("epoch", "independent")
EVAL_CADENCES = ("epoch_end", "official")


# --- attention summaries ----------------------------------------------------------------------------

def attribute_weighted_attention(attention: np.ndarray, weights: np.ndarray | None, grid) -> np.ndarray:
    """[N, A, T] attention of attribute queries over tokens → [N, H, W]: Σ_i w_i · attention_i, weights
    rescaled to sum 1 per image (uniform when None). T is a multiple of H·W: token blocks laid out on
    the same grid (Mg-MRN's own and fused tokens) are added cell by cell. Attention rows that sum to 1
    over tokens give maps that sum to 1 over cells."""
    attention = np.asarray(attention, dtype=np.float64)
    n, a, t = attention.shape
    h, w = (int(g) for g in grid)
    if t % (h * w):
        raise ValueError(f"{t} attention tokens do not tile the {h}×{w} grid")
    if weights is None:
        weights = np.ones((n, a))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n, a):
        raise ValueError(f"attribute weights {weights.shape}, expected {(n, a)}")
    weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-300)
    summary = np.einsum("na,nat->nt", weights, attention)
    return summary.reshape(n, t // (h * w), h, w).sum(1)


class AllClassMapMethod(TorchMethod):
    """DAZLE, TransZero and MSDN: one map level in, `loss(maps, y, AllClassTargets)` minimised with one
    optimizer step per batch through the shared `TrainLoop`; `self.net(maps, class_att)` returns class scores
    first. By default every epoch (a shuffled pass) ends with a checkpoint; the hyperparameters `sampler`,
    `sampling` and `eval_cadence` give the official scripts' batches (`draw`) and checkpoints
    (`checkpoint_steps`)."""

    def loss(self, maps, y, targets: "AllClassTargets"):
        raise NotImplementedError

    # The official scripts of TransZero and MSDN (train_<ds>.py, MSDN_<ds>.py) draw and evaluate alike; their
    # hyperparameters `sampler`, `sampling` and `eval_cadence` switch it on (README of transzero, "Sampling and
    # evaluation cadence"). Without them (DAZLE): shuffled passes, a checkpoint after every epoch.
    def batches(self, y: np.ndarray, rng) -> list:
        """One "epoch": N / batch_size batches of indices: a shuffled pass in `batch_size` chunks, or with
        `sampler: balanced` min(#seen, batch_size) distinct classes × 1 image each (AWA2: effectively 40)."""
        hp = self.hparams
        if hp.get("sampler") == "balanced":
            return class_balanced_batches(y, int(np.ceil(len(y) / hp["batch_size"])), hp["batch_size"], 1, rng)
        return epoch_batches(len(y), hp["batch_size"], rng)

    def draw(self, y: np.ndarray):
        """rng → the next batches of the stream. `sampling: epoch` (default): one epoch of `batches`.
        `independent` with the random sampler: one batch of `batch_size` distinct images drawn afresh
        (official `torch.randperm(N)[:batch_size]`), so an image can recur within an epoch and another be
        missed. The balanced sampler draws every batch independently in both settings (official)."""
        hp = self.hparams
        sampling = hp.get("sampling", "epoch")
        if sampling not in SAMPLINGS:
            raise ValueError(f"{self.name} sampling must be one of {SAMPLINGS}, not {sampling!r}")
        if sampling == "independent" and hp.get("sampler") != "balanced":
            n, size = len(y), int(hp["batch_size"])
            return lambda rng: [rng.permutation(n)[:size]]
        return lambda rng: self.batches(y, rng)

    def checkpoint_steps(self, n: int) -> dict[int, int]:
        """Optimizer step (counted from 1) → checkpoint label 1 … epochs. `eval_cadence: epoch_end`
        (default): after steps e·P, P = ceil(N / batch_size). `official`: after steps 1 + j·R,
        j = 0 … epochs − 1, R = N // batch_size, the official report interval ((N·epochs // batch_size) //
        epochs); training stops after the last one. A refit on more images has a larger R, the same labels."""
        hp = self.hparams
        cadence = hp.get("eval_cadence", "epoch_end")
        if cadence not in EVAL_CADENCES:
            raise ValueError(f"{self.name} eval_cadence must be one of {EVAL_CADENCES}, not {cadence!r}")
        epochs, size = int(hp["epochs"]), int(hp["batch_size"])
        if cadence == "official":
            r = max(n // size, 1)
            return {1 + j * r: j + 1 for j in range(epochs)}
        return epoch_checkpoints(epochs, max(int(np.ceil(n / size)), 1))

    def start_fit(self, train: TrainData, ctx: FitContext):
        """Seed the streams, build the network, the targets and the optimizer: (numpy rng, targets, optimizer)."""
        hp = self.hparams
        torch_generator(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self.net = self.build_net().to(self.torch_device)
        targets = AllClassTargets.build(self, train.semantics, ctx.unseen_semantics(), hp["logit_offset"])
        opt = make_optimizer(hp["optimizer"], [p for p in self.net.parameters() if p.requires_grad], hp["lr"],
                             hp["weight_decay"], hp["momentum"])
        return rng, targets, opt

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        import torch

        rng, targets, opt = self.start_fit(train, ctx)
        loop = TrainLoop(ctx, self.net, opt, device=self.torch_device)

        def update(idx, _):
            maps = self.tensor(train.x.read(idx)[0])
            y = torch.as_tensor(train.y[idx], device=self.torch_device)
            loop.step(opt, lambda part: self.loss(maps[part], y[part], targets), len(idx))

        loop.run(BatchStream(self.draw(train.y), rng), update, self.checkpoint_steps(len(train.y)))

    def score(self, x, semantics: ClassSemantics) -> np.ndarray:
        import torch

        att = self.tensor(self.class_matrix(semantics))
        self.net.eval()
        with torch.no_grad():
            return score_in_batches(x, lambda blocks: self.net(self.tensor(blocks[0]), att)[0].cpu().numpy())


@dataclass
class AllClassTargets:
    """What DAZLE and TransZero train against: every class's attributes (seen rows first; these methods
    declare `uses_unseen_semantics`) and the built-in logit offset m = −1 seen / +1 unseen."""
    all_att: object        # [K, A] tensor
    seen_att: object       # [S, A] tensor
    offset: object         # [K] tensor
    n_seen: int

    @classmethod
    def build(cls, method: TorchMethod, seen: ClassSemantics, unseen: ClassSemantics, logit_offset: float):
        seen_att, unseen_att = method.class_matrix(seen), method.class_matrix(unseen)
        return cls(all_att=method.tensor(np.concatenate([seen_att, unseen_att])), seen_att=method.tensor(seen_att),
                   offset=method.tensor(np.r_[-np.ones(len(seen_att)), np.ones(len(unseen_att))] * logit_offset),
                   n_seen=len(seen_att))

    def self_calibration(self, z):
        """−log of the batch-mean probability mass on unseen classes, offset logits (DAZLE/TransZero)."""
        import torch

        return -torch.log(torch.softmax(z + self.offset, dim=1)[:, self.n_seen:].sum(1).mean())


# --- one backbone map, frozen or fine-tuned (GEM-ZSL / ReZSL, APN) -----------------------------------

# SUN's 102 attributes in GEM-ZSL's four groups (GEMZSL/modeling/utils.py get_attr_group: functions, materials,
# surface properties, spatial envelope), the groups a decorrelation loss of this family uses on SUN.
SUN_ATTRIBUTE_GROUPS = [list(range(0, 36)), [*range(36, 74), 80, 99], [74, 75, 76, 77, 78, 79, 81, 82, 83, 84],
                        [*range(85, 99), 100, 101]]


def attribute_groups_by_name(names) -> list[list[int]]:
    """Attribute indices grouped by the text before `::` in their names, in order of first appearance:
    CUB's 28 attribute types (exactly GEM-ZSL's CUB groups, utils.py `get_attr_group`) and the embedded
    default's. [] when the names carry no such prefix (SUN, AWA2: methods bring their official lists)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if "::" in name:
            groups.setdefault(name.split("::", 1)[0], []).append(i)
    return list(groups.values()) if len(groups) > 1 else []


class OneMapMethod(TorchMethod):
    """A head on one backbone map (ResNet layer4): read frozen from the feature store (`mode: map`, what a
    CPU and the embedded default run) or computed by a backbone fine-tuned end to end (`mode: image`, the
    papers' setting, with the method's `image_transform` at `image_size`). One optimizer step per batch
    through `TrainLoop`: episodes of `ways` × `shots` seen classes, `batches_per_epoch` per epoch
    (`sampler: episodes`), or shuffled passes in `batch_size` chunks (`sampler: shuffle`); a checkpoint
    after every epoch. At each epoch's first step `epoch_start(epoch)` sets the learning rates (the
    official schedules are functions of the epoch, so a resumed fit needs no scheduler state).
    Subclasses give `build_head(channels)`, `loss(out, y, seen_att)` on `out = head(features)`, and
    `class_scores(out, att)`."""
    input_kind = "map"

    def build_head(self, channels: int):
        raise NotImplementedError

    def loss(self, out, y, seen_att):
        raise NotImplementedError

    def class_scores(self, out, att):
        raise NotImplementedError

    def build_net(self):
        import torch.nn as nn

        hp = self.hparams
        if hp["mode"] == "image":
            backbone = level_backbone(hp["backbone"], hp["pretrained"], hp["weights_file"])
            for name, p in backbone.net.named_parameters():
                if name.split(".")[0] in hp.get("frozen_layers", ()):
                    p.requires_grad_(False)
            return nn.ModuleDict({"backbone": backbone, "head": self.build_head(backbone.channels[-1])})
        return nn.ModuleDict({"head": self.build_head(self.task.input_shape[0])})

    def optimizer(self):
        hp = self.hparams
        return make_optimizer(hp["optimizer"], [p for p in self.net.parameters() if p.requires_grad], hp["lr"],
                              hp["weight_decay"], hp["momentum"])

    def epoch_start(self, epoch: int, opt) -> None:
        """Epoch (from 1) about to start: the official step decay, stepped at the start of every epoch as
        GEM-ZSL/ReZSL's trainer does (so the first decay falls on epoch `lr_step`, not `lr_step` + 1)."""
        hp = self.hparams
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * hp["lr_gamma"] ** (epoch // hp["lr_step"])

    def steps_per_epoch(self, n: int) -> int:
        hp = self.hparams
        if hp["sampler"] == "episodes":
            return int(hp["batches_per_epoch"]) or int(np.ceil(n / (hp["ways"] * hp["shots"])))
        return max(int(np.ceil(n / hp["batch_size"])), 1)

    def draw(self, y: np.ndarray):
        hp = self.hparams
        if hp["sampler"] == "episodes":
            per_epoch = self.steps_per_epoch(len(y))
            return lambda rng: class_balanced_batches(y, per_epoch, hp["ways"], hp["shots"], rng)
        if hp["sampler"] == "shuffle":
            return lambda rng: epoch_batches(len(y), hp["batch_size"], rng)
        raise ValueError(f"{self.name}: sampler must be 'episodes' or 'shuffle', not {hp['sampler']!r}")

    def inputs(self, x, positions):
        """One evaluation batch: images (the method's evaluation transform) or frozen maps."""
        if self.hparams["mode"] == "image":
            return x.read(positions, self.image_transform(self.hparams["image_size"], train=False)).to(self.torch_device)
        return self.tensor(x.read(positions)[-1])

    def features(self, batch):
        return self.net["backbone"](batch)[3] if self.hparams["mode"] == "image" else batch

    def forward(self, batch):
        return self.net["head"](self.features(batch))

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        import torch

        torch_generator(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self.net = self.build_net().to(self.torch_device)
        seen_att = self.tensor(self.class_matrix(train.semantics))
        opt = self.optimizer()
        per_epoch = self.steps_per_epoch(len(train.y))
        loop = TrainLoop(ctx, self.net, opt, device=self.torch_device)

        def before_step(step):
            if (step - 1) % per_epoch == 0:
                self.epoch_start((step - 1) // per_epoch + 1, opt)

        def update(idx, images):
            y = torch.as_tensor(train.y[idx], device=self.torch_device)
            batch = images if images is not None else self.inputs(train.x, idx)
            self.batch_total = loop.batch_total   # for a loss the official code sums over the batch (APN's L_CPT)
            loop.step(opt, lambda part: self.loss(self.forward(batch[part]), y[part], seen_att), len(idx))

        load = None
        if self.hparams["mode"] == "image":   # decoded and augmented in DataLoader workers, each image from its seed
            from zsl_bench.images import ImageLoader

            load = ImageLoader(train.x, self.image_transform(int(self.hparams["image_size"]), train=True), ctx.seed,
                               ctx.settings.loader_workers, device=self.torch_device)
        loop.run(BatchStream(self.draw(train.y), rng), update, epoch_checkpoints(self.hparams["epochs"], per_epoch),
                 load=load, before_step=before_step)

    def map_grid(self) -> tuple[int, int]:
        """H × W of the map the head reads: the stored maps, or the backbone's stride 32 of the image size."""
        if self.hparams["mode"] == "image":
            side = -(-int(self.hparams["image_size"]) // 32)   # each stride-2 stage rounds up
            return side, side
        return tuple(int(v) for v in self.task.input_shape[1:3])

    def weighted_attention(self, x, attention_of, attribute_weights=None) -> np.ndarray:
        """[N, H, W] for figures: `attention_of(head output)` ([B, A, H·W], rows summing to 1 over the map's
        cells) averaged over attributes with `attribute_weights` (uniform when None)."""
        maps = self.outputs(x, lambda out: attention_of(out).float().cpu().numpy())
        return attribute_weighted_attention(maps, attribute_weights, self.map_grid())

    def outputs(self, x, fn):
        """`fn(head output)` → numpy, for every item of `x` in evaluation batches, stacked."""
        import torch

        self.net.eval()
        step = int(self.hparams["eval_batch_size"])
        with torch.no_grad():
            return np.concatenate([fn(self.forward(self.inputs(x, np.arange(lo, min(lo + step, len(x))))))
                                   for lo in range(0, len(x), step)])

    def score(self, x, semantics: ClassSemantics) -> np.ndarray:
        att = self.tensor(self.class_matrix(semantics))
        return self.outputs(x, lambda out: self.class_scores(out, att).float().cpu().numpy())
