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
    img = _load_short_side(path, size)
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


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


class ImageView:
    """Lazy view of some dataset images, for methods that train a backbone (`input_kind = "image"`).

    Transforms follow GEM-ZSL/Mg-MRN: training resizes the short side to size·8/7 then takes a random
    size×size crop and a random flip; evaluation resizes the short side to `size` and crops the centre.
    """

    def __init__(self, dataset, rows):
        self.dataset, self.rows = dataset, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, positions, size: int, train: bool, rng: np.random.Generator | None = None):
        import torch

        paths = [self.dataset.image_path(int(r)) for r in self.rows[np.asarray(positions, dtype=np.int64)]]
        if not train:
            return load_batch_for_backbone(paths, size, crop="center")
        rng = rng or np.random.default_rng()
        big = int(size * 8 / 7)
        out = []
        for p in paths:
            img = _load_short_side(p, big)
            top = int(rng.integers(0, img.shape[0] - size + 1))
            left = int(rng.integers(0, img.shape[1] - size + 1))
            crop = img[top:top + size, left:left + size]
            out.append(crop[:, ::-1] if rng.uniform() < 0.5 else crop)
        return to_normalised_tensor(torch.as_tensor(np.ascontiguousarray(np.stack(out))))

    def batches(self, batch_size: int, size: int):
        """Every image once, evaluation transform."""
        for lo in range(0, len(self), batch_size):
            positions = np.arange(lo, min(lo + batch_size, len(self)))
            yield positions, [self.read(positions, size, train=False)]


def _load_short_side(path: Path, size: int) -> np.ndarray:
    """Short side resized to `size`, aspect ratio kept (HWC uint8)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            return np.asarray(im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                        Image.Resampling.BILINEAR))
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
