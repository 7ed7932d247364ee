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

from zsl_bench.blocks import (TorchMethod, attribute_weighted_attention, class_balanced_batches, level_backbone,
                              make_optimizer, torch_generator)
from zsl_bench.method import ATTENTION_MAPS, PARAMETER_COUNT, ClassSemantics, FitContext, TrainData, PaperRule

# Mg-MRN:config/<ds>_16w_2s_AttentionNet.yaml (methods.md §4.4).
COMMON = {
    "mode": "maps", "semantics": "original", "attribute_embedding": "w2v", "width": 1.0, "parts": 5,
    "levels": 3, "fusion": "one-way", "grouping": "official", "stop_gradient": True, "update": "sequential",
    "inference": "sum", "zero_grad": "none", "lr_step_at_epoch_start": True, "optimizer": "sgd",
    "momentum": 0.9, "weight_decay": 1e-5, "lr_step": 10, "batches_per_epoch": 300, "epochs": 30,
    "lambda_cls": 1.0, "image_size": 448, "backbone": "resnet101.tv_in1k", "pretrained": True,
    "weights_file": None, "eval_batch_size": 32,   # the official test batch
}
PAPER = {
    "CUB": {"ways": 8, "shots": 2, "lr": 5e-4, "lr_gamma": 0.1, "scale": 20.0, "lambda_reg": 0.1},
    "SUN": {"ways": 8, "shots": 2, "lr": 5e-4, "lr_gamma": 0.5, "scale": 25.0, "lambda_reg": 1.0},
    "AWA2": {"ways": 16, "shots": 2, "lr": 5e-5, "lr_gamma": 0.5, "scale": 20.0, "lambda_reg": 1.0},
}
# The embedded default: CUB's setting scaled to 1,000 images of 128 px maps on a CPU (README).
SYNTHETIC = {**PAPER["CUB"], "width": 1 / 32, "epochs": 6, "lr_step": 3, "lr": 5e-3, "batches_per_epoch": 0,
             "attribute_embedding": "minilm", "image_size": 64, "backbone": "resnet10t", "pretrained": False,
             "eval_batch_size": 256}


VARIANTS = {   # named ablations, one switch each from the official configuration, and the image mode
    "levels1": {"levels": 1}, "levels2": {"levels": 2},
    "fusion-none": {"fusion": "none"}, "fusion-mutual": {"fusion": "mutual"},
    "grouping-identity": {"grouping": "identity"}, "grouping-decoupled": {"grouping": "decoupled"},
    "stopgrad-off": {"stop_gradient": False}, "update-joint": {"update": "joint"},
    "image": {"mode": "image", "input_kind": "image"},
}
BRANCH_NAMES = {1: "fine (layer2)", 2: "mid (layer3)", 3: "coarse (layer4)"}   # model.py's numbering
# Inference per branch changes no weight: read off the official run's own checkpoints (same models).
SCORE_VARIANTS = {"inference-fine": {"inference": "branch1"}, "inference-mid": {"inference": "branch2"},
                  "inference-coarse": {"inference": "branch3"}}


class MgMRN(TorchMethod):
    input_kind = "maps"
    uses_unseen_semantics = False   # trained on seen classes only; unseen rows appear at inference only
    paper = "Wang et al., arXiv 2511.08163"
    paper_rule = PaperRule(checkpoint="test", calibration="test-grid", separately=("T1", "H", "AUSUC"),
                           source="NingWang2049/Mg-MRN train.py + inferencer.py cal_AUSUC: γ in 0.01 steps on test")
    capabilities = frozenset({ATTENTION_MAPS, PARAMETER_COUNT})
    profiles = {**{ds: {**COMMON, **p} for ds, p in PAPER.items()}, "synthetic": {**COMMON, **SYNTHETIC}}
    variants = VARIANTS
    score_variants = SCORE_VARIANTS

    def build_net(self):
        import torch.nn as nn

        from methods.mgmrn.model import MgMRNHead

        hp = self.hparams
        backbone = None
        if hp["mode"] == "image":
            backbone = level_backbone(hp["backbone"], hp["pretrained"], hp["weights_file"])
            channels = backbone.channels
        else:
            channels = tuple(shape[0] for shape in self.task.input_shapes)
        head = MgMRNHead(channels, self.attribute_embedding(), hp["width"], hp["levels"], hp["fusion"],
                         hp["grouping"], hp["stop_gradient"], hp["parts"])
        return nn.ModuleDict({"backbone": backbone, "head": head} if backbone else {"head": head})

    # --- inputs ----------------------------------------------------------------------------------------
    def inputs(self, x, positions, rng=None):
        """One batch as read once: images (training transform when `rng` is given) or frozen maps."""
        if self.hparams["mode"] == "image":
            return x.read(positions, self.hparams["image_size"], train=rng is not None, rng=rng).to(self.torch_device)
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
        for epoch in range(1, hp["epochs"] + 1):
            if hp["lr_step_at_epoch_start"]:
                with warnings.catch_warnings():   # torch warns about stepping before optimizer.step(): intended
                    warnings.simplefilter("ignore", UserWarning)
                    sched.step()   # official: at the start of each epoch, so the LR decays one epoch early
            self.net.train()
            for idx in class_balanced_batches(train.y, per_epoch, hp["ways"], hp["shots"], rng):
                y = torch.as_tensor(train.y[idx], device=self.torch_device)
                batch = self.inputs(train.x, idx, rng)
                if hp["update"] == "sequential":   # a fresh forward and one step per branch, fine to coarse
                    for k in self.net["head"].branches:
                        scores, _ = self.net["head"](self.features(batch), only=k)
                        loss = self.losses(scores, y, seen_att)[k]
                        opt.zero_grad(set_to_none=set_to_none)
                        loss.backward()
                        opt.step()
                else:
                    scores, _ = self.net["head"](self.features(batch))
                    loss = sum(self.losses(scores, y, seen_att).values())
                    opt.zero_grad(set_to_none=set_to_none)
                    loss.backward()
                    opt.step()
            if not hp["lr_step_at_epoch_start"]:
                sched.step()
            ctx.evaluate(epoch)

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
                _, attention = self.net["head"](features)
                parts.append({k: a.cpu().numpy() for k, a in attention.items()})
        return {BRANCH_NAMES[k]: attribute_weighted_attention(np.concatenate([p[k] for p in parts]),
                                                              attribute_weights, grid)
                for k in self.net["head"].branches}
