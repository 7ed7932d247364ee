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


def load_batch_for_backbone(paths: list[Path], size: int, crop: str = "none", mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Images → normalised N×3×size×size tensor; crop "none" (whole image) or "center"."""
    import torch

    load = load_rgb if crop == "none" else load_rgb_center_crop
    return normalise(torch.as_tensor(np.stack([load(p, size) for p in paths])).permute(0, 3, 1, 2), mean, std)


def to_normalised_tensor(batch_uint8):
    """N×H×W×3 uint8 (numpy or tensor) → N×3×H×W float32, normalised."""
    import torch

    return normalise(torch.as_tensor(batch_uint8).permute(0, 3, 1, 2))


# A method's image transforms are its own (`TorchMethod.image_transform`: torchvision transforms v2 on PIL
# images, ending in a uint8 tensor, so batches travel from the loader's workers and to the GPU at a quarter of
# the float size); `normalise` turns a whole batch into the model's input where it will be used.


def normalise(batch_uint8, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """N×3×H×W uint8 (on any device) → float32 with ImageNet normalisation, on the same device."""
    import torch

    x = batch_uint8.float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def open_rgb(path: Path):
    """The image at `path` as an RGB PIL image, or a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


class ImageView:
    """Lazy view of some dataset images, for methods that train a backbone (`input_kind = "image"`):
    `read` gives evaluation batches in the process; training batches come from an `ImageLoader`."""

    def __init__(self, dataset, rows):
        self.dataset, self.rows = dataset, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def paths(self, positions=None) -> list[Path]:
        rows = self.rows if positions is None else self.rows[np.asarray(positions, dtype=np.int64)]
        return [self.dataset.image_path(int(r)) for r in rows]

    def read(self, positions, transform):
        """N×3×S×S float32: `transform` (a method's evaluation transform, PIL → uint8 tensor), normalised."""
        import torch

        return normalise(torch.stack([transform(open_rgb(p)) for p in self.paths(positions)]))

    def batches(self, batch_size: int, transform):
        """Every image once, through `transform` (a method's evaluation transform)."""
        for lo in range(0, len(self), batch_size):
            positions = np.arange(lo, min(lo + batch_size, len(self)))
            yield positions, [self.read(positions, transform)]


class _AugmentedImages:
    """A map-style dataset for torch's DataLoader: item (position, seed) → the training transform of that
    image, its randomness drawn from `seed` alone, so a batch is the same whichever worker (or none)
    decodes it. The training process's own random state is left untouched (fork_rng)."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        import torch

        position, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(open_rgb(self.paths[position]))


class ImageLoader:
    """Training batches of an `ImageView` through `torch.utils.data.DataLoader`: `workers` decoding
    processes (0: in this one), the method's training `transform`, uint8 batches pinned for a GPU and
    normalised on `device`. Image j of the batch at step s is augmented from seed_hash(seed, s, j):
    reproducible, and the same under any number of workers or processes (j counts within the whole batch,
    `offset` being this process's first)."""

    def __init__(self, view: ImageView, transform, seed: int, workers: int = 0, device="cpu"):
        import torch

        self.seed, self.workers, self.device = int(seed), int(workers), torch.device(device)
        self.dataset = _AugmentedImages(view.paths(), transform)

    def __call__(self, parts):
        """[(step, positions, offset)] → an iterator of normalised N×3×S×S batches on the device, in order."""
        import torch
        from torch.utils.data import DataLoader

        from zsl_bench.runtime import seed_hash

        batches = [[(int(p), seed_hash(self.seed, int(step), offset + j)) for j, p in enumerate(positions)]
                   for step, positions, offset in parts]
        # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's global stream,
        # which is the training's (dropout, and everything a resumed fit restores).
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(self.seed))
        return (normalise(b.to(self.device, non_blocking=True)) for b in loader)


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
