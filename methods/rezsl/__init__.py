"""ReZSL: Ye et al., "Rebalanced Zero-Shot Learning", IEEE TIP 2023; variant `rezsl.gem` = GEM-ZSL: Liu et
al., "Goal-Oriented Gaze Estimation for Zero-Shot Learning", CVPR 2021 (its ancestor). README here.

ReZSL (`AttentionHead`): per-attribute predictions v2s from attribute-query attention over the last
backbone map plus its global pool; L = λ0 · CE(τ cos(v2s, a_c), y) + λ1 · mean(w ⊙ (v̂ − â)²) over seen
classes, v̂, â unit vectors, w the residual-based weights of the batch (`model.remse_weights`).
GEM-ZSL (`GEMHead`): classes from the global branch τ cos(GAP(x)·V, a_c); L = CE + λ1 · MSE(max attention,
a_y) + λ2 · L_AD + λ3 · L_CPT. Modes as Mg-MRN's: `map` (frozen layer4 maps; the embedded default) and
`image` (ResNet-101 fine-tuned end to end at 448 px with GEM/ReZSL's transforms: `rezsl.image`,
`rezsl.gem-image`).
"""
from __future__ import annotations

import numpy as np

from zsl_bench.blocks import OneMapMethod, attribute_groups_by_name, attribute_weighted_attention
from zsl_bench.method import ATTENTION_MAPS, PARAMETER_COUNT, PaperRule

# ReZSL config/{cub,sun,awa}_16w_2s_AttentionNet.yaml with REZSL/config/defaults.py (README: sources).
COMMON = {
    "network": "attention", "mode": "map", "semantics": "original", "attribute_embedding": "w2v",
    "sampler": "episodes", "ways": 16, "shots": 2, "batches_per_epoch": 300, "batch_size": 32, "epochs": 30,
    "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-5, "lr_step": 10, "lambda_cls": 1.0, "ratio": 1.0,
    "lambda_ad": 0.0, "lambda_cpt": 0.0, "calibration_gamma": 0.0,
    "image_size": 448, "backbone": "resnet101.tv_in1k", "pretrained": True, "weights_file": None,
    "eval_batch_size": 32,
}
PAPER = {
    "CUB": {"lr": 5e-4, "lr_gamma": 0.1, "scale": 20.0, "lambda_reg": 0.25, "remse_p": 0.1, "remse_p2": 0.75,
            "mid": 1024, "hidden": 0},
    "SUN": {"lr": 5e-4, "lr_gamma": 0.5, "scale": 25.0, "lambda_reg": 0.1, "remse_p": 0.1, "remse_p2": 0.0,
            "mid": 1024, "hidden": 0},
    "AWA2": {"lr": 1e-4, "lr_gamma": 0.5, "scale": 20.0, "lambda_reg": 1.0, "remse_p": 1.0, "remse_p2": 0.1,
             "mid": 300, "hidden": 4096},
}
# GEM-ZSL config/GEMZSL/{cub,sun,awa}_4w_2s.yaml: 4 GPUs × 4 ways × 2 shots = one episode of 16 × 2.
GEM = {
    "CUB": {"lr": 1e-3, "lr_gamma": 0.5, "epochs": 15, "scale": 20.0, "lambda_reg": 1.0, "calibration_gamma": 0.7},
    "SUN": {"lr": 1e-3, "lr_gamma": 0.5, "epochs": 20, "scale": 25.0, "lambda_reg": 0.5, "calibration_gamma": 0.7},
    "AWA2": {"lr": 1e-3, "lr_gamma": 0.5, "epochs": 12, "scale": 20.0, "lambda_reg": 1.0, "calibration_gamma": 3.5},
}
GEM_COMMON = {"network": "gem", "semantics": "att", "lambda_ad": 0.1, "lambda_cpt": 0.2, "remse_p": 0.0,
              "remse_p2": 0.0, "eval_batch_size": 100}
# The embedded default: CUB's setting on 3 × 3 layer4 maps of 1,000-odd small images, on a CPU (README).
SYNTHETIC = {"lr": 1e-2, "lr_gamma": 0.1, "epochs": 8, "lr_step": 6, "batches_per_epoch": 0, "mid": 128,
             "attribute_embedding": "minilm", "image_size": 64, "backbone": "resnet10t", "pretrained": False,
             "eval_batch_size": 256}
SYNTHETIC_GEM = {"lr": 3.0, "epochs": 8, "lr_step": 6}   # README: a frozen backbone needs a large step

# GEM-ZSL's attribute groups where the names carry none (GEMZSL/modeling/utils.py get_attr_group; CUB's 28 are
# exactly its name prefixes, `attribute_groups_by_name`).
OFFICIAL_GROUPS = {
    "AWA2": [list(range(0, 8)), list(range(8, 14)), list(range(14, 18)), [*range(18, 34), 44, 45],
             list(range(34, 44)), list(range(46, 51)), list(range(51, 63)), list(range(63, 78)), list(range(78, 85))],
    "SUN": [list(range(0, 36)), [*range(36, 74), 80, 99], [74, 75, 76, 77, 78, 79, 81, 82, 83, 84],
            [*range(85, 99), 100, 101]],
}
REZSL_RULE = PaperRule(checkpoint="test", calibration="test-grid", separately=("T1", "H", "AUSUC"),
                       source="FouriYe/ReZSL-TIP23@cb25133 REZSL/engine/trainer.py:L157-L189 (after every epoch: best "
                              "test T1, best test H, best AUSUC kept separately); REZSL/engine/inferencer.py:L82-L119 "
                              "(γ on the seen scores swept on test in 0.01 steps, the best-H γ kept)")
GEM_RULE = PaperRule(checkpoint="test", calibration="fixed", separately=("T1", "H"),
                     source="osierboy/GEM-ZSL@8486b08 GEMZSL/engine/trainer.py:L160-L169 (after every epoch: best test "
                            "T1 and best test H kept separately); inferencer.py:L53-L61 with the config's TEST.GAMMA")


class ReZSL(OneMapMethod):
    uses_unseen_semantics = False   # seen classes only; unseen rows appear at inference only
    paper = "Ye et al., IEEE TIP 2023"
    paper_rule = REZSL_RULE
    capabilities = frozenset({ATTENTION_MAPS, PARAMETER_COUNT})
    profiles = {**{ds: {**COMMON, **p} for ds, p in PAPER.items()}, "synthetic": {**COMMON, **PAPER["CUB"], **SYNTHETIC}}
    gem_profiles = {**{ds: {**COMMON, **PAPER[ds], **GEM_COMMON, **p} for ds, p in GEM.items()},
                    "synthetic": {**COMMON, **PAPER["CUB"], **SYNTHETIC, **GEM_COMMON, **GEM["CUB"], **SYNTHETIC_GEM}}
    search_spaces = {"synthetic": {"lambda_reg": [0.25, 1.0]}}
    variants = {"gem": {"network": "gem"}, "image": {"mode": "image", "input_kind": "image"},
                "gem-image": {"network": "gem", "mode": "image", "input_kind": "image"},
                "remse-off": {"remse_p": 0.0, "remse_p2": 0.0}}   # ReZSL's network with the plain normalised MSE

    @classmethod
    def is_gem(cls) -> bool:
        return cls.variant_overrides.get("network") == "gem"

    @classmethod
    def with_variant(cls, variant: str):
        sub = super().with_variant(variant)
        if sub.is_gem():   # GEM-ZSL: its own paper, selection rule and per-dataset settings
            sub.paper, sub.paper_rule, sub.profiles = "Liu et al., CVPR 2021 (GEM-ZSL)", GEM_RULE, cls.gem_profiles
        return sub

    def build_head(self, channels: int):
        from methods.rezsl.model import AttentionHead, GEMHead

        hp = self.hparams
        if hp["network"] == "gem":
            return GEMHead(channels, self.attribute_embedding())
        if hp["network"] != "attention":
            raise ValueError(f"{self.name}: network must be 'attention' (ReZSL) or 'gem' (GEM-ZSL), not {hp['network']!r}")
        return AttentionHead(channels, self.attribute_embedding(), int(hp["mid"]), int(hp["hidden"]), hp["ratio"])

    def groups(self) -> list[list[int]]:
        """The attribute groups of GEM-ZSL's decorrelation loss on this dataset."""
        groups = attribute_groups_by_name(self.task.attribute_names) or OFFICIAL_GROUPS.get(self.task.dataset, [])
        if not groups:
            raise ValueError(f"{self.name}: no attribute groups for {self.task.dataset} (names without 'type::value' "
                             "and no official list); set lambda_ad: 0 for this dataset")
        return groups

    def class_scores(self, out, att):
        """τ cos(prediction, a_c): eps 1e-10 in ReZSL's cosine, 1e-5 in GEM-ZSL's."""
        eps = 1e-5 if self.hparams["network"] == "gem" else 1e-10
        pred = out["attributes"].float()
        unit = lambda v: v / (v.norm(dim=1, keepdim=True) + eps)  # noqa: E731
        return self.hparams["scale"] * unit(pred) @ unit(att).T

    def loss(self, out, y, seen_att):
        import torch.nn.functional as F

        from methods.rezsl.model import attribute_decorrelation, compactness, remse_weights

        hp = self.hparams
        cls = F.cross_entropy(self.class_scores(out, seen_att), y)
        if hp["network"] == "gem":
            total = hp["lambda_cls"] * cls + hp["lambda_reg"] * F.mse_loss(out["attention_max"].float(), seen_att[y])
            if hp["lambda_ad"]:
                total = total + hp["lambda_ad"] * attribute_decorrelation(out["query"], self.groups())
            if hp["lambda_cpt"]:
                total = total + hp["lambda_cpt"] * compactness(out["attention"].float(), out["grid"])
            return total
        pred, target = out["attributes"].float(), seen_att[y]
        p_hat = pred / (pred.norm(dim=1, keepdim=True) + 1e-10)
        a_hat = target / (target.norm(dim=1, keepdim=True) + 1e-10)
        residual = (p_hat - a_hat) ** 2
        if hp["remse_p"] or hp["remse_p2"]:
            residual = residual * remse_weights(p_hat, a_hat, y, hp["remse_p"], hp["remse_p2"])
        return hp["lambda_cls"] * cls + hp["lambda_reg"] * residual.mean()

    def attention_maps(self, x, attribute_weights=None) -> dict[str, np.ndarray]:
        """For figures: {"attribute attention": [N, H, W]}, each attribute query's softmax over the map's
        regions, averaged over attributes with `attribute_weights` (uniform when None); sums to 1."""
        maps = self.outputs(x, lambda out: out["attention"].float().cpu().numpy())
        return {"attribute attention": attribute_weighted_attention(maps, attribute_weights, self.map_grid())}
