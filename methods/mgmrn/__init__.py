"""Mg-MRN: Wang et al., "Multi-Granularity Mutual Refinement Network for Zero-Shot Learning",
arXiv 2511.08163. Consistent-channel version of the released code (methods.md §4, README here).

Two input modes, one head:
- `mgmrn` (`input_kind = "maps"`): frozen layer2/3/4 maps from the feature store (fits a CPU; the
  embedded default runs it; not in the official code);
- `mgmrn.image` (`input_kind = "image"`): the paper's setting, ResNet-101 fine-tuned end to end at
  448 px with the official transforms (for GPUs).
Per branch k: L_k = λ0 · CE(τ cos(p_k, a_c), y) + λ1 · mean(p_k/‖p_k‖ − a_y/‖a_y‖)²; by default three
sequential optimizer steps per batch, one per branch (official). Inference sums τ cos(p_k, a_c).
"""
from __future__ import annotations

import warnings

import numpy as np

from zsl_bench.torch_methods import TorchMethod, class_balanced_batches, level_backbone, make_optimizer, torch_generator

from zsl_bench.map_families import attribute_weighted_attention
from zsl_bench.training import BatchStream, TrainLoop, epoch_checkpoints
from zsl_bench.method import ATTENTION_MAPS, PARAMETER_COUNT, ClassSemantics, FitContext, TrainData, PaperRule, dataset_profiles

# Mg-MRN:config/<ds>_16w_2s_AttentionNet.yaml (methods.md §4.4).
COMMON = {
    "mode": "maps", "semantics": "original", "attribute_embedding": "w2v", "width": 1.0, "parts": 5,
    "levels": 3, "fusion": "one-way", "grouping": "official", "stop_gradient": True, "update": "sequential",
    "inference": "sum", "zero_grad": "none", "lr_step_at_epoch_start": True, "optimizer": "sgd",
    "momentum": 0.9, "weight_decay": 1e-5, "lr_step": 10, "batches_per_epoch": 300, "epochs": 30,
    "lambda_cls": 1.0, "image_size": 448, "backbone": "resnet101.tv_in1k", "pretrained": True,
    "weights_file": None, "eval_batch_size": 32,   # the official test batch
    "halvings": "auto",   # to the coarse grid: on a ResNet fine/mid/coarse 2/1/0 resizes (`consistent`, the release's
                          # commented-out alternative, README); on a ViT's one token grid none (`equal`)
}
PAPER = {
    "CUB": {"ways": 8, "shots": 2, "lr": 5e-4, "lr_gamma": 0.1, "scale": 20.0, "lambda_reg": 0.1},
    "SUN": {"ways": 8, "shots": 2, "lr": 5e-4, "lr_gamma": 0.5, "scale": 25.0, "lambda_reg": 1.0},
    "AWA2": {"ways": 16, "shots": 2, "lr": 5e-5, "lr_gamma": 0.5, "scale": 20.0, "lambda_reg": 1.0},
}
# The embedded default: CUB's setting scaled to 1,000 images of 128 px maps on a CPU (README).
# lr 1e-3 (a fifth of the earlier 5e-3, twice CUB's) decayed after four full epochs: at 5e-3, or with the decay
# after two, some initialisations stalled (test T1 14 % against 29 %: seed std 6.5–8.3 T1); README "Seed noise".
SYNTHETIC = {**PAPER["CUB"], "width": 1 / 32, "epochs": 6, "lr_step": 5, "lr": 1e-3, "batches_per_epoch": 0,
             "attribute_embedding": "minilm", "image_size": 64, "backbone": "resnet10t", "pretrained": False,
             "eval_batch_size": 256}


VARIANTS = {   # named ablations, one switch each from the official configuration, and the image mode
    "levels1": {"levels": 1}, "levels2": {"levels": 2},
    "fusion-none": {"fusion": "none"}, "fusion-mutual": {"fusion": "mutual"},
    "grouping-identity": {"grouping": "identity"}, "grouping-decoupled": {"grouping": "decoupled"},
    "stopgrad-off": {"stop_gradient": False}, "update-joint": {"update": "joint"},
    # the released n_upsamples (1, 1, 0) with only the input channels fixed: the fine level stays at 2× the grid
    "channels-input-only": {"halvings": "released"},
    "image": {"mode": "image", "input_kind": "image"},
}
LEVEL_STRIDES = (8, 16, 32)   # ResNet layer2 / layer3 / layer4
BRANCH_NAMES = {1: "fine (layer2)", 2: "mid (layer3)", 3: "coarse (layer4)"}   # model.py's numbering
# Inference per branch changes no weight: read off the official run's own checkpoints (same models).
SCORE_VARIANTS = {"inference-fine": {"inference": "branch1"}, "inference-mid": {"inference": "branch2"},
                  "inference-coarse": {"inference": "branch3"}}


class MgMRN(TorchMethod):
    input_kind = "maps"
    uses_unseen_semantics = False   # trained on seen classes only; unseen rows appear at inference only
    paper = "Wang et al., arXiv 2511.08163"
    paper_rule = PaperRule(checkpoint="test", calibration="test-grid", separately=("T1", "H", "AUSUC"),
                           source="NingWang2049/Mg-MRN@f27daac train.py:L128-L153 (after every epoch: best test ZSL, "
                                  "best test H, best test AUSUC kept separately); inferencer.py:L47-L116 cal_AUSUC "
                                  "(γ on the seen scores swept from 0 in ±0.01 steps on test, the best-H γ kept)")
    capabilities = frozenset({ATTENTION_MAPS, PARAMETER_COUNT})
    # The release-only xlsa17 datasets: AWA1 has AWA2's 50 classes and 85 attributes, so AWA2's setting (what
    # papers reporting AWA1 use); APY, which Mg-MRN does not report, CUB's setting, the method's reference.
    profiles = dataset_profiles(COMMON, {**PAPER, "AWA1": PAPER["AWA2"], "APY": PAPER["CUB"]}, SYNTHETIC)
    variants = VARIANTS
    # On frozen maps no parameter is shared between the branches' losses (the stop-gradients cut the fusion
    # paths), so the three sequential steps and one step on the summed loss move every parameter identically.
    identical_when = {"update-joint": {"maps": "frozen maps: with the stop-gradients no parameter is shared "
                                               "between the branches, so one joint step = the three sequential steps"}}
    score_variants = SCORE_VARIANTS

    def build_net(self):
        import torch.nn as nn

        from zsl_bench_methods.mgmrn.model import MgMRNHead, auto_halvings

        hp = self.hparams
        backbone = None
        if hp["mode"] == "image":
            backbone = level_backbone(hp["backbone"], hp["pretrained"], hp["weights_file"])
            channels = backbone.channels
        else:
            channels = tuple(shape[0] for shape in self.task.input_shapes)
        halvings = hp["halvings"]
        if halvings == "auto":
            halvings = auto_halvings(self.level_sizes(), self.name or "mgmrn")
        head = MgMRNHead(channels, self.attribute_embedding(), hp["width"], hp["levels"], hp["fusion"],
                         hp["grouping"], hp["stop_gradient"], hp["parts"], halvings, self.name or "mgmrn")
        head.grids(self.level_sizes())   # a clear error now rather than a 0×0 resize in the first forward
        return nn.ModuleDict({"backbone": backbone, "head": head} if backbone else {"head": head})

    def level_sizes(self) -> dict[int, tuple[int, int]]:
        """branch → the H × W of the backbone map it reads: the stored maps, or ResNet strides 8/16/32 of
        the image size (each stride-2 stage rounds up)."""
        if self.hparams["mode"] == "image":
            size = int(self.hparams["image_size"])
            return {k: (-(-size // s),) * 2 for k, s in zip((1, 2, 3), LEVEL_STRIDES)}
        return {k: tuple(shape[1:3]) for k, shape in zip((1, 2, 3), self.task.input_shapes)}

    # --- inputs ----------------------------------------------------------------------------------------
    def inputs(self, x, positions):
        """One batch as read once: images (evaluation transform; training images come from the loader) or
        frozen maps."""
        if self.hparams["mode"] == "image":
            return x.read(positions, self.image_transform(self.hparams["image_size"], train=False)).to(self.torch_device)
        c3, c4, c5 = (self.tensor(b) for b in x.read(positions))
        return {1: c3, 2: c4, 3: c5}

    def features(self, batch) -> dict:
        """branch → backbone output: the frozen maps, or a (fresh) pass of the images through the backbone."""
        return self.net["backbone"](batch) if self.hparams["mode"] == "image" else batch

    def branch_logits(self, p, class_att):
        import torch.nn.functional as F

        return self.hparams["scale"] * F.normalize(p, dim=1) @ F.normalize(class_att, dim=1).T

    def losses(self, scores: dict, y, seen_att) -> dict:
        import torch.nn.functional as F

        hp = self.hparams
        target = F.normalize(seen_att[y], dim=1)
        return {k: hp["lambda_cls"] * F.cross_entropy(self.branch_logits(p, seen_att), y)
                + hp["lambda_reg"] * ((F.normalize(p, dim=1) - target) ** 2).mean()
                for k, p in scores.items()}

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        import torch

        hp = self.hparams
        torch_generator(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self.net = self.build_net().to(self.torch_device)
        seen_att = self.tensor(self.class_matrix(train.semantics))
        opt = make_optimizer(hp["optimizer"], self.net.parameters(), hp["lr"], hp["weight_decay"], hp["momentum"])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp["lr_step"], gamma=hp["lr_gamma"])
        per_epoch = hp["batches_per_epoch"] or int(np.ceil(len(train.y) / (hp["ways"] * hp["shots"])))
        set_to_none = hp["zero_grad"] == "none"   # torch ≥ 2 semantics; "zeros" = torch 1.x (moves every parameter)
        loop = TrainLoop(ctx, self.net, opt, device=self.torch_device, scheduler=sched)

        def epoch_start(step):
            if hp["lr_step_at_epoch_start"] and step % per_epoch == 1 % per_epoch:
                with warnings.catch_warnings():   # torch warns about stepping before optimizer.step(): intended
                    warnings.simplefilter("ignore", UserWarning)
                    sched.step()   # official: at the start of each epoch, so the LR decays one epoch early

        def epoch_end(_):
            if not hp["lr_step_at_epoch_start"]:
                sched.step()

        def update(idx, images):
            y = torch.as_tensor(train.y[idx], device=self.torch_device)
            batch = images if images is not None else self.inputs(train.x, idx)
            if hp["update"] == "sequential":   # a fresh forward and one step per branch, fine to coarse
                # frozen maps: the coarser levels a step reads without gradient are computed once per update
                # (MgMRNHead.forward's `kept`; per micro-batch part)
                kept = {} if hp["mode"] == "maps" and set_to_none else None
                for k in self.net["head"].branches:
                    loop.step(opt, lambda part, k=k: self.losses(
                        self.net["head"](self.features(self.part(batch, part)), only=k,
                                         kept=None if kept is None else kept.setdefault((part.start, part.stop), {}))[0],
                        y[part], seen_att)[k], len(idx), set_to_none)
            else:
                loop.step(opt, lambda part: sum(self.losses(self.net["head"](self.features(self.part(batch, part)))[0],
                                                            y[part], seen_att).values()), len(idx), set_to_none)

        load = None
        if hp["mode"] == "image":   # decoded and augmented in DataLoader workers, each image from its own seed
            from zsl_bench.images import ImageLoader

            load = ImageLoader(train.x, self.image_transform(int(hp["image_size"]), train=True), ctx.seed,
                               ctx.settings.loader_workers, device=self.torch_device)
        stream = BatchStream(lambda r: class_balanced_batches(train.y, per_epoch, hp["ways"], hp["shots"], r), rng)
        loop.run(stream, update, epoch_checkpoints(hp["epochs"], per_epoch), load=load, before_step=epoch_start,
                 before_evaluate=epoch_end)

    @staticmethod
    def part(batch, part: slice):
        """A slice of one batch: images, or every level of the frozen maps."""
        return {k: v[part] for k, v in batch.items()} if isinstance(batch, dict) else batch[part]

    def inference_branches(self) -> tuple[int, ...]:
        active = self.net["head"].branches
        if self.hparams["inference"] == "sum":
            return active
        k = int(self.hparams["inference"].removeprefix("branch"))
        if k not in active:
            raise ValueError(f"inference {self.hparams['inference']} names a branch this model does not have "
                             f"(active: {active})")
        return (k,)

    def branch_scores(self, x, semantics: ClassSemantics) -> dict[int, np.ndarray]:
        """branch → τ cos(p_k, a_c) for every sample and candidate class (one pass over `x`)."""
        import torch

        att = self.tensor(self.class_matrix(semantics))
        self.net.eval()
        step = self.hparams["eval_batch_size"]
        parts = []
        with torch.no_grad():
            for lo in range(0, len(x), step):
                scores, _ = self.net["head"](self.features(self.inputs(x, np.arange(lo, min(lo + step, len(x))))))
                parts.append({k: self.branch_logits(p, att).cpu().numpy() for k, p in scores.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def score(self, x, semantics: ClassSemantics) -> np.ndarray:
        per_branch = self.branch_scores(x, semantics)
        return sum(per_branch[k] for k in self.inference_branches())

    def score_many(self, x, semantics: ClassSemantics, variants: dict[str, dict]) -> dict[str, np.ndarray]:
        """Every inference setting from one forward pass: they differ only in which branches are summed."""
        per_branch = self.branch_scores(x, semantics)
        out = {}
        for name, overrides in variants.items():
            fitted = self.hparams
            self.hparams = {**fitted, **overrides}
            try:
                out[name] = sum(per_branch[k] for k in self.inference_branches())
            finally:
                self.hparams = fitted
        return out

    def attention_maps(self, x, attribute_weights=None) -> dict[str, np.ndarray]:
        """For figures: one [N, H, W] map per active branch ("fine (layer2)", "mid (layer3)",
        "coarse (layer4)") on the coarse grid every branch is brought to. A branch's decoder attends over
        its own tokens and, with fusion, over as many fused tokens (one per cell of the same grid); the
        two attentions at a cell are added. Attributes are averaged with `attribute_weights` ([N, A],
        rescaled to sum 1 per image; uniform when None). Each map sums to 1 over the cells."""
        import torch

        self.net.eval()
        step = self.hparams["eval_batch_size"]
        parts, grid = [], None
        with torch.no_grad():
            for lo in range(0, len(x), step):
                features = self.features(self.inputs(x, np.arange(lo, min(lo + step, len(x)))))
                grid = tuple(features[3].shape[-2:])   # the coarse (layer4) grid
                own = self.net["head"].grids({k: tuple(v.shape[-2:]) for k, v in features.items()})
                _, attention = self.net["head"](features)
                parts.append({k: tokens_on_grid(a.cpu().numpy(), own[k], grid) for k, a in attention.items()})
        return {BRANCH_NAMES[k]: attribute_weighted_attention(np.concatenate([p[k] for p in parts]),
                                                              attribute_weights, grid)
                for k in self.net["head"].branches}


def tokens_on_grid(attention: np.ndarray, own: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """[N, A, T] attention whose first own_H·own_W tokens lie on the branch's own grid and whose other tokens
    (fused) on the coarse `grid` → the same with the own tokens summed into the coarse cell each falls in,
    so every block tiles `grid` (what `attribute_weighted_attention` reads). Unchanged when the grids agree
    (the default halvings); with `channels-input-only` the fine branch's 2× grid is summed 2 × 2."""
    (oh, ow), (h, w) = own, grid
    if (oh, ow) == (h, w):
        return attention
    n, a, _ = attention.shape
    rows, cols = np.arange(oh) * h // oh, np.arange(ow) * w // ow
    target = (rows[:, None] * w + cols[None, :]).ravel()   # coarse cell of each own cell
    pooled = np.zeros((n, a, h * w), dtype=attention.dtype)
    np.add.at(pooled, (slice(None), slice(None), target), attention[:, :, :oh * ow])
    return np.concatenate([pooled, attention[:, :, oh * ow:]], axis=2)
