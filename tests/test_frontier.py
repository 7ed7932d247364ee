"""The frontier rows' shared machinery: a CLIP backbone's store holds its own text tower's class embeddings
(class names through the dataset's versioned templates, and attribute text), `clipzs` scores CLIP's logits
from them through the real evaluator, a store without them or a CNN's maps under a token-model method is a
recorded skip in a sweep and a one-line error when asked for by hand, and a prompt file missing a dataset or
naming a class the dataset lacks is one line naming the file and the key."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from zsl_bench.clip_text import TEMPLATES_FILE, clean_class_name, dataset_class_prompts  # noqa: E402
from zsl_bench.data.dataset import load_dataset  # noqa: E402
from zsl_bench.features import ExtractSpec, FeatureStore  # noqa: E402
from zsl_bench.io import DataError  # noqa: E402
from zsl_bench.registry import get_method  # noqa: E402
from zsl_bench.runner import NotApplicable, check_applicable  # noqa: E402

@pytest.fixture(scope="module")
def clip_store(clip_data):
    return clip_data


def encode(model, name, texts) -> np.ndarray:
    """Unit-norm text embeddings straight from open_clip (independent of zsl_bench.clip_text)."""
    with torch.no_grad():
        e = model.encode_text(open_clip.get_tokenizer(name)(texts)).double()
    return torch.nn.functional.normalize(e, dim=-1).numpy()


def test_a_clip_store_holds_its_own_text_towers_class_embeddings(clip_store):
    dataset, store, model, name = clip_store
    text = store.class_text()
    assert set(text) == {"names", "attributes"} and store.token_maps
    # names: CLIP's prompt ensembling of each cleaned class name through the dataset's set (synthetic: Birdsnap's)
    templates = json.loads(TEMPLATES_FILE.read_text())["templates"]["birdsnap"]
    expected = np.stack([encode(model, name, [t.format(clean_class_name(c)) for t in templates]).mean(0)
                         for c in dataset.class_names])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(text["names"], expected, atol=1e-5)
    # attributes: each class, its attribute phrases' embeddings weighted by its attribute values
    phrases = encode(model, name, [f"a photo of something with {p}." for p in
                                   [a.split("::")[0].removeprefix("has_").replace("_", " ") + " " +
                                    a.split("::")[1].replace("_", " ") for a in dataset.attribute_names]])
    mixed = np.clip(dataset.original_att, 0, None) @ phrases
    np.testing.assert_allclose(text["attributes"], mixed / np.linalg.norm(mixed, axis=1, keepdims=True), atol=1e-5)
    origin = store.index["class_text"]["names"]
    assert origin["templates"] == "birdsnap" and origin["templates_version"] == "clip-prompts-v2"
    assert store.shape("class_text@names") == (len(dataset.class_names), 24)


def test_clipzs_scores_are_clips_logits_and_its_numbers_follow_from_them(clip_store):
    """Through the real evaluator: ZSL T1 under `last` (γ = 0) is the per-class accuracy of the argmax of
    100 · cos(image, class-name text) over the unseen classes, recomputed here from the store alone; the
    attribute-text variant is recorded from the same run."""
    from zsl_bench.evaluator import Evaluator

    dataset, store, _, _ = clip_store
    out = Evaluator(dataset, store, get_method("clipzs"), seed=0, search=False, progress=False).run()
    rows = dataset.splits["test_unseen"]
    images = store.read(rows, "pooled").astype(np.float64)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    unseen = np.asarray(dataset.unseen_classes)
    for variant, kind in (("", "names"), ("attributes", "attributes")):
        text = store.class_text()[kind][unseen].astype(np.float64)
        pred = unseen[np.argmax(images @ text.T, axis=1)]
        labels = dataset.labels[rows]
        t1 = np.mean([np.mean(pred[labels == c] == c) for c in unseen])
        run = out if not variant else out.score_variants[variant]
        assert run.selection["last"]["metrics"]["T1"] == pytest.approx(t1, abs=1e-9), variant
    assert 0 <= out.selection["val"]["metrics"]["H"] <= 1


def test_clipzs_without_class_text_and_token_methods_on_cnn_maps_are_skipped(tiny_project, clip_store):
    cnn = FeatureStore(tiny_project / "features" / "synthetic" / "resnet10t")
    clipzs = get_method("clipzs")
    with pytest.raises(NotApplicable, match="needs a CLIP backbone's class text .* synthetic/resnet10t"):
        check_applicable(clipzs, cnn, clipzs.default_hparams("synthetic", {}))
    check_applicable(clipzs, clip_store[1], clipzs.default_hparams("synthetic", {}))   # a CLIP store serves it

    class TokenOnly(get_method("eszsl")):
        name = "tokenonly"
        requires_token_maps = True

    assert not cnn.token_maps
    with pytest.raises(NotApplicable, match="reads a token model's patch tokens .* holds a CNN's maps"):
        check_applicable(TokenOnly, cnn, TokenOnly.default_hparams("synthetic", {}))
    check_applicable(TokenOnly, clip_store[1], TokenOnly.default_hparams("synthetic", {}))


def test_asking_by_hand_for_a_run_the_store_cannot_serve_is_one_line(project_copy):
    """The train stage records the skip (`skipped.json`, shown in the tables); `zsl-bench train` was asked for
    exactly that run, so it says why in one line and exits 2, writing nothing."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ZSL_BENCH_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "train", "--method", "clipzs", "--dataset", "synthetic"],
                          cwd=project_copy, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "clipzs needs a CLIP backbone's class text" in lines[0] and "--backbone" in lines[0]
    assert not list((project_copy / "runs").rglob("clipzs"))


def test_the_prompt_file_names_every_dataset_and_only_its_classes(tmp_path):
    data = json.loads(TEMPLATES_FILE.read_text())
    for dataset in ("CUB", "SUN", "AWA2", "AWA1", "APY", "synthetic"):
        prompts, _ = dataset_class_prompts(dataset, ["001.Black_footed_Albatross"])
        assert prompts.templates == tuple(data["templates"][data["datasets"][dataset]["templates"]])
    broken = tmp_path / "prompts.json"
    missing = {**data, "datasets": {k: v for k, v in data["datasets"].items() if k != "AWA2"}}
    broken.write_text(json.dumps(missing))
    with pytest.raises(DataError, match=r"prompts.json: datasets.AWA2 must name the template set .* has no entry"):
        dataset_class_prompts("AWA2", ["antelope"], broken)
    renamed = {**data, "datasets": {**data["datasets"], "AWA2": {"templates": "animals",
                                                                  "class_names": {"grizzly+bear": "grizzly bear",
                                                                                  "unicorn": "unicorn"}}}}
    broken.write_text(json.dumps(renamed))
    with pytest.raises(DataError, match=r"datasets.AWA2.class_names: 'unicorn' is not a class of AWA2"):
        dataset_class_prompts("AWA2", ["antelope", "grizzly+bear"], broken)
    renamed["datasets"]["AWA2"]["class_names"].pop("unicorn")
    broken.write_text(json.dumps(renamed))
    assert dataset_class_prompts("AWA2", ["antelope", "grizzly+bear"], broken)[1] == ["antelope", "grizzly bear"]
