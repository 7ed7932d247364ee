"""Reading dataset images into tensors: one place for resizing and normalisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zsl_bench.io import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_rgb(path: Path, size: int) -> np.ndarray:
    """The whole image (no crop, as xlsa17 extracted it), resized to size×size, HWC uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def load_batch(paths: list[Path], size: int) -> np.ndarray:
    """N×H×W×3 uint8."""
    return np.stack([load_rgb(p, size) for p in paths])


def load_rgb_center_crop(path: Path, size: int) -> np.ndarray:
    """Short side resized to `size`, then the central size×size square (DAZLE/TransZero's transform)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)))
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def load_batch_for_backbone(paths: list[Path], size: int, crop: str = "none"):
    """Images → normalised N×3×size×size tensor; crop "none" (whole image) or "center"."""
    load = load_rgb if crop == "none" else load_rgb_center_crop
    return to_normalised_tensor(np.stack([load(p, size) for p in paths]))


def to_normalised_tensor(batch_uint8, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """N×H×W×3 uint8 (numpy or tensor) → N×3×H×W float32, normalised."""
    import torch

    x = torch.as_tensor(batch_uint8).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s
