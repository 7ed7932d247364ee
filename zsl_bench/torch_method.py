"""Plumbing shared by methods written in torch: the network is built at `fit` (under the fit's seed),
rebuilt for `load_state_dict`, scored in batches, and saved as a plain tensor dict."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsl_bench.io import DataError
from zsl_bench.method import ClassSemantics, Method


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
