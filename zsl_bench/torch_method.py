"""Plumbing shared by methods written in torch: the network is built at `fit` (under the fit's seed),
rebuilt for `load_state_dict`, scored in batches, and saved as a plain tensor dict."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsl_bench.io import DataError
from zsl_bench.method import ClassSemantics, FitContext, Method, TrainData
from zsl_bench.training import epoch_batches, make_optimizer, score_in_batches, torch_generator


class TorchMethod(Method):
    net = None

    def build_net(self):
        """The nn.Module for `self.hparams` and `self.task` (subclasses)."""
        raise NotImplementedError

    @property
    def torch_device(self):
        import torch

        return torch.device(self.device)

    def attribute_embedding(self) -> np.ndarray:
        kind = self.hparams["attribute_embedding"]
        if kind not in self.task.attribute_embeddings:
            raise DataError(f"{self.name} needs the '{kind}' attribute embedding of {self.task.dataset}; add it to "
                            f"sources.{self.task.dataset}.attribute_embeddings in params.yaml "
                            f"(available: {sorted(self.task.attribute_embeddings) or 'none'})")
        return self.task.attribute_embeddings[kind]

    def class_matrix(self, semantics: ClassSemantics) -> np.ndarray:
        """The class-attribute matrix this method reads (hparam `semantics`: att | original)."""
        matrix = semantics.original if self.hparams.get("semantics", "att") == "original" else semantics.att
        if self.hparams.get("clamp_negative_attributes", False):
            matrix = np.maximum(matrix, 0.0)  # AWA2's −1 cells, as DAZLE/TransZero load them
            matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return matrix

    def tensor(self, array, dtype=None):
        import torch

        return torch.as_tensor(np.asarray(array), dtype=dtype or torch.float32, device=self.torch_device)

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.net = self.build_net().to(self.torch_device)
        self.net.load_state_dict(state)


class AllClassMapMethod(TorchMethod):
    """DAZLE and TransZero: one map level in, `loss(maps, y, AllClassTargets)` minimised with one optimizer
    step per batch, every epoch a checkpoint; `self.net(maps, class_att)` returns class scores first."""

    def loss(self, maps, y, targets: "AllClassTargets"):
        raise NotImplementedError

    def batches(self, y: np.ndarray, rng) -> list:
        """One epoch's batches of indices (default: a shuffled pass in `batch_size` chunks)."""
        return epoch_batches(len(y), self.hparams["batch_size"], rng)

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        import torch

        hp = self.hparams
        torch_generator(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self.net = self.build_net().to(self.torch_device)
        targets = AllClassTargets.build(self, train.semantics, ctx.unseen_semantics(), hp["logit_offset"])
        opt = make_optimizer(hp["optimizer"], [p for p in self.net.parameters() if p.requires_grad], hp["lr"],
                             hp["weight_decay"], hp["momentum"])
        for epoch in range(1, hp["epochs"] + 1):
            self.net.train()
            for idx in self.batches(train.y, rng):
                loss = self.loss(self.tensor(train.x.read(idx)[0]),
                                 torch.as_tensor(train.y[idx], device=self.torch_device), targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            ctx.evaluate(epoch)

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
