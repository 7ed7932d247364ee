"""The backbone axis: token models' patch tokens as maps (ViT, DeiT with its distillation token, DINOv2 with
registers, CLIP image towers from timm and from open_clip) through the real extraction code, on tiny
random-initialised models of those families loaded from a weights file; methods trained end to end on a
tiny ViT's features beside the CNN's; and bad input, one line each."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from zsl_bench.backbone import BackboneSpec, create_timm_model, describe_untrained, load_backbone  # noqa: E402
from zsl_bench.data.dataset import load_dataset  # noqa: E402
from zsl_bench.feature_extraction import extract, input_statistics  # noqa: E402
from zsl_bench.features import ExtractSpec, FeatureStore  # noqa: E402
from zsl_bench.images import load_batch_for_backbone  # noqa: E402
from zsl_bench.io import DataError  # noqa: E402

TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2, "patch_size": 8}
# family → (timm model, prefix tokens before the patch tokens: class, distillation, registers)
FAMILIES = {"vit": ("vit_tiny_patch16_224", 1), "deit-distilled": ("deit_tiny_distilled_patch16_224", 2),
            "dinov2-registers": ("vit_small_patch14_reg4_dinov2", 5), "clip-timm": ("vit_base_patch16_clip_224", 1)}
SIZE = 32   # 4 × 4 patches of 8 px


def published_backbone(folder, spec: BackboneSpec, model) -> "Path":  # noqa: F821
    """A backbone folder of source `pretrained` whose weights are a local file (what offline users set)."""
    folder.mkdir(parents=True)
    weights = folder.parent / f"{folder.name}.pt"
    torch.save(model.state_dict(), weights)
    out = folder / "backbone"
    from dataclasses import replace

    describe_untrained(replace(spec, weights_file=str(weights)), out)
    return out


def block_tokens(block, model, x) -> torch.Tensor:
    """What `block` outputs for `x` ([N, tokens, C]), caught by a hook: independent of forward_intermediates."""
    seen = []
    handle = block.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.inference_mode():
        model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_token_models_store_their_patch_tokens_as_maps_on_the_grid(tiny_project, tmp_path, family):
    arch, prefix = FAMILIES[family]
    spec = BackboneSpec(arch=arch, source="pretrained", model_kwargs=TINY, input_size=SIZE)
    torch.manual_seed(0)
    folder = published_backbone(tmp_path / family, spec, create_timm_model(spec, pretrained=False))
    dataset = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(extract(dataset, folder, tmp_path / "store",
                                 ExtractSpec(levels=("blocks.1", "blocks.2"), input_size=SIZE, batch_size=16,
                                             vectors="backbone", extra_sizes=(16,)), progress=False))
    n = len(dataset.labels)
    assert store.levels == ["blocks.1", "blocks.2"]
    assert store.shape("blocks.2") == (n, 32, 4, 4) and store.shape("blocks.2@16") == (n, 32, 2, 2)
    assert store.shape("pooled") == (n, 32)
    assert store.resolve("coarse") == "blocks.2" and store.resolve("mid") == "blocks.1"
    assert store.resolve("coarse@16") == "blocks.2@16" and store.resolve("fine") == "fine"   # two levels only

    model, info = load_backbone(folder)
    assert model.num_prefix_tokens == prefix
    rows = [0, 5, 9]
    x = load_batch_for_backbone([dataset.image_path(r) for r in rows], SIZE, "none", *input_statistics(model, info))
    tokens = block_tokens(model.blocks[2], model, x)
    assert tokens.shape == (3, prefix + 16, 32)
    # Class, distillation and register tokens dropped; patch tokens row-major on the 4 × 4 grid.
    grid = tokens[:, prefix:].reshape(3, 4, 4, 32).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(store.read(rows, "blocks.2"), grid, atol=2e-2, rtol=1e-2)
    with torch.inference_mode():
        pooled = model(x).numpy()   # the model's own pooling (class token, or the distilled average) and norm
    np.testing.assert_allclose(store.read(rows, "pooled"), pooled, atol=2e-2, rtol=1e-2)


def test_an_open_clip_image_tower_is_a_backbone(tiny_project, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    name = "zsl-tiny-clip-backbone"
    config = {"embed_dim": 24, "vision_cfg": {"image_size": SIZE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    clip = open_clip.create_model(name).eval()
    spec = BackboneSpec(arch=name, library="open_clip", source="pretrained", input_size=SIZE)
    folder = published_backbone(tmp_path / "clip", spec, clip)
    dataset = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(extract(dataset, folder, tmp_path / "store",
                                 ExtractSpec(levels=("resblocks.0", "resblocks.1"), input_size=SIZE, batch_size=16,
                                             vectors="backbone"), progress=False))
    assert store.shape("resblocks.1")[1:] == (32, 4, 4) and store.shape("pooled")[1:] == (24,)
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert index["normalisation"]["mean"] == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN))  # CLIP's, not ImageNet's

    model, info = load_backbone(folder)
    rows = [1, 2]
    x = load_batch_for_backbone([dataset.image_path(r) for r in rows], SIZE, "none", *input_statistics(model, info))
    tokens = block_tokens(clip.visual.transformer.resblocks[1], clip.visual, x)
    grid = tokens[:, 1:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(store.read(rows, "resblocks.1"), grid, atol=2e-2, rtol=1e-2)
    with torch.inference_mode():
        np.testing.assert_allclose(store.read(rows, "pooled"), clip.encode_image(x).numpy(), atol=2e-2, rtol=1e-2)
    with pytest.raises(DataError, match="takes 32 px"):
        model.forward_intermediates(torch.zeros(1, 3, 48, 48), [1])


@pytest.fixture(scope="module")
def two_backbones(region_project, tmp_path_factory):
    """The region project with a tiny ViT trained here beside its CNN, both extracted: a (dataset, backbone)
    pair each."""
    import yaml

    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from tests.conftest import copy_project

    root = copy_project(region_project, tmp_path_factory.mktemp("two") / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["features"]["synthetic-vit"] = {"dataset": "synthetic", "backbone": "vit"}
    params["backbone"]["synthetic"]["vit"] = {"arch": "vit_tiny_patch16_224", "model_kwargs": TINY,
                                              "input_size": SIZE, "epochs": 1, "batch_size": 32, "lr": 1e-3,
                                              "optimizer": "adamw", "weight_decay": 0.05}
    params["extract"]["synthetic"]["vit"] = {"batch_size": 64, "levels": ["blocks.0", "blocks.1", "blocks.2"],
                                             "input_size": SIZE, "extra_sizes": [16]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = ProjectPaths(root)
    params = load_params(paths)
    stages.backbone("synthetic", params, paths, progress=False, name="vit")
    stages.extract("synthetic", params, paths, progress=False, name="vit")
    return root


@pytest.mark.parametrize("method", ["eszsl", "dazle", "mgmrn"])
def test_methods_train_on_a_vits_tokens_as_on_a_cnns_maps(two_backbones, method):
    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import RunRecord

    paths = ProjectPaths(two_backbones)
    params = load_params(paths)
    params["train"]["search"] = "none"
    runs = {b: RunRecord.read(stages.train_run("synthetic", method, 0, params, paths, progress=False, backbone=b))
            for b in ("resnet10t", "vit")}
    vit, cnn = runs["vit"], runs["resnet10t"]
    assert vit.folder.parent == paths.run_slot("synthetic", "vit", method, 0)
    assert vit.backbone == "vit" and vit.feature_set == "synthetic/vit" and vit["key_spec"]["backbone"] == "vit"
    assert vit.run_key != cnn.run_key and vit["data"]["features"]["backbone"]["arch"] == "vit_tiny_patch16_224"
    arrays = vit["data"]["features"]["arrays"]
    assert arrays == {"eszsl": ["pooled"], "dazle": ["blocks.2"], "mgmrn": ["blocks.0", "blocks.1", "blocks.2"]}[method]
    if method == "mgmrn":   # a ViT's levels share one grid: no resize brings them there (halvings auto → equal)
        assert cnn["data"]["features"]["arrays"] == ["layer2", "layer3", "layer4"]
    assert 0.0 <= vit.metrics("val")["H"] <= 100.0 and 0.0 < vit.metrics("val")["T1"] <= 100.0   # percent


def test_compare_one_method_across_backbones(two_backbones):
    import subprocess
    import sys

    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(two_backbones)
    params = load_params(paths)
    params["train"]["search"] = "none"
    for b in ("resnet10t", "vit"):
        for seed in (0, 1):
            stages.train_run("synthetic", "eszsl", seed, params, paths, progress=False, backbone=b)
    out = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "eszsl", "--backbone", "resnet10t", "vit",
                          "--runs", str(paths.runs)], cwd=two_backbones, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "eszsl@resnet10t" in out.stdout and "Δ eszsl@vit − eszsl@resnet10t" in out.stdout
    one = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "eszsl", "ale", "--backbone", "vit",
                          "--runs", str(paths.runs)], cwd=two_backbones, capture_output=True, text=True)
    assert "synthetic/vit" in one.stdout and "synthetic/resnet10t" not in one.stdout
    bad = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "eszsl", "--backbone", "swin"],
                         cwd=two_backbones, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown backbone swin" in bad.stderr and "resnet10t" in bad.stderr
    # METHOD@BACKBONE rows: methods on different backbones in one table per dataset, paired by seed
    for seed in (0, 1):
        stages.train_run("synthetic", "ale", seed, params, paths, progress=False, backbone="vit")
    mixed = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "ale@vit", "eszsl@resnet10t",
                            "--runs", str(paths.runs)], cwd=two_backbones, capture_output=True, text=True)
    assert mixed.returncode == 0, mixed.stderr
    assert "## synthetic\n" in mixed.stdout and "Δ eszsl@resnet10t − ale@vit" in mixed.stdout
    assert "synthetic/vit" not in mixed.stdout and "no seed run by both" not in mixed.stdout
    half = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "ale@vit", "eszsl"],
                          cwd=two_backbones, capture_output=True, text=True)
    assert half.returncode == 2 and "name every row METHOD@BACKBONE" in half.stderr


def test_the_report_has_a_section_per_backbone_and_their_overlap(two_backbones, tmp_path):
    import csv

    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import find_records, newest_per_seed
    from zsl_bench.report import write_reports

    paths = ProjectPaths(two_backbones)
    params = load_params(paths)
    params["train"]["search"] = "none"
    for b in ("resnet10t", "vit"):
        stages.train_run("synthetic", "sae", 0, params, paths, progress=False, backbone=b)
    records = [r for r in find_records(paths.runs) if r.method == "sae"]
    assert sorted(r.backbone for r in newest_per_seed(records)) == ["resnet10t", "vit"]   # one per backbone and seed
    write_reports(records, tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "## synthetic/resnet10t — selection: val" in md and "## synthetic/vit — selection: val" in md
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {(r["dataset"], r["backbone"]) for r in rows} == {("synthetic", "resnet10t"), ("synthetic", "vit")}
    overlap = (tmp_path / "overlap.md").read_text()
    # trained here on seen classes: nothing to overlap, said per backbone
    assert overlap.count("## synthetic · ") == 2 and "Flag: none" in overlap and "Pretraining overlap:" not in md
    assert "| pretraining overlap |" in md and {r["pretraining_overlap"] for r in rows} == {"none"}
    # a web-pretrained backbone's section: the flag on every row, whatever the method
    from zsl_bench.report import results_markdown, overlap_summaries

    flagged = {label: {**s, "flag": "possible"} for label, s in overlap_summaries(records).items()}
    md = results_markdown(newest_per_seed(records), None, flagged)
    table = md.split("## synthetic/vit — selection: val")[1].split("\n\n")[2]
    assert "Pretraining overlap: **possible**" in md
    assert [line.rstrip(" |").rsplit("| ", 1)[1] for line in table.splitlines()[2:]] == ["possible"]


def test_bad_backbones_are_one_line_errors(tiny_project, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="timm has no such model"):
        create_timm_model(BackboneSpec(arch="vit_nonesuch_patch16"), pretrained=False)
    # weights of another architecture
    cnn = BackboneSpec(arch="resnet10t", source="pretrained", input_size=SIZE)
    folder = published_backbone(tmp_path / "cnn", cnn, create_timm_model(cnn, pretrained=False))
    vit = json.loads((folder / "backbone.json").read_text())
    vit["spec"].update(arch="vit_tiny_patch16_224", model_kwargs=TINY)
    (folder / "backbone.json").write_text(json.dumps(vit))
    with pytest.raises(DataError, match="not weights of vit_tiny_patch16_224"):
        load_backbone(folder)
    # published weights without the network and without a weights_file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    describe_untrained(BackboneSpec(arch="vit_tiny_patch16_224", source="pretrained"), tmp_path / "hub")
    with pytest.raises(DataError, match="set `weights_file`"):
        load_backbone(tmp_path / "hub")
    with pytest.raises(DataError, match="library must be one of timm, open_clip"):
        BackboneSpec.from_params({"arch": "x", "library": "keras"})


def test_a_map_method_on_a_store_without_maps_names_the_setting(two_backbones, tmp_path):
    import shutil

    import yaml

    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from tests.conftest import copy_project

    root = copy_project(two_backbones, tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["extract"]["synthetic"]["vit"].update(levels=[], extra_sizes=[])
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = ProjectPaths(root)
    shutil.rmtree(paths.features("synthetic", "vit"))
    params = load_params(paths)
    stages.extract("synthetic", params, paths, progress=False, name="vit")
    with pytest.raises(DataError, match=r"no 'coarse' array .*extract\.synthetic\.vit\.levels"):
        stages.train_run("synthetic", "dazle", 0, params, paths, progress=False, backbone="vit")


def test_status_plans_the_ablation_on_the_ablated_backbone_only(two_backbones):
    """`zsl-bench status` (and `sweep`) plan per pair with the whole params.yaml: `ablate.backbones: default`
    is the dataset's first backbone of all of `features`, not the first of a one-pair copy (which listed the
    ablation as missing on every other backbone)."""
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.run_status import configured_jobs, status

    paths = ProjectPaths(two_backbones)
    params = load_params(paths)
    params["ablate"].update(variants=["levels2"], seeds=[0])
    ablation = {(s.dataset, s.method) for s in status(params, paths) if s.stage == "ablation"}
    assert ablation and {d for d, _ in ablation} == {"synthetic/resnet10t"}, ablation
    assert {j.request.backbone for j in configured_jobs(params, paths) if j.request.stage == "ablation"} == {"resnet10t"}
