"""APN: Xu et al., "Attribute Prototype Network for Zero-Shot Learning", NeurIPS 2020.

A global branch (attributes from the pooled 1 × 1 convolution of the last backbone map; the classes read
them) and an attribute-prototype branch (one prototype per attribute, similarity maps max-pooled) trained
together: L = xe · CE_g + attri · MSE_g + l_xe · CE_p + l_attri · MSE_p (attribute regression) + L_AD
(group lasso over attribute groups, both branches) + cpt · L_CPT (compactness, after the warm-up).
The class probabilities are softmax(attributes · a_c) over the candidate classes, as the official output,
so the official calibrated stacking (γ subtracted from the seen classes' probabilities: CUB 0.7, SUN 0.4,
AWA2 0.7) is the `fixed` γ. Modes: `map` (frozen layer4 maps; the embedded default) and `image`
(`apn.image`: ResNet-101 at 224 px, conv1 and layer1 frozen, layer2–4 fine-tuned, as official).
"""
from __future__ import annotations

import numpy as np

from zsl_bench.map_families import SUN_ATTRIBUTE_GROUPS, OneMapMethod, attribute_groups_by_name
from zsl_bench.method import ATTENTION_MAPS, PARAMETER_COUNT, PaperRule, dataset_profiles

# wenjiaXu/APN-ZSL@e5976f7 script/{CUB,SUN,AWA2}_GZSL.sh with model/opt.py defaults (README: sources).
COMMON = {
    "script": "gzsl", "mode": "map", "semantics": "att", "sampler": "shuffle", "batch_size": 64, "ways": 8, "shots": 3,
    "batches_per_epoch": 300, "epochs": 30, "betas": (0.5, 0.999), "lr_decay": 0.8, "lr_step": 10,
    "double_softmax": True, "xe": 1.0, "l_xe": 1.0,
    "image_size": 224, "backbone": "resnet101.tv_in1k", "pretrained": True, "weights_file": None,
    # map mode: layer4 of the images at the official 224 px (7 × 7 cells, what the official network and the
    # weights of its compactness loss see), not the 448 px store's 14 × 14; null reads the store's layer4
    "map_size": 224,
    "frozen_layers": ("conv1", "bn1", "layer1"), "eval_batch_size": 64,
}
PAPER = {
    "CUB": {"global_pool": "max", "attri": 1e-2, "regular": 5e-5, "l_attri": 1e-1, "l_regular": 4e-2, "cpt": 1e-9,
            "groups": "parts", "pretrain_epoch": 5, "pretrain_lr": 1e-4, "classifier_lr": 1e-6,
            "calibration_gamma": 0.7},
    "SUN": {"global_pool": "avg", "attri": 1e-4, "regular": 1e-3, "l_attri": 5e-2, "l_regular": 5e-3, "cpt": 2e-7,
            "groups": "parts", "pretrain_epoch": 4, "pretrain_lr": 1e-3, "classifier_lr": 1e-6,
            "calibration_gamma": 0.4},
    "AWA2": {"global_pool": "avg", "attri": 1e-4, "regular": 5e-4, "l_attri": 1e-2, "l_regular": 5e-7, "cpt": 2e-9,
             "groups": "none", "pretrain_epoch": 2, "pretrain_lr": 1e-4, "classifier_lr": 1e-7,
             "calibration_gamma": 0.7},
}
# The official ZSL scripts (script/{CUB,SUN,AWA2}_ZSL.sh, run without --gzsl: only T1), where they differ from
# the GZSL ones: the `zsl` variant trains with them and the `paper` column reads T1 from it.
ZSL_SCRIPTS = {
    "CUB": {"sampler": "episodes", "pretrain_epoch": 4, "regular": 5e-6},   # --train_mode distributed: 300 × 8 × 3
    "AWA2": {"l_xe": 0.0},
}
# The embedded default: CUB's losses on 3 × 3 layer4 maps, shorter, with learning rates a frozen backbone needs.
# Its maps at half the store's 96 px, as 224 is half of 448: 48 px → 2 × 2 cells (the store's are 3 × 3).
SYNTHETIC = {**PAPER["CUB"], "epochs": 10, "pretrain_epoch": 3, "pretrain_lr": 1e-2, "classifier_lr": 1e-3,
             "image_size": 64, "backbone": "resnet10t", "pretrained": False, "eval_batch_size": 256, "map_size": 48}

# The official attribute groups (model/main.py L70-L88: data/<DS>/attri_groups_*.json, not in the repository).
# CUB: the eight body parts, 0-based inclusive ranges as in the json (read in its copy DZ521111/ZsL-Temporary
# @f1ddef6); the loss sums parts[:7] of [head, belly, breast, belly, wing, tail, leg, others]: belly twice,
# back and others never (official, kept).
_CUB_PARTS = {
    "head": [(0, 8), (94, 104), (135, 148), (149, 151), (152, 166), (182, 196), (278, 292), (293, 307)],
    "breast": [(54, 57), (105, 134)], "belly": [(39, 53), (197, 211), (244, 247)],
    "back": [(24, 38), (58, 72), (236, 239)], "wing": [(9, 23), (212, 216), (308, 311)],
    "tail": [(73, 93), (167, 181), (240, 243)], "leg": [(263, 277)], "others": [(217, 235), (248, 262)],
}
CUB_LOSS_PARTS = ("head", "belly", "breast", "belly", "wing", "tail", "leg")
# SUN's json is not published anywhere we found: GEM-ZSL's four SUN groups (functions, materials, surface
# properties, spatial envelope: the same four kinds) stand in (README, deviations).
SUN_GROUPS = SUN_ATTRIBUTE_GROUPS


def _expand(ranges) -> list[int]:
    return [i for lo, hi in ranges for i in range(lo, hi + 1)]


class APN(OneMapMethod):
    uses_unseen_semantics = False
    paper = "Xu et al., NeurIPS 2020"
    paper_rule = PaperRule(checkpoint="test", calibration="fixed", separately=("T1", "H"), t1_from="zsl",
                           source="wenjiaXu/APN-ZSL@e5976f7 model/main.py:L182-L218 (after every epoch, one "
                                  "setting per run: without --gzsl the best test ZSL T1 (L187-L194), with it the "
                                  "best test H (L197-L211); T1 and H come from separate runs of the *_ZSL.sh and "
                                  "*_GZSL.sh scripts); calibrated stacking model/main_utils.py:L102-L128 with "
                                  "the GZSL scripts' --calibrated_stacking")
    capabilities = frozenset({ATTENTION_MAPS, PARAMETER_COUNT})
    warm = True   # in the warm-up (head only, no L_CPT): set by `epoch_start`
    # The release-only xlsa17 datasets: AWA1 has AWA2's 50 classes and 85 attributes, so AWA2's setting (what
    # papers reporting AWA1 use); APY, which APN does not report, CUB's setting, the method's reference, without
    # CUB's body-part groups (they index CUB's attributes).
    profiles = dataset_profiles(COMMON, {**PAPER, "AWA1": PAPER["AWA2"], "APY": {**PAPER["CUB"], "groups": "none"}},
                                SYNTHETIC)
    # real datasets: λ_Reg over the values the three official scripts use; the embedded default: two
    search_spaces = {"*": {"l_attri": [1e-2, 5e-2, 1e-1]}, "synthetic": {"l_attri": [0.1, 1.0]}}
    variants = {"image": {"mode": "image", "input_kind": "image"}, "prototypes-off": {"l_xe": 0.0, "l_attri": 0.0,
                                                                                         "l_regular": 0.0, "cpt": 0.0},
                "zsl": {"script": "zsl"}}   # the ZSL scripts' settings (ZSL_SCRIPTS), where the paper's T1 is from
    zsl_settings = {**ZSL_SCRIPTS, "AWA1": ZSL_SCRIPTS["AWA2"]}

    @classmethod
    def feature_arrays(cls, hparams: dict) -> tuple[str, ...]:
        """Map mode reads the coarsest level of the images at `map_size` px (`coarse@224`: ResNet-101's layer4,
        the official 7 × 7 grid)."""
        if cls.input_kind == "map" and hparams.get("map_size"):
            return (f"coarse@{int(hparams['map_size'])}",)
        return super().feature_arrays(hparams)

    def image_transform(self, size: int, train: bool):
        """APN's (model/main_utils.py L318-L369, the scripts' default): the short side resized to size·8/7 (256 for
        224), the central size×size crop, in training as in evaluation (no augmentation)."""
        from torchvision.transforms import v2

        return v2.Compose([v2.Resize(int(size * 8 / 7)), v2.CenterCrop(size), v2.PILToTensor()])

    def build_head(self, channels: int):
        from zsl_bench_methods.apn.model import APNHead

        return APNHead(channels, self.task.n_attributes, self.hparams["global_pool"])

    def groups(self) -> list[list[int]]:
        """The attribute groups of L_AD: the official lists on CUB (body parts) and SUN, the `type::value`
        name prefixes elsewhere (the embedded default); none (plain Frobenius norms) with `groups: none`."""
        kind = self.hparams["groups"]
        if kind == "none":
            return []
        official = {"CUB": [_expand(_CUB_PARTS[p]) for p in CUB_LOSS_PARTS], "SUN": SUN_GROUPS}.get(self.task.dataset)
        if official and max(map(max, official)) < self.task.n_attributes:
            return official
        groups = attribute_groups_by_name(self.task.attribute_names)
        if not groups:
            raise ValueError(f"{self.name}: no attribute groups for {self.task.dataset}; set groups: none")
        return groups

    def optimizer(self):
        """Adam (β1 0.5, no weight decay) with the head and the backbone as two groups; `epoch_start` sets
        their rates and empties the moments (the official code builds a new optimizer every epoch)."""
        import torch

        head = list(self.net["head"].parameters())
        groups = [{"params": head, "name": "head"}]
        if "backbone" in self.net:
            groups.append({"params": [p for p in self.net["backbone"].parameters() if p.requires_grad],
                           "name": "backbone"})
        return torch.optim.Adam(groups, lr=self.hparams["pretrain_lr"], betas=tuple(self.hparams["betas"]))

    def epoch_start(self, epoch: int, opt) -> None:
        """Official epoch e = epoch − 1: while e ≤ pretrain_epoch only the head trains at pretrain_lr; after,
        everything at classifier_lr · 0.8^(e // 10)."""
        hp = self.hparams
        e = epoch - 1
        self.warm = e <= hp["pretrain_epoch"]
        opt.state.clear()
        for group in opt.param_groups:
            if self.warm:
                group["lr"] = hp["pretrain_lr"] if group["name"] == "head" else 0.0
            else:
                group["lr"] = hp["classifier_lr"] * hp["lr_decay"] ** (e // hp["lr_step"])

    def class_scores(self, out, att):
        import torch

        return torch.softmax(out["attributes"].float() @ att.T, dim=1)

    def loss(self, out, y, seen_att):
        import torch.nn.functional as F

        from zsl_bench_methods.apn.model import compactness, decorrelation

        hp = self.hparams
        target = seen_att[y]
        head = self.net["head"]

        def class_loss(attributes):   # official: CrossEntropyLoss on softmax outputs (a double softmax)
            logits = attributes.float() @ seen_att.T
            return F.cross_entropy(logits.softmax(1) if hp["double_softmax"] else logits, y)

        total = (hp["xe"] * class_loss(out["attributes"]) + hp["attri"] * F.mse_loss(out["attributes"].float(), target)
                 + hp["l_attri"] * F.mse_loss(out["prototype_attributes"].float(), target))
        if hp["l_xe"]:
            total = total + hp["l_xe"] * class_loss(out["prototype_attributes"])
        if hp["l_regular"] or hp["regular"]:
            total = total + decorrelation(head.prototypes, head.global_vectors, self.groups(), hp["l_regular"],
                                          hp["regular"])
        if hp["cpt"] and hp["groups"] != "none" and not self.warm:   # official: with groups, after the warm-up
            per_sample = compactness(out["similarity"].float()) / len(y)
            total = total + hp["cpt"] * per_sample * self.batch_total   # the official sum over the whole batch
        return total

    def attention_maps(self, x, attribute_weights=None) -> dict[str, np.ndarray]:
        """{"prototype similarity": [N, H, W]}: each attribute's similarity map, softmax over the cells."""
        import torch

        return {"prototype similarity": self.weighted_attention(
            x, lambda out: torch.softmax(out["similarity"].flatten(2), -1), attribute_weights)}
