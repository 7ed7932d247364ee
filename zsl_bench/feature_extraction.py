"""Writing a feature store by extraction: a backbone's pooled vectors and maps of every image, streamed to
disk in batches with progress, resumable after an interruption from `.<name>.partial/` (store format:
features.py), and xlsa17's published vectors beside them where `extract.<D>.vectors` asks."""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, sha256_file, write_json
from zsl_bench.provenance import provenance, write_provenance

from zsl_bench.features import STORE_DTYPE, ExtractSpec, NpyRows
from zsl_bench.feature_import import write_res101


def xlsa17_vectors(spec: ExtractSpec, dataset) -> Path | None:
    """The res101.mat whose vectors the store serves to vector methods, or None for the backbone's own."""
    release = dataset.xlsa17_dir / "res101.mat" if dataset.xlsa17_dir is not None else None
    if spec.vectors == "backbone" or (spec.vectors == "auto" and (release is None or not release.is_file())):
        return None
    if release is None or not release.is_file():
        raise DataError(f"extract.{dataset.name}.vectors: xlsa17_res101, but {dataset.name} was not split by an "
                        "xlsa17 release (no res101.mat); use vectors: backbone")
    return release


def input_statistics(model, info: dict) -> tuple[tuple, tuple]:
    """The mean and std images are normalised with: a published model's own (timm's pretrained_cfg, CLIP's
    statistics), ImageNet's for a model trained here (what its training used)."""
    from zsl_bench.images import IMAGENET_MEAN, IMAGENET_STD

    cfg = getattr(model, "pretrained_cfg", None) or {}
    if info["spec"].get("source") == "train_on_seen" or "mean" not in cfg:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


def _stage_indices(model, levels: tuple[str, ...]) -> list[int]:
    modules = [f["module"] for f in model.feature_info]
    unknown = [lv for lv in levels if lv not in modules]
    if unknown:
        raise DataError(f"extract levels: the backbone has no stage or block {unknown}; it has {', '.join(modules)}")
    return [modules.index(lv) for lv in levels]


# Long on purpose: one streaming loop (prefetch, forward, positioned writes, resume bookkeeping) reads best whole.
def extract(dataset, backbone_dir: Path, out: Path, spec: ExtractSpec = ExtractSpec(), progress: bool = True,
            stop_after_batches: int | None = None, device: str = "cpu") -> Path:
    """Pooled vectors (and maps of `spec.levels`, and the last stage's maps at `spec.extra_sizes`) for every
    image, streamed to disk, resumable; xlsa17's vectors beside them when `spec.vectors` asks for them.

    On a GPU (`device` "cuda"), images are decoded by a pool of threads (one per core, at most 16) while the
    model runs on the previous batch, travel as pinned uint8 and are normalised there; a CNN runs channels-last
    with cuDNN autotuning. On the CPU the computation is the one it has always been (the same bytes).
    `stop_after_batches` interrupts on purpose (tests and benchmarks of resuming).
    """
    import torch
    from tqdm import tqdm

    from zsl_bench.backbone import load_backbone

    model, info = load_backbone(backbone_dir)
    size = spec.input_size or info["spec"]["input_size"]
    norm = input_statistics(model, info)
    load, run = _device_path(model, device, norm)
    vectors_from = xlsa17_vectors(spec, dataset)
    n = len(dataset.labels)
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    config = {"dataset_fingerprint": dataset.fingerprint(), "backbone": info, "spec": asdict(spec), "size": size}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    progress_file = partial / "progress.json"
    indices = _stage_indices(model, spec.levels) if spec.levels else []

    with torch.inference_mode():
        probe = model.forward_intermediates(run(torch.zeros(1, 3, size, size)), indices=indices or [len(model.feature_info) - 1],
                                            intermediates_only=True)
    shapes = {"pooled": (n, int(model.num_features))}
    shapes.update({lv: (n, *probe[i].shape[1:]) for i, lv in enumerate(spec.levels)})
    # Further sizes of the coarsest stored level (the last stage when no level is stored).
    last = indices[-1] if indices else len(model.feature_info) - 1
    extra = {s: f"{model.feature_info[last]['module']}@{s}" for s in spec.extra_sizes}
    for s, name in extra.items():
        with torch.inference_mode():
            grid = model.forward_intermediates(run(torch.zeros(1, 3, s, s)), indices=[last], intermediates_only=True)[0]
        shapes[name] = (n, *grid.shape[1:])

    start_row = 0
    if progress_file.is_file() and json.loads(progress_file.read_text()).get("config") == config_hash:
        start_row = json.loads(progress_file.read_text())["rows_done"]
        files = {k: NpyRows.open(partial / f"{k}.npy") for k in shapes}
    else:
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        files = {k: NpyRows.create(partial / f"{k}.npy", shape, STORE_DTYPE) for k, shape in shapes.items()}
    started = time.time()
    starts = list(range(start_row, n, spec.batch_size))

    def load_batch(lo):
        images = [dataset.image_path(r) for r in range(lo, min(lo + spec.batch_size, n))]
        return [load(images, s, spec.crop) for s in (size, *extra)]

    bar = tqdm(starts, desc=f"extract {'+'.join(shapes)}", unit="batch", disable=not progress)
    done_batches = 0
    # Decode the next batch in a thread while the model runs this one (PIL and torch release the GIL).
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(load_batch, starts[0]) if starts else None
        for i, lo in enumerate(bar):
            rows = range(lo, min(lo + spec.batch_size, n))
            x, *smaller = (run(t) for t in upcoming.result())
            if i + 1 < len(starts):
                upcoming = pool.submit(load_batch, starts[i + 1])
            if indices:
                final, maps = model.forward_intermediates(x, indices=indices)
                pooled = model.forward_head(final)
                for lv, m in zip(spec.levels, maps):
                    files[lv].write(lo, m.cpu().numpy())
            else:
                pooled = model(x)
            files["pooled"].write(lo, pooled.cpu().numpy())
            for name, xs in zip(extra.values(), smaller):
                grid = model.forward_intermediates(xs, indices=[last], intermediates_only=True)[0]
                files[name].write(lo, grid.cpu().numpy())
            _write_progress(progress_file, config_hash, lo + len(rows))
            done_batches += 1
            if stop_after_batches is not None and done_batches >= stop_after_batches and lo + len(rows) < n:
                raise KeyboardInterrupt(f"stopped on purpose after {done_batches} batches (resume by running again)")
    arrays = {k: {"file": f"{k}.npy", "format": "npy", "shape": list(f.shape), "dtype": np.dtype(STORE_DTYPE).name,
                  "sha256": sha256_file(f.path)} for k, f in files.items()}
    progress_file.unlink()
    if vectors_from is not None:
        arrays["xlsa17_res101"] = write_res101(dataset, vectors_from, partial)
    text_origin = {}
    if info["spec"].get("library") == "open_clip":
        text_origin = write_class_text(dataset, info["spec"], partial, arrays)
    write_json(partial / "index.json", {
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "backbone": {k: info.get(k) for k in ("arch", "pretraining_data", "trained_on")},
        "backbone_spec": info["spec"], "input_size": size,
        "resize": "whole image, bilinear, no crop" if spec.crop == "none" else "short side, bilinear, centre crop",
        "normalisation": {"mean": list(norm[0]), "std": list(norm[1])},
        "arrays": arrays, "levels": list(spec.levels),
        "vectors": "pooled" if vectors_from is None else "xlsa17_res101",
        "token_maps": is_token_model(model, [shapes[lv][1:] for lv in spec.levels]),
        **({"class_text": text_origin} if text_origin else {}),
    })
    write_provenance(partial, provenance(out.parent, time.time() - started, resumed_from_row=start_row))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(partial, out)
    return out


def _device_path(model, device: str, norm: tuple, pipelined: bool | None = None):
    """(load(paths, size, crop) → a batch as it leaves the loading thread, run(batch) → the model's input on
    `device`), with the model moved there. The CPU's pair is the original computation: normalised float32
    batches decoded one image after another. `pipelined` (default: on a GPU) decodes in a thread pool and
    normalises uint8 batches where the model runs (the same numbers: tests/test_features.py)."""
    import torch

    from zsl_bench.images import load_batch_for_backbone, load_rgb, load_rgb_center_crop, normalise

    cuda = str(device).startswith("cuda")
    if not (cuda if pipelined is None else pipelined):
        return (lambda paths, size, crop: load_batch_for_backbone(paths, size, crop, *norm)), (lambda x: x)
    from zsl_bench.clip_backbone import OpenClipBackbone

    channels_last = cuda and not (hasattr(model, "patch_embed") or isinstance(model, OpenClipBackbone))
    model.to(device)
    if channels_last:   # a CNN on a GPU: cuDNN's fastest layout, autotuned (one input size per call site)
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    decoders = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))   # PIL decodes without the GIL

    def load(paths, size, crop):
        one = load_rgb if crop == "none" else load_rgb_center_crop
        batch = torch.from_numpy(np.stack(list(decoders.map(lambda p: one(p, size), paths)))).permute(0, 3, 1, 2)
        return batch.pin_memory() if cuda else batch   # uint8: a quarter of the bytes to copy

    def run(batch):
        if batch.dtype != torch.uint8:   # the shape probes
            return batch.to(device)
        x = normalise(batch.to(device, non_blocking=True), *norm)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return load, run


def is_token_model(model, level_shapes) -> bool:
    """Whether the maps are a token model's patch tokens (open_clip's tower, a timm ViT: `patch_embed`, every
    level of one width on one grid), not a CNN's layers; what `Method.requires_token_maps` asks of a store."""
    from zsl_bench.clip_backbone import OpenClipBackbone

    one_grid = len({tuple(s) for s in level_shapes}) <= 1
    return isinstance(model, OpenClipBackbone) or (hasattr(model, "patch_embed") and one_grid)


def write_class_text(dataset, spec: dict, folder: Path, arrays: dict) -> dict:
    """A CLIP backbone's class text embeddings (zsl_bench.clip_text.class_text_embeddings, the same model's
    text tower) as `class_text@<kind>.npy` in `folder`, entered in `arrays`; returns each kind's origin."""
    from zsl_bench.clip_text import ClipModelSpec, class_text_embeddings, load_clip_text
    from zsl_bench.features import CLASS_TEXT

    encoder = load_clip_text(ClipModelSpec(spec["arch"], spec.get("pretrained_tag"), spec.get("weights_file")))
    origins = {}
    for kind, (rows, origin) in class_text_embeddings(dataset, encoder).items():
        name = f"{CLASS_TEXT}{kind}"
        np.save(folder / f"{name}.npy", rows.astype(np.float32))
        arrays[name] = {"file": f"{name}.npy", "format": "npy", "shape": list(rows.shape), "dtype": "float32",
                        "sha256": sha256_file(folder / f"{name}.npy")}
        origins[kind] = origin   # model, weights, template set and version, and the texts encoded
    return origins


def _write_progress(path: Path, config_hash: str, rows_done: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config_hash, "rows_done": rows_done}))
    os.replace(tmp, path)
