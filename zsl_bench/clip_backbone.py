"""open_clip's CLIP image tower as a feature backbone: the same interface timm models give extraction
(`feature_info`, `forward_intermediates`, `forward_head`, `num_features`), so feature_extraction.py runs it
unchanged. Its blocks' patch tokens are the maps (class token dropped, on the patch grid); the pooled
vector is CLIP's image embedding (pooled and projected: what CLIP scores class-name text against)."""
from __future__ import annotations

import torch
from torch import nn

from zsl_bench.io import DataError


class OpenClipBackbone(nn.Module):
    def __init__(self, tower, info):
        super().__init__()
        if not hasattr(tower, "transformer") or not hasattr(tower, "forward_intermediates"):
            raise DataError(f"open_clip image tower {type(tower).__name__}: only ViT towers (blocks of patch tokens) "
                            "serve as a backbone here")
        self.tower, self.info = tower, info
        blocks = len(tower.transformer.resblocks)
        patch = int(tower.patch_size[0])
        self.feature_info = [{"module": f"resblocks.{i}", "num_chs": int(tower.transformer.width), "reduction": patch}
                             for i in range(blocks)]
        self.num_features = int(info.embed_dim)
        # Images are normalised with CLIP's own statistics, not ImageNet's (feature_extraction reads these).
        self.pretrained_cfg = {"mean": tuple(info.mean), "std": tuple(info.std)}

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != tuple(self.info.image_size):
            raise DataError(f"open_clip's image tower takes {self.info.image_size[0]} px (its position embedding is "
                            f"fixed), not {x.shape[-1]} px: set extract input_size to {self.info.image_size[0]} and "
                            "extra_sizes to []")

    def forward_intermediates(self, x: torch.Tensor, indices, intermediates_only: bool = False):
        self._check(x)
        out = self.tower.forward_intermediates(x, indices=list(indices), intermediates_only=intermediates_only,
                                               output_fmt="NCHW")
        maps = out["image_intermediates"]
        return maps if intermediates_only else (out["image_features"], maps)

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled   # the tower's pooled, projected embedding already

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.tower(x)


def open_clip_backbone(spec) -> OpenClipBackbone:
    """The backbone of a `library: open_clip` BackboneSpec: model `arch`, weights `pretrained_tag` from the hub or
    from `weights_file` (zsl_bench.clip_text loads them, offline errors included)."""
    from zsl_bench.clip_text import open_clip_image_tower

    tower, info = open_clip_image_tower(spec.arch, spec.pretrained_tag, spec.weights_file)
    return OpenClipBackbone(tower, info)
