"""CLIP text semantics through open_clip: the one place where text meets a CLIP text tower.

- `load_clip_text(spec)` → `ClipText`: a frozen text tower and its tokenizer; `encode` gives unit-norm rows.
- `prompt_embeddings(phrases, encoder, prompts)`: CLIP's prompt ensembling — each phrase through every
  template, each embedding L2-normalised, their mean normalised again. Class names (`class_name_embeddings`)
  and the `clip` attribute embedding (attribute_embeddings.py) both go through it.
- `open_clip_image_tower(...)`: the same model's image tower and its preprocessing, for the feature backbone.

Weights are an open_clip model name and pretrained tag (default ViT-B-16 / openai), taken from the user's
`weights_file`, else from the download cache, else from the hub (never with HF_HUB_OFFLINE set: then a
missing file is a DataError saying what to download and that `weights_file` takes it). A weights_file of a
known tag is built with that tag's activation (QuickGELU for openai) and preprocessing, as the tag would be.

Prompts are zsl_bench/prompts/clip_templates.json: a version, its sources, named template sets. The defaults
name no dataset, on purpose: one attribute template ("a photo of something with {}.") and, for class names,
the 7 templates CLIP's authors selected on ImageNet; a phrase gets one vector whatever dataset it comes from.
The file's other sets (CLIP's 80 ImageNet templates, its SUN397 and Birdsnap prompts) are chosen by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError

TEMPLATES_FILE = Path(__file__).parent / "prompts" / "clip_templates.json"
DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-16", "openai"
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class ClipModelSpec:
    model: str = DEFAULT_MODEL                 # an open_clip model name (open_clip.list_models())
    pretrained: str = DEFAULT_PRETRAINED       # its weights' tag (open_clip.list_pretrained_tags_by_model)
    weights_file: str | Path | None = None     # a local open_clip checkpoint of those weights (offline use)


# ---------------------------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class Prompts:
    """One named template set of the prompt file; every template holds one `{}`."""
    name: str
    templates: tuple[str, ...]
    version: str

    def origin(self) -> dict:
        # The digest catches an edit of the file that forgot to bump its version.
        digest = hashlib.sha256("\n".join(self.templates).encode()).hexdigest()[:16]
        return {"templates": self.name, "templates_version": self.version, "templates_digest": digest}


def _is_template(t) -> bool:
    rest = t.replace("{}", "", 1) if isinstance(t, str) else ""
    return isinstance(t, str) and "{}" in t and "{" not in rest and "}" not in rest


def read_prompt_file(path: Path = TEMPLATES_FILE) -> dict:
    """The prompt file, checked: {"version": str, "defaults": {"class_names": set, "attributes": set},
    "templates": {set: [template with one {}, ...]}}."""
    path = Path(path)
    allowed = ('a JSON object {"version": "...", "defaults": {"class_names": <set>, "attributes": <set>}, '
               '"templates": {<set>: ["a photo of a {}.", ...]}}')
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such prompt-template file; expected {allowed}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable as JSON ({e}); expected {allowed}") from None
    sets = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(sets, dict) or not sets or not isinstance(data.get("version"), str) or not data["version"]:
        raise DataError(f"{path}: needs a non-empty 'version' string and 'templates'; expected {allowed}")
    for name, templates in sets.items():
        if not isinstance(templates, list) or not templates or not all(map(_is_template, templates)):
            raise DataError(f"{path}: templates.{name} must be a non-empty list of strings with exactly one '{{}}' "
                            "each and no other braces, e.g. \"a photo of a {}.\"")
    defaults = data.get("defaults")
    if not isinstance(defaults, dict) or any(defaults.get(k) not in sets for k in ("class_names", "attributes")):
        raise DataError(f"{path}: defaults.class_names and defaults.attributes must name sets of 'templates' "
                        f"({', '.join(sets)})")
    return data


def load_prompts(name: str | None = None, path: Path = TEMPLATES_FILE, *, for_attributes: bool = False) -> Prompts:
    """A template set by name; None: the file's default for class names (or attributes)."""
    data = read_prompt_file(path)
    name = name or data["defaults"]["attributes" if for_attributes else "class_names"]
    if name not in data["templates"]:
        raise DataError(f"{path}: no template set {name!r}; known: {', '.join(data['templates'])}")
    return Prompts(name, tuple(data["templates"][name]), data["version"])


def clean_class_name(name: str) -> str:
    """xlsa17's class names as words, one rule for CUB, AWA2 and SUN: `001.Black_footed_Albatross` →
    `Black footed Albatross`, `grizzly+bear` → `grizzly bear`, `forest_broadleaf` → `forest broadleaf`."""
    text = re.sub(r"^\d+\.", "", name.strip())
    return re.sub(r"\s+", " ", re.sub(r"[_+]", " ", text)).strip()


# ---------------------------------------------------------------------------------------------- models

def _offline() -> bool:
    # Read at call time: huggingface_hub reads it once, at its import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_location(tag_cfg: dict) -> str:
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        return f"https://huggingface.co/{repo} ({filename or 'open_clip_model.safetensors'})"
    return tag_cfg.get("url", "")


def _cached(tag_cfg: dict, cache_dir: Path | None) -> str | None:
    """A tag's weights already downloaded (open_clip's hub or URL cache), found without the network."""
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        # open_clip's order: a .safetensors twin first, then the named (or default) pickle
        names = ([filename[:-4] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename]
                 ) if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        file = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(tag_cfg["url"])
        if file.is_file():
            return str(file)
    return None


def _weights(spec: ClipModelSpec, tag_cfg: dict, cache_dir: Path | None) -> tuple[str, str]:
    """(local weights file, where it came from): the user's file, the cache, or a download."""
    what = f"open_clip {spec.model} ({spec.pretrained})"
    if spec.weights_file:
        file = Path(spec.weights_file).expanduser()
        if not file.is_file():
            raise DataError(f"{what}: weights_file {file}: no such file")
        return str(file), f"file {file.name}"
    if not tag_cfg:
        import open_clip

        known = open_clip.list_pretrained_tags_by_model(spec.model)
        raise DataError(f"{what}: open_clip knows no such pretrained tag for {spec.model} (known: "
                        f"{', '.join(known) or 'none'}); or set weights_file to a local checkpoint")
    where = _hub_location(tag_cfg)
    if found := _cached(tag_cfg, cache_dir):
        return found, where
    if _offline():
        raise DataError(f"{what}: weights not downloaded and HF_HUB_OFFLINE is set; download them once from {where} "
                        "and set weights_file to the local file")
    import open_clip

    try:
        return open_clip.download_pretrained(tag_cfg, cache_dir=None if cache_dir is None else str(cache_dir)), where
    except (OSError, RuntimeError) as e:   # no network, a blocked hub, a bad checksum
        raise DataError(f"{what}: weights could not be downloaded from {where} ({type(e).__name__}); download them "
                        "once and set weights_file to the local file") from None


def load_clip(spec: ClipModelSpec, device: str = "cpu", cache_dir: Path | None = None):
    """The frozen open_clip model of `spec` (both towers, eval mode) and where its weights came from."""
    import open_clip

    if open_clip.get_model_config(spec.model) is None:
        raise DataError(f"open_clip has no model {spec.model!r} (e.g. ViT-B-16, ViT-L-14, RN50; all: "
                        "open_clip.list_models())")
    tag_cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained) if spec.pretrained else {}
    file, where = _weights(spec, tag_cfg, cache_dir)
    try:   # a file path as `pretrained`: built like the tag (activation, preprocessing), weights from the file
        model = open_clip.create_model(spec.model, pretrained=file, device=device,
                                       force_quick_gelu=bool(tag_cfg.get("quick_gelu")),
                                       force_preprocess_cfg={k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg})
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as e:   # another model's weights
        first = (str(e).splitlines() or [""])[0][:200]
        raise DataError(f"{file}: not open_clip weights of {spec.model} ({type(e).__name__}: {first})") from None
    return model.eval().requires_grad_(False), where


class ClipText:
    """A frozen CLIP text tower with its tokenizer, named by the weights it carries."""

    def __init__(self, model, tokenizer, model_name: str, pretrained: str | None, weights: str, device: str = "cpu"):
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer, self.device = tokenizer, device
        self.model_name, self.pretrained, self.weights = model_name, pretrained, weights

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Unit-norm float32 text embeddings, one row per text."""
        import torch
        import torch.nn.functional as F

        rows = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
                rows.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(rows).numpy()

    def origin(self) -> dict:
        import open_clip

        return {"text_model": self.model_name, "pretrained": self.pretrained, "weights": self.weights,
                "open_clip": open_clip.__version__}


def load_clip_text(spec: ClipModelSpec | None = None, device: str = "cpu", cache_dir: Path | None = None) -> ClipText:
    import open_clip

    spec = spec or ClipModelSpec()
    model, where = load_clip(spec, device, cache_dir)
    return ClipText(model, open_clip.get_tokenizer(spec.model), spec.model, spec.pretrained, where, device)


# ---------------------------------------------------------------------------------------------- embeddings

def prompt_embeddings(phrases: list[str], encoder: ClipText, prompts: Prompts) -> tuple[np.ndarray, dict]:
    """P × D: per phrase, the mean of its unit-norm template embeddings, normalised again (CLIP's prompt
    ensembling, as in its ImageNet notebook); with one template, that template's unit-norm embedding."""
    texts = [t.format(p) for p in phrases for t in prompts.templates]
    per_template = encoder.encode(texts).astype(np.float64).reshape(len(phrases), len(prompts.templates), -1)
    mean = per_template.mean(axis=1)
    vectors = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
    return vectors, {**encoder.origin(), **prompts.origin(), "texts": list(phrases)}


def class_name_embeddings(class_names: list[str], model: ClipText, templates: Prompts | None = None
                          ) -> tuple[np.ndarray, dict]:
    """C × D class-name embeddings of xlsa17 names (cleaned by `clean_class_name`) through the template set
    (default: the prompt file's class-name default), and their origin: text model, weights, template set and
    version, the cleaned names."""
    return prompt_embeddings([clean_class_name(n) for n in class_names], model, templates or load_prompts())


def dataset_class_prompts(dataset_name: str, class_names: list[str], path: Path = TEMPLATES_FILE
                          ) -> tuple[Prompts, list[str]]:
    """A dataset's class-name template set (the prompt file's `datasets.<name>.templates`) and its class names
    as words: `clean_class_name`, unless `datasets.<name>.class_names` rewrites a name (keyed by the dataset's
    own class names; a key that is not one of them is an error)."""
    path = Path(path)
    data = read_prompt_file(path)
    entry = (data.get("datasets") or {}).get(dataset_name)
    if not isinstance(entry, dict) or entry.get("templates") not in data["templates"]:
        raise DataError(f"{path}: datasets.{dataset_name} must name the template set its class names go through "
                        f"({', '.join(data['templates'])}), e.g. {{\"templates\": \"ensemble7\"}}; it has "
                        f"{'no entry' if entry is None else repr(entry)}")
    rewrites = entry.get("class_names") or {}
    if not isinstance(rewrites, dict) or not all(isinstance(v, str) and v.strip() for v in rewrites.values()):
        raise DataError(f"{path}: datasets.{dataset_name}.class_names must map class names to words, "
                        f"e.g. {{{class_names[0]!r}: \"...\"}}")
    unknown = [name for name in rewrites if name not in set(class_names)]
    if unknown:
        raise DataError(f"{path}: datasets.{dataset_name}.class_names: {unknown[0]!r} is not a class of "
                        f"{dataset_name} ({len(unknown)} such; keys are its class names as in its dataset.json, "
                        f"e.g. {class_names[0]!r})")
    name = entry["templates"]
    return (Prompts(name, tuple(data["templates"][name]), data["version"]),
            [rewrites.get(c, clean_class_name(c)) for c in class_names])


def class_text_embeddings(dataset, encoder: ClipText, path: Path = TEMPLATES_FILE) -> dict[str, tuple[np.ndarray, dict]]:
    """{kind: (C × E unit rows, origin)} of a prepared dataset through one CLIP text tower: `names`, each class
    name through the dataset's templates (prompt ensembling); `attributes`, each class as the mean of its
    attribute phrases' embeddings (the attribute template) weighted by its attribute values, clipped at 0."""
    from zsl_bench.attribute_embeddings import clean_attribute_name

    prompts, words = dataset_class_prompts(dataset.name, list(dataset.class_names), path)
    names, origin = prompt_embeddings(words, encoder, prompts)
    phrases, phrase_origin = prompt_embeddings([clean_attribute_name(a) for a in dataset.attribute_names], encoder,
                                               load_prompts(path=path, for_attributes=True))
    weights = np.clip(np.asarray(dataset.original_att, dtype=np.float64), 0, None)
    mixed = weights @ phrases.astype(np.float64)
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{dataset.name}: class {dataset.class_names[int(np.flatnonzero(norms == 0)[0])]} has no "
                        "positive attribute value: no attribute text to describe it")
    phrase_origin = {**phrase_origin, "rule": "per class: mean of its attribute phrases' embeddings weighted by "
                                              "its attribute values (clipped at 0), L2-normalised"}
    return {"names": (names, origin), "attributes": ((mixed / norms).astype(np.float32), phrase_origin)}


# ---------------------------------------------------------------------------------------------- image tower

@dataclass(frozen=True)
class ImageTowerInfo:
    """What an image must look like for the tower, and what it gives."""
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str
    embed_dim: int                   # width of the tower's pooled, projected output
    weights: str                     # where the weights came from


def open_clip_image_tower(model_name: str, pretrained: str, weights_file: str | Path | None = None,
                          device: str = "cpu", cache_dir: Path | None = None):
    """(open_clip's frozen image tower of the model, `ImageTowerInfo`). `tower(x)` gives the N × embed_dim
    image embeddings (not normalised); `patch_grid(tower, x)` its patch tokens as a map."""
    import open_clip

    model, where = load_clip(ClipModelSpec(model_name, pretrained, weights_file), device, cache_dir)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return model.visual, ImageTowerInfo(image_size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                                        interpolation=cfg.get("interpolation", "bicubic"),
                                        resize_mode=cfg.get("resize_mode", "shortest"),
                                        embed_dim=int(open_clip.get_model_config(model_name)["embed_dim"]),
                                        weights=where)


def patch_grid(tower, images, normalize: bool = True):
    """The last block's tokens of an open_clip image tower as an N × C × H × W grid, class token dropped
    (open_clip's `forward_intermediates`, open-clip-torch ≥ 2.32); after the final LayerNorm when
    `normalize`, the norm the pooled embedding sees. C is the tower's width, not the joint embedding."""
    if not hasattr(tower, "forward_intermediates"):
        import open_clip

        raise DataError(f"open_clip {open_clip.__version__}: the image tower {type(tower).__name__} has no "
                        "forward_intermediates (open-clip-torch >= 2.32 has it)")
    out = tower.forward_intermediates(images, indices=1, normalize_intermediates=normalize,
                                      intermediates_only=True, output_fmt="NCHW")
    return out["image_intermediates"][-1]
