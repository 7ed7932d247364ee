"""CLIP zero-shot: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
ICML 2021 (README here).

No training: a test image's score for a class is CLIP's logit, the cosine of its image embedding with the
class's text embedding times CLIP's temperature (100). Both embeddings come from the feature store of a CLIP
backbone (`library: open_clip`): its pooled vectors are the image tower's projected embeddings, and the same
model's text tower embedded each class at extraction (`class_text@names`: the class name through the
dataset's prompt templates, zsl_bench/prompts/clip_templates.json; `class_text@attributes`: the class's
attribute phrases, weighted by its attribute values). `clipzs.attributes` scores against the latter, read
off the same run. On a store without class text (any other backbone) the run is skipped with its reason.
"""
from __future__ import annotations

import numpy as np

from zsl_bench.method import ClassSemantics, FitContext, Method, PaperRule, TrainData

TEXT_KINDS = ("names", "attributes")


class ClipZeroShot(Method):
    input_kind = "vector"
    device = "cpu"
    # It reads every class's name, unseen ones included, and CLIP's pretraining may have seen their images
    # (reports/overlap.md): both are part of what its row means.
    uses_unseen_semantics = True
    paper = "Radford et al., ICML 2021"
    paper_rule = PaperRule(checkpoint="validation", calibration="zero",
                           source="Radford et al., ICML 2021, §3.1.4 and openai/CLIP notebooks/"
                                  "Prompt_Engineering_for_ImageNet.ipynb: argmax of 100 · cosine over the class "
                                  "prompts, no calibration (CLIP reports no GZSL; nothing is selected)")
    profiles = {"*": {"text": "names", "logit_scale": 100.0}}
    search_spaces = {"*": {}}
    score_variants = {"attributes": {"text": "attributes"}}

    @classmethod
    def feature_arrays(cls, hparams: dict) -> tuple[str, ...]:
        # both text kinds: the score variant is read off this run's store
        return ("pooled", *(f"class_text@{kind}" for kind in TEXT_KINDS))

    def fit(self, train: TrainData, ctx: FitContext) -> None:
        kind = self.hparams["text"]
        if kind not in TEXT_KINDS:
            raise ValueError(f"{self.name}: text must be one of {', '.join(TEXT_KINDS)}, not {kind!r}")
        if kind not in train.semantics.text:
            raise ValueError(f"{self.name}: the feature store holds no class text '{kind}' (a CLIP backbone's "
                             "extraction writes it)")

    def score(self, x: np.ndarray, semantics: ClassSemantics) -> np.ndarray:
        images = np.asarray(x, dtype=np.float64)
        images = images / np.linalg.norm(images, axis=1, keepdims=True)
        text = np.asarray(semantics.text[self.hparams["text"]], dtype=np.float64)
        return float(self.hparams["logit_scale"]) * images @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
