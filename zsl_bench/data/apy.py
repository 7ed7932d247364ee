"""aPascal–aYahoo (Farhadi et al., CVPR 2009) with the xlsa17 proposed split: release-only.

The images are not a download here (aPascal's objects are crops of VOC2008 images, aYahoo's came from a host
that is gone): the dataset is xlsa17's `xlsa17/data/APY/` alone, features its res101.mat vectors.
Facts (checked against the release's att_splits.mat, MATLAB header 2019-09-19, in the public copy
cetinsamet/attribute-label-embedding@a45093b datasets/APY/, and its class lists):
- 32 classes: allclasses lists the 20 aPascal classes (VOC order), then the 12 aYahoo ones; the PS
  seen/unseen partition mixes both (unseen: 8 aPascal classes, person among them, and 4 aYahoo ones);
- 64 attributes; `original_att` is the fraction of a class's objects annotated with each, in [0, 1];
- 15,339 rows: trainval 5,932, test_seen 1,483, test_unseen 7,924; folds 15 train / 5 val classes.
Not checked here (no res101.mat at hand), from public loaders: rows 1–12,695 are aPascal objects (a VOC
file once per object, so file names repeat), then aYahoo's 2,644 images — not a directory listing, so the
rows keep res101.mat's order (`keep_row_order`). Attribute names are not in the release: unknown here.
"""
from __future__ import annotations

from pathlib import Path

from zsl_bench.data.download import FetchOptions, extract
from zsl_bench.data.xlsa17 import (XLSA17_ARCHIVE, SplitSizes, last_two_components, prepare_from_release,
                                   refuse_images, xlsa17_folder)

NAME = "APY"
XLSA17_NAME = "APY"
SIZES = SplitSizes(n_images=15339, n_classes=32, n_attributes=64, trainval=5932, test_seen=1483, test_unseen=7924)
# params.yaml `sources.APY` keys and their types (zsl_bench.params checks them before any work).
PARAMS = {"images": bool, "attribute_embeddings": ("list", str), "mirror": (str, type(None)),
          "from": ("list", str)}
NO_IMAGES = ("APY has no image release to download (aPascal's objects are crops of VOC2008 images, "
             "aYahoo's host is gone)")


def required_archives(params: dict) -> list:
    return [XLSA17_ARCHIVE]


def prepare_source(raw: Path, out: Path, params: dict, progress: bool = True, downloads: Path | None = None) -> Path:
    """params: `images` (false; true is refused), `mirror`, `from`."""
    refuse_images(NAME, params, NO_IMAGES)
    opts = FetchOptions.from_params(params, progress)
    raw = Path(raw)
    release = opts.fetch(XLSA17_ARCHIVE, Path(downloads or raw.parent / "downloads"))
    extract(release, xlsa17_folder(raw, XLSA17_NAME), select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
    # `<folder>/<file>` of the stored paths: JPEGImages/<VOC id>.jpg or ayahoo_test_images/<class>_<n>.jpg;
    # the root is nominal (nothing is read from it).
    return prepare_from_release(raw, out, NAME, XLSA17_NAME, SIZES, last_two_components, image_root=raw / "images",
                                attribute_names=None, keep_row_order=True)
