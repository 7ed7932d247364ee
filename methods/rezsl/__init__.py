"""ReZSL: Ye et al., "Rebalanced Zero-Shot Learning", IEEE TIP 2023 (README here).

Per-attribute predictions v2s from attribute-query attention over the last backbone map plus its global
pool (`model.AttentionHead`); L = λ0 · CE(τ cos(v2s, a_c), y) over seen classes + λ1 · mean(w ⊙ (v̂ − â)²),
v̂, â unit vectors and w the batch's residual-based weights (`model.remse_weights`). Modes as Mg-MRN's: `map`
(frozen layer4 maps; the embedded default) and `rezsl.image` (ResNet-101 fine-tuned end to end at 448 px
with GEM/ReZSL's transforms). `rezsl.remse-off`: the same network with the plain normalised MSE (uniform
weights), the re-weighting's ablation. GEM-ZSL, its ancestor, is the plugin `gemzsl`.
"""
from __future__ import annotations

import numpy as np

from zsl_bench.torch_methods import scaled_cosine
from zsl_bench.map_families import OneMapMethod
from zsl_bench.method import ATTENTION_MAPS, PARAMETER_COUNT, PaperRule, dataset_profiles

# ReZSL config/{cub,sun,awa}_16w_2s_AttentionNet.yaml with REZSL/config/defaults.py (README: sources).
COMMON = {
    "mode": "map", "semantics": "original", "attribute_embedding": "w2v", "sampler": "episodes", "ways": 16,
    "shots": 2, "batches_per_epoch": 300, "batch_size": 32, "epochs": 30, "optimizer": "sgd", "momentum": 0.9,
    "weight_decay": 1e-5, "lr_step": 10, "lambda_cls": 1.0, "ratio": 1.0,
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
# The embedded default: CUB's setting on 3 × 3 layer4 maps of 1,000-odd small images, on a CPU (README).
SYNTHETIC = {**PAPER["CUB"], "lr": 1e-2, "epochs": 8, "lr_step": 6, "batches_per_epoch": 0, "mid": 128,
             "attribute_embedding": "minilm", "image_size": 64, "backbone": "resnet10t", "pretrained": False,
             "eval_batch_size": 256}


class ReZSL(OneMapMethod):
    uses_unseen_semantics = False   # seen classes only; unseen rows appear at inference only
    paper = "Ye et al., IEEE TIP 2023"
    paper_rule = PaperRule(checkpoint="test", calibration="test-grid", separately=("T1", "H", "AUSUC"),
                           source="FouriYe/ReZSL-TIP23@cb25133 REZSL/engine/trainer.py:L157-L189 (after every epoch: "
                                  "best test T1, best test H, best AUSUC kept separately); REZSL/engine/inferencer.py:"
                                  "L82-L119 (γ on the seen scores swept on test in 0.01 steps, the best-H γ kept)")
    capabilities = frozenset({ATTENTION_MAPS, PARAMETER_COUNT})
    # The release-only xlsa17 datasets: AWA1 has AWA2's 50 classes and 85 attributes, so AWA2's setting (what
    # papers reporting AWA1 use); APY, which ReZSL does not report, CUB's setting, the method's reference.
    profiles = dataset_profiles(COMMON, {**PAPER, "AWA1": PAPER["AWA2"], "APY": PAPER["CUB"]}, SYNTHETIC)
    # real datasets: λ1 over the values the three official configs use; the embedded default: two of them
    search_spaces = {"*": {"lambda_reg": [0.1, 0.25, 1.0]}, "synthetic": {"lambda_reg": [0.25, 1.0]}}
    variants = {"image": {"mode": "image", "input_kind": "image"},
                "remse-off": {"remse_p": 0.0, "remse_p2": 0.0}}

    def build_head(self, channels: int):
        from zsl_bench_methods.rezsl.model import AttentionHead

        hp = self.hparams
        return AttentionHead(channels, self.attribute_embedding(), int(hp["mid"]), int(hp["hidden"]), hp["ratio"])

    def class_scores(self, out, att):
        return scaled_cosine(out["attributes"], att, self.hparams["scale"], 1e-10)

    def loss(self, out, y, seen_att):
        import torch.nn.functional as F

        from zsl_bench_methods.rezsl.model import remse_weights

        hp = self.hparams
        pred, target = out["attributes"].float(), seen_att[y]
        p_hat = pred / (pred.norm(dim=1, keepdim=True) + 1e-10)
        a_hat = target / (target.norm(dim=1, keepdim=True) + 1e-10)
        residual = (p_hat - a_hat) ** 2
        if hp["remse_p"] or hp["remse_p2"]:   # with p = p2 = 0 every weight is 1: skip computing them
            residual = residual * remse_weights(p_hat, a_hat, y, hp["remse_p"], hp["remse_p2"])
        return hp["lambda_cls"] * F.cross_entropy(self.class_scores(out, seen_att), y) + hp["lambda_reg"] * residual.mean()

    def attention_maps(self, x, attribute_weights=None) -> dict[str, np.ndarray]:
        """{"attribute attention": [N, H, W]}: each attribute query's softmax over the map's regions."""
        return {"attribute attention": self.weighted_attention(x, lambda out: out["attention"], attribute_weights)}
