"""CLIP text semantics through open_clip (zsl_bench/clip_text.py and the `clip` attribute embedding), on a tiny
random-initialised open_clip model registered from a config: open_clip's own code paths, no download."""
import json

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from zsl_bench import attribute_embeddings as ae  # noqa: E402
from zsl_bench import clip_text as ct  # noqa: E402
from zsl_bench.data.dataset import attach_attribute_embeddings, load_dataset, write_dataset  # noqa: E402
from zsl_bench.io import DataError  # noqa: E402

TINY = "zsl-tiny-clip"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
ATTRIBUTES = ["has_bill_shape::curved_(up_or_down)", "has_wing_color::red", "has_wing_color::blue", "stripes"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model (both towers, random weights, seeded), its weights file, and a ClipText over it."""
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / f"{TINY}.json")   # open_clip's public way to register a model config
    torch.manual_seed(0)
    model = open_clip.create_model(TINY).eval()
    weights = folder / "tiny.pt"
    torch.save(model.state_dict(), weights)
    encoder = ct.ClipText(model, open_clip.get_tokenizer(TINY), TINY, "random-init", "in memory")
    return model, weights, encoder


def reference_text(model, texts):
    """Unit-norm text embeddings straight from open_clip's encode_text, independent of ClipText."""
    with torch.no_grad():
        e = model.encode_text(open_clip.get_tokenizer(TINY)(texts)).double()
    return (e / e.norm(dim=-1, keepdim=True)).numpy()


def test_the_prompt_file_is_versioned_and_holds_clips_templates():
    default = ct.load_prompts()
    assert default.name == "ensemble7" and default.version == ct.read_prompt_file()["version"]
    # open_clip keeps its own copies of CLIP's notebook lists: ours, written from the notebook, agree.
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
    assert list(default.templates) == [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]
    assert list(ct.load_prompts("imagenet80").templates) == [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    assert ct.load_prompts(for_attributes=True).templates == ("a photo of something with {}.",)
    assert "openai/CLIP" in ct.read_prompt_file()["source"]


def test_xlsa17_class_names_become_words():
    assert ct.clean_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert ct.clean_class_name("grizzly+bear") == "grizzly bear"
    assert ct.clean_class_name("forest_broadleaf") == "forest broadleaf"
    assert ct.clean_class_name("abbey") == "abbey"


def test_text_embeddings_are_unit_norm_repeatable_and_distinct(tiny):
    model, _, encoder = tiny
    texts = ["a photo of something with stripes.", "a photo of something with wing color red.",
             "a photo of something with stripes."]
    e = encoder.encode(texts)
    assert e.shape == (3, 32) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(e[0], e[2], atol=1e-6)              # the same prompt, the same vector
    np.testing.assert_array_equal(e, encoder.encode(texts))        # and again on a second call
    assert not np.allclose(e[0], e[1], atol=1e-3)                  # another attribute, another vector
    np.testing.assert_allclose(e, reference_text(model, texts), atol=1e-6)


def test_class_name_embeddings_are_clips_prompt_ensemble(tiny):
    model, _, encoder = tiny
    names = ["001.Black_footed_Albatross", "grizzly+bear", "forest_broadleaf"]
    prompts = ct.load_prompts("ensemble7")
    vectors, origin = ct.class_name_embeddings(names, encoder, prompts)
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for row, clean in zip(vectors, ["Black footed Albatross", "grizzly bear", "forest broadleaf"]):
        per_template = reference_text(model, [t.format(clean) for t in prompts.templates])
        mean = per_template.mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
        assert not np.allclose(row, per_template[0], atol=1e-3)    # ensembling did something
    assert origin["text_model"] == TINY and origin["pretrained"] == "random-init"
    assert origin["templates"] == "ensemble7" and origin["templates_version"] == prompts.version
    assert origin["texts"] == ["Black footed Albatross", "grizzly bear", "forest broadleaf"]
    # the default set is the prompt file's class-name default
    default, default_origin = ct.class_name_embeddings(names, encoder)
    np.testing.assert_array_equal(default, vectors)
    assert default_origin["templates_digest"] == origin["templates_digest"]


def test_clip_attribute_embedding_is_the_attribute_template_through_the_text_tower(tiny):
    model, _, encoder = tiny
    names = [*ATTRIBUTES, "has_wing_color::red"]
    vectors, origin = ae.clip_embeddings(names, encoder)
    assert vectors.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    texts = [f"a photo of something with {ae.clean_attribute_name(n)}." for n in names]
    np.testing.assert_allclose(vectors, reference_text(model, texts), atol=1e-6)
    np.testing.assert_allclose(vectors[1], vectors[4], atol=1e-6)   # one phrase: one vector (to a batch's rounding)
    assert not np.allclose(vectors[1], vectors[2], atol=1e-3)     # red wing vs blue wing
    assert origin["kind"] == "clip" and origin["text_model"] == TINY
    assert origin["templates"] == "attribute" and origin["templates_version"] == ct.load_prompts().version


def tiny_dataset(root, tmp_path, attribute_names=ATTRIBUTES):
    splits = {"trainval": np.array([0]), "test_seen": np.array([], dtype=int), "test_unseen": np.array([1])}
    write_dataset(root, name="tiny", source="test", class_names=["001.A_b", "c+d"], attribute_names=attribute_names,
                  image_root=tmp_path, image_files=["a.jpg", "b.jpg"], labels=np.array([0, 1]),
                  original_att=np.ones((2, len(attribute_names))), seen_classes=np.array([0]),
                  unseen_classes=np.array([1]), splits=splits, folds={}, checks=[])
    return load_dataset(root)


def test_clip_kind_from_a_weights_file_lands_in_the_prepared_dataset(tiny, tmp_path):
    _, weights, encoder = tiny
    ds = tiny_dataset(tmp_path / "prepared", tmp_path)
    spec = ct.ClipModelSpec(TINY, "tiny-test-weights", weights_file=weights)
    vectors, origin = ae.compute("clip", ds, tmp_path / "downloads", clip=spec)
    np.testing.assert_allclose(vectors, ae.clip_embeddings(ATTRIBUTES, encoder)[0], atol=1e-6)   # same weights
    attach_attribute_embeddings(ds.root, {"clip": (vectors, origin)})
    again = load_dataset(ds.root)
    np.testing.assert_array_equal(again.attribute_embeddings()["clip"], vectors)
    recorded = again.meta["attribute_embeddings"]["clip"]
    assert recorded["text_model"] == TINY and recorded["pretrained"] == "tiny-test-weights"
    assert recorded["weights"] == "file tiny.pt" and recorded["templates_version"] == ct.load_prompts().version
    assert recorded["open_clip"] == open_clip.__version__ and recorded["shape"] == [4, 32]


@pytest.mark.parametrize("content, message", [
    (None, "no such prompt-template file"),
    ("{not json", "not readable as JSON"),
    (json.dumps({"templates": {"a": ["x {}"]}}), "non-empty 'version'"),
    (json.dumps({"version": "v", "templates": {"a": ["no placeholder"]}}), r"templates\.a must be"),
    (json.dumps({"version": "v", "templates": {"a": ["{} and {}"]}}), r"templates\.a must be"),
    (json.dumps({"version": "v", "templates": {"a": ["x {}"]}, "defaults": {"class_names": "b", "attributes": "a"}}),
     "defaults.class_names and defaults.attributes must name sets"),
])
def test_a_missing_or_malformed_template_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "templates.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        ct.load_prompts(path=path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_no_weights_offline_is_one_line_saying_what_to_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(open_clip, "download_pretrained", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))     # open_clip's URL cache (~/.cache/clip) is empty too
    ds = tiny_dataset(tmp_path / "prepared", tmp_path)
    with pytest.raises(DataError) as e:
        ae.compute("clip", ds, tmp_path / "downloads")   # the default: ViT-B-16 / openai
    msg = str(e.value)
    assert "ViT-B-16 (openai)" in msg and "HF_HUB_OFFLINE" in msg and "weights_file" in msg and "\n" not in msg
    assert "https://huggingface.co/timm/vit_base_patch16_clip_224.openai (open_clip_model.safetensors)" in msg
    with pytest.raises(DataError, match="weights_file .*nowhere.pt: no such file"):
        ct.load_clip(ct.ClipModelSpec(weights_file=tmp_path / "nowhere.pt"))
    with pytest.raises(DataError, match="no such pretrained tag .*known: .*openai"):
        ct.load_clip(ct.ClipModelSpec(pretrained="not-a-tag"))
    with pytest.raises(DataError, match="open_clip has no model 'ViT-Nope'"):
        ct.load_clip(ct.ClipModelSpec(model="ViT-Nope"))


def test_a_weights_file_of_a_known_tag_is_built_like_the_tag(tiny, tmp_path, monkeypatch):
    """openai's weights need QuickGELU and their own preprocessing: a local copy must get them as the tag would."""
    _, weights, _ = tiny
    tag = {"hf_hub": "org/repo/", "quick_gelu": True, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    real = open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda m, t: tag if (m, t) == (TINY, "tagged") else real(m, t))
    model, where = ct.load_clip(ct.ClipModelSpec(TINY, "tagged", weights_file=weights))
    assert where == "file tiny.pt"
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert open_clip.get_model_preprocess_cfg(model)["mean"] == (0.5, 0.5, 0.5)
    plain, _ = ct.load_clip(ct.ClipModelSpec(TINY, "untagged", weights_file=weights))
    assert not isinstance(plain.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_weights_of_another_model_are_a_data_error(tiny, tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match=f"other.pt: not open_clip weights of {TINY}"):
        ct.load_clip(ct.ClipModelSpec(TINY, "x", weights_file=bad))


def test_image_tower_gives_embeddings_and_a_patch_grid(tiny):
    model, weights, _ = tiny
    tower, info = ct.open_clip_image_tower(TINY, "tiny-test-weights", weights_file=weights)
    assert info.image_size == (32, 32) and info.embed_dim == 32 and info.weights == "file tiny.pt"
    assert info.mean == tuple(open_clip.OPENAI_DATASET_MEAN) and info.std == tuple(open_clip.OPENAI_DATASET_STD)
    assert not any(p.requires_grad for p in tower.parameters()) and not tower.training
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = tower(images)
        np.testing.assert_allclose(pooled.numpy(), model.encode_image(images).numpy(), atol=1e-5)
        assert pooled.shape == (3, info.embed_dim)
        assert hasattr(tower, "forward_intermediates")
        grid = ct.patch_grid(tower, images)
        assert grid.shape == (3, 64, 4, 4)          # width 64, 32 / patch 8 = 4 × 4, class token dropped
        tower.output_tokens = True                  # open_clip's own token output: ln_post(x)[:, 1:]
        try:
            _, tokens = tower(images)
        finally:
            tower.output_tokens = False
    np.testing.assert_allclose(grid.permute(0, 2, 3, 1).reshape(3, 16, 64).numpy(), tokens.numpy(), atol=1e-5)
