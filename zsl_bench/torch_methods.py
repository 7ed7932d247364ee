"""Torch plumbing every torch method plugin shares (the core never imports this module; methods never import
each other):
- `TorchMethod`: a torch network built at `fit` (under the fit's seed), rebuilt by `load_state_dict`,
  scored in batches, saved as a plain tensor dict, with a parameter count;
- `level_backbone`: a timm ResNet returning its layer2/3/4 outputs (image mode: fine-tuned end to end);
- data-order and optimizer helpers (`epoch_batches`, `class_balanced_batches`, `make_optimizer`, ...).
The two families of map methods build on it in map_families.py.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from zsl_bench.io import DataError
from zsl_bench.method import PARAMETER_COUNT, ClassSemantics, Method


# --- data order, optimizers, scoring ----------------------------------------------------------------
def torch_generator(seed: int):
    """Seed torch's global stream (dropout, init) and return a generator for data order."""
    import torch

    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def part_stream(*key):
    """A context in which a network part is initialised from its own stream, derived from the current torch
    seed (the fit's) and `key`, leaving the global stream as it was. An ablation variant that adds, drops or
    reshapes one part then starts every other part from the same weights as the official configuration, so
    the paired difference is the switch's, not a reshuffled initialisation's."""
    import torch

    from zsl_bench.runtime import seed_hash

    base = torch.initial_seed()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_hash(base, *key))
        yield


def epoch_batches(n: int, batch_size: int, rng) -> list:
    """One epoch of shuffled index batches (every sample once)."""
    order = rng.permutation(n)
    return [order[lo:lo + batch_size] for lo in range(0, n, batch_size)]


def class_balanced_batches(labels, n_batches: int, classes_per_batch: int, shots: int, rng) -> list:
    """Episodes of `classes_per_batch` distinct classes × `shots` images each (TransZero's balanced
    sampler for SUN/AWA2 is shots = 1; Mg-MRN's ways × shots sampler is the general case)."""
    labels = np.asarray(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    classes = np.array(sorted(by_class))
    ways = min(classes_per_batch, len(classes))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(classes, ways, replace=False)
        batches.append(np.concatenate([rng.choice(by_class[c], shots, replace=len(by_class[c]) < shots)
                                       for c in chosen]))
    return batches


def score_in_batches(x, score_batch, batch_size: int = 256):
    """Run `score_batch(blocks) -> np.ndarray` over a MapView (or an array) and stack the results."""
    if hasattr(x, "batches"):
        return np.concatenate([score_batch(blocks) for _, blocks in x.batches(batch_size)])
    return np.concatenate([score_batch([x[lo:lo + batch_size]]) for lo in range(0, len(x), batch_size)])


def scaled_cosine(pred, att, scale: float, eps: float):
    """scale · cos(pred_b, att_c) [B, K], each vector divided by (its norm + eps) (GEM-ZSL: 1e-5, ReZSL: 1e-10)."""
    unit = lambda v: v / (v.norm(dim=1, keepdim=True) + eps)  # noqa: E731
    return scale * unit(pred.float()) @ unit(att.float()).T


def resize_crop_transform(size: int, train: bool):
    """GEM-ZSL's image transform (ReZSL data_transform.py; Mg-MRN's too): training resizes the short side to
    size·8/7, takes a random size×size crop and a random horizontal flip; evaluation resizes the short side to
    `size` and takes the central crop. PIL image → 3×size×size uint8 tensor (normalised later, per batch)."""
    from torchvision.transforms import v2

    steps = ([v2.Resize(int(size * 8 / 7)), v2.RandomCrop(size), v2.RandomHorizontalFlip(0.5)] if train
             else [v2.Resize(size), v2.CenterCrop(size)])
    return v2.Compose([*steps, v2.PILToTensor()])


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.0):
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r} (adam, sgd, rmsprop)")


# --- torch methods -----------------------------------------------------------------------------------

class TorchMethod(Method):
    capabilities = frozenset({PARAMETER_COUNT})
    net = None

    def build_net(self):
        """The nn.Module for `self.hparams` and `self.task` (subclasses)."""
        raise NotImplementedError

    def image_transform(self, size: int, train: bool):
        """How this method reads an image when it trains a backbone (`input_kind` image): PIL image → uint8
        tensor, its training (augmented) or evaluation form. Default: GEM-ZSL's (`resize_crop_transform`)."""
        return resize_crop_transform(size, train)

    @property
    def torch_device(self):
        import torch

        return torch.device(self.device)

    def attribute_embedding(self) -> np.ndarray:
        kind = self.hparams["attribute_embedding"]
        if kind not in self.task.attribute_embeddings:
            why = self.task.attribute_embeddings_unavailable.get(kind)
            raise DataError(f"{self.name} needs the '{kind}' attribute embedding of {self.task.dataset}; "
                            + (f"the prepare stage could not make it ({why}); fix that and rerun `dvc repro`" if why
                               else f"add it to sources.{self.task.dataset}.attribute_embeddings in params.yaml")
                            + f" (available: {sorted(self.task.attribute_embeddings) or 'none'}; or set the method's "
                            "attribute_embedding hyperparameter to one of those)")
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

    def parameter_count(self) -> dict:
        """Learned values (trainable parameters) and the state entries that are not trained: registered
        buffers (word vectors kept fixed) and parameters with requires_grad False."""
        trainable = {n: p for n, p in self.net.named_parameters() if p.requires_grad}
        return {"learned": int(sum(p.numel() for p in trainable.values())),
                "fixed": sorted(k for k in self.net.state_dict() if k not in trainable)}




# --- image backbone with level outputs ----------------------------------------------------------------

def level_backbone(arch: str, pretrained: bool, weights_file: str | None = None):
    """A timm ResNet (nn.Module) whose forward returns {1: layer2, 2: layer3, 3: layer4} outputs and whose
    `channels` are their widths; `weights_file` loads local weights (machines without internet)."""
    import torch.nn as nn

    class LevelBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            import timm

            kwargs = {"pretrained_cfg_overlay": {"file": weights_file}} if weights_file else {}
            self.net = timm.create_model(arch, pretrained=pretrained or bool(weights_file), num_classes=0, **kwargs)
            modules = [f["module"] for f in self.net.feature_info]
            self.indices = [modules.index(name) for name in ("layer2", "layer3", "layer4")]
            self.channels = tuple(self.net.feature_info[i]["num_chs"] for i in self.indices)

        def forward(self, images):
            c3, c4, c5 = self.net.forward_intermediates(images, indices=self.indices, intermediates_only=True)
            return {1: c3, 2: c4, 3: c5}

    return LevelBackbone()


def token_backbone(arch: str, pretrained: bool, weights_file: str | None = None, **model_kwargs):
    """A timm ViT (nn.Module) built with `dynamic_img_size=True`, whose forward(images, indices) returns the
    patch tokens of the blocks `indices` as [B, C, H, W] grids on the patch grid (class/register tokens
    dropped, no final norm); `net` is the timm model itself (for a method that runs its parts in its own
    order), `channels` its width; `weights_file` loads local weights, `model_kwargs` go to timm."""
    import torch.nn as nn

    class TokenBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            import timm

            kwargs = {"pretrained_cfg_overlay": {"file": weights_file}} if weights_file else {}
            self.net = timm.create_model(arch, pretrained=pretrained or bool(weights_file), num_classes=0,
                                         dynamic_img_size=True, **kwargs, **model_kwargs)
            self.channels = int(self.net.embed_dim)

        def forward(self, images, indices):
            return self.net.forward_intermediates(images, indices=list(indices), norm=False, output_fmt="NCHW",
                                                 intermediates_only=True)

    return TokenBackbone()
