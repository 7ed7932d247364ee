"""The feature backbone of a dataset: a pretrained timm model, or one trained here on seen classes.

Real datasets use ImageNet weights (`resnet101.tv_in1k`), from the hub or from a local weight file.
No weights can be downloaded for the embedded default, so its backbone is a small timm CNN trained
from scratch on the images of the validation fold's train classes only (`foldK_train`): never on
validation-unseen, val_seen, test or unseen-class images, so every zero-shot split stays zero-shot
for the features too. `backbone.json` says which images trained it; every run records it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, atomic_directory, read_json, write_json
from zsl_bench.provenance import provenance, write_provenance

WEIGHTS_FILE = "weights.pt"
SOURCES = {
    "train_on_seen": "a timm model trained here on the validation fold's train images (embedded default)",
    "pretrained": "timm weights from the hub, or from `weights_file` offline; features extracted here",
    "xlsa17_res101": "the published xlsa17 res101.mat vectors (Caffe ResNet-101, ImageNet-1k), imported",
    "hdf5": "a DAZLE/TransZero feature-map HDF5 file (`features_file`), read lazily",
}
# A published source is what it is, whatever params.yaml's arch says (it may still name the backbone
# the images would use): recorded from here.
PUBLISHED = {"xlsa17_res101": {"arch": "resnet101 (Caffe; the xlsa17 release's res101.mat, 224 px, no crop)",
                               "pretraining_data": "imagenet-1k"}}
_TRAINING = ("input_size", "epochs", "batch_size", "lr", "weight_decay", "optimizer", "seed", "fold", "precision")
PRECISIONS = {"fp32": "float32 (the default)",
              "fp64": "float64 training (weights stored as float32): another CPU's rounding stays below float32's "
                      "resolution instead of being amplified by training (regress/params.yaml)"}
# The spec fields that mean something for each source: only those are recorded (backbone.json, index.json).
APPLIES = {"train_on_seen": ("arch", "model_kwargs", "source", "pretraining_data", *_TRAINING),
           "pretrained": ("arch", "library", "pretrained_tag", "model_kwargs", "source", "pretraining_data",
                          "weights_file", "input_size"),
           "xlsa17_res101": ("source",),
           "hdf5": ("arch", "source", "pretraining_data", "features_file")}


LIBRARIES = {"timm": "timm.create_model(arch): CNNs and ViTs (ViT, DeiT, DINOv2, timm's CLIP image towers)",
             "open_clip": "open_clip's image tower of model `arch` with weights `pretrained_tag` (CLIP)"}
OPTIMIZERS = ("sgd", "adamw")   # train_on_seen: SGD + Nesterov for CNNs, AdamW for ViTs (they train badly with SGD)


@dataclass(frozen=True)
class BackboneSpec:
    arch: str = "resnet10t"
    library: str = "timm"               # see LIBRARIES
    # open_clip: the weights' tag (e.g. openai, laion2b_s34b_b88k)
    pretrained_tag: str | None = field(default=None, metadata={"schema": (str, type(None))})
    # Further keyword arguments of the model's constructor (timm: e.g. {patch_size: 8, depth: 6}).
    model_kwargs: dict = field(default_factory=dict, metadata={"schema": dict})
    source: str = "train_on_seen"       # see SOURCES
    weights_file: str | None = None     # local weights for "pretrained" (offline use)
    features_file: str | None = None    # the DAZLE/TransZero HDF5 file for "hdf5"
    pretraining_data: str = "none"      # e.g. "imagenet-1k"; recorded with every result
    input_size: int = 64
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-4
    optimizer: str = "sgd"              # see OPTIMIZERS
    seed: int = 0
    fold: int = 1
    precision: str = "fp32"             # see PRECISIONS

    @classmethod
    def from_params(cls, params: dict, where: str = "backbone") -> "BackboneSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise DataError(f"params.yaml: unknown {where} parameters {sorted(unknown)}; known: {sorted(known)}")
        spec = cls(**{k: (dict(v or {}) if k == "model_kwargs" else v) for k, v in params.items()})
        for key, allowed in (("source", SOURCES), ("library", LIBRARIES), ("optimizer", OPTIMIZERS),
                             ("precision", PRECISIONS)):
            if getattr(spec, key) not in allowed:
                raise DataError(f"params.yaml: {where}.{key} must be one of {', '.join(allowed)}, "
                                f"not {getattr(spec, key)!r}")
        if spec.source == "hdf5" and not spec.features_file:
            raise DataError(f"params.yaml: {where}: source 'hdf5' needs features_file: the path of the HDF5 file")
        if spec.library == "open_clip" and spec.source != "pretrained":
            raise DataError(f"params.yaml: {where}: library open_clip serves source 'pretrained' only")
        return spec

    def applicable(self) -> dict:
        """The fields that apply to this source (what backbone.json records): an imported source has no
        training settings, a trained one no weight file."""
        return {**{k: v for k, v in asdict(self).items() if k in APPLIES[self.source]
                   and not (k == "precision" and v == "fp32")},   # backbone.json as before the option existed
                **PUBLISHED.get(self.source, {})}


def _augment(batch, size: int, generator, dtype=None):
    """Random resized crop (scale 0.7–1) and horizontal flip, on a uint8 N×H×W×3 batch → N×3×s×s (computed
    in `dtype`, default float32)."""
    import torch
    import torch.nn.functional as F

    from zsl_bench.images import to_normalised_tensor

    x = to_normalised_tensor(batch)
    x = x if dtype is None else x.to(dtype)
    n, _, h, w = x.shape
    out = torch.empty(n, 3, size, size, dtype=x.dtype)
    scales = torch.empty(n).uniform_(0.7, 1.0, generator=generator).sqrt()
    for i in range(n):
        ch, cw = int(h * scales[i]), int(w * scales[i])
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def create_timm_model(spec: BackboneSpec, pretrained: bool, num_classes: int = 0, **overlay):
    """timm's model of `spec.arch` with `spec.model_kwargs`. A token model (ViT, DeiT, DINOv2, CLIP towers)
    is built to take any input size (`dynamic_img_size`: its position embedding resampled to the grid), so
    it extracts at other sizes than it was trained or published at; a CNN takes any size anyway."""
    import timm

    from zsl_bench.io import DataError

    if spec.arch not in timm.list_models(pretrained=False) and spec.arch.split(".")[0] not in timm.list_models():
        raise DataError(f"params.yaml: backbone arch {spec.arch!r}: timm has no such model (`timm.list_models("
                        f"'*{spec.arch.split('.')[0].split('_')[0]}*')` lists its relatives)")
    kwargs = {**spec.model_kwargs, "num_classes": num_classes, **overlay}
    try:
        return timm.create_model(spec.arch, pretrained=pretrained, dynamic_img_size=True, **kwargs)
    except TypeError:   # not a token model: CNNs have no such argument
        return timm.create_model(spec.arch, pretrained=pretrained, **kwargs)


def train_backbone(dataset, spec: BackboneSpec, out: Path, progress: bool = True) -> Path:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from zsl_bench.images import load_batch

    rows = dataset.splits[f"fold{spec.fold}_train"]
    classes = np.unique(dataset.labels[rows])
    target = torch.as_tensor(np.searchsorted(classes, dataset.labels[rows]))
    # Images are small: hold them decoded in memory, a little larger than the crop.
    pixels = load_batch([dataset.image_path(r) for r in rows], int(spec.input_size * 1.15))

    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    dtype = torch.float64 if spec.precision == "fp64" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)   # fp64: initialised in float64 too (float32's vectorised sampler is CPU-specific)
    try:
        model = create_timm_model(spec, pretrained=False, num_classes=len(classes))
    finally:
        torch.set_default_dtype(previous)
    if spec.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay,
                              nesterov=True)
    steps_per_epoch = int(np.ceil(len(rows) / spec.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch,
                                                pct_start=0.15)
    start, history = time.time(), []
    bar = tqdm(range(spec.epochs), desc=f"backbone {spec.arch}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(rows), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * spec.batch_size:(b + 1) * spec.batch_size]
            x = _augment(pixels[idx.numpy()], spec.input_size, generator, dtype)
            logits = model(x)
            loss = F.cross_entropy(logits, target[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += len(idx)
            correct += int((logits.argmax(1) == target[idx]).sum())
            loss_sum += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch + 1, "loss": loss_sum / total, "train_acc": correct / total})
        bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")

    with atomic_directory(out) as tmp:
        model.reset_classifier(0)
        torch.save(model.float().state_dict(), tmp / WEIGHTS_FILE)
        write_json(tmp / "backbone.json", {
            "spec": spec.applicable(), "arch": spec.arch, "pretraining_data": "none",
            "trained_on": {"dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
                           "split": f"fold{spec.fold}_train", "n_images": int(len(rows)),
                           "classes": classes.tolist(),
                           "excluded": "val_seen, val_unseen, test_seen, test_unseen and all unseen-class images"},
            "history": history, "n_params": int(sum(p.numel() for p in model.parameters())),
        })
        write_provenance(tmp, provenance(out.parent, time.time() - start))
    return out


def describe_untrained(spec: BackboneSpec, out: Path) -> Path:
    """Nothing is trained for the other sources: record what extraction will load or import."""
    with atomic_directory(out) as tmp:
        recorded = spec.applicable()
        write_json(tmp / "backbone.json", {"spec": recorded, "arch": recorded.get("arch", spec.arch),
                                           "pretraining_data": recorded.get("pretraining_data"),
                                           "source": SOURCES[spec.source], "trained_on": None})
    return out


def load_backbone(folder: Path):
    """The frozen feature extractor (classifier removed, eval mode) and its description. Every backbone, a
    timm model or open_clip's image tower, answers timm's feature interface: `feature_info` (its stages or
    blocks), `forward_intermediates` (maps of chosen stages, a token model's patch tokens as a grid without
    its class and register tokens), `forward_head` (the pooled vector) and `num_features`."""
    import torch

    info = read_json(Path(folder) / "backbone.json")
    spec = BackboneSpec.from_params(info["spec"])
    if spec.source not in ("train_on_seen", "pretrained"):
        raise ValueError(f"{folder}: backbone source {spec.source!r} has no model to run; its features are imported")
    if spec.library == "open_clip":
        from zsl_bench.clip_backbone import open_clip_backbone

        return open_clip_backbone(spec).eval(), info
    if spec.source == "train_on_seen":
        model = create_timm_model(spec, pretrained=False)
        model.load_state_dict(torch.load(Path(folder) / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    elif spec.weights_file:
        path = Path(spec.weights_file).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"params.yaml: backbone weights_file {path}: no such file")
        try:
            model = create_timm_model(spec, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        except RuntimeError as e:   # a state dict of another architecture: shapes
            raise DataError(f"{path}: not weights of {spec.arch} ({str(e).splitlines()[0][:200]})") from None
        # timm loads a weights file leniently (unknown keys warned about, missing ones left at random): every
        # tensor of the model must come from the file.
        from timm.models import load_state_dict

        missing = sorted(set(model.state_dict()) - set(load_state_dict(str(path))))
        if missing:
            raise DataError(f"{path}: not weights of {spec.arch} ({len(missing)} of its {len(model.state_dict())} "
                            f"tensors missing, e.g. {', '.join(missing[:3])})")
    else:
        try:
            model = create_timm_model(spec, pretrained=True)
        except (OSError, RuntimeError, ValueError) as e:   # offline: the hub cannot be reached
            raise DataError(f"params.yaml: backbone {spec.arch}: its weights could not be had "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else 'no message'}); "
                            "offline, download them once and set `weights_file` to the local file") from None
    return model.eval(), info
