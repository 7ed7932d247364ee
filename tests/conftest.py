from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_METADATA = REPO.parent / "shared" / "zsl-metadata"

# Small enough to build in seconds, large enough that every attribute value has two seen classes.
TINY_SYNTHETIC = {"seed": 3, "n_classes": 28, "n_unseen": 5, "images_per_class": 12, "min_size": 48,
                  "max_size": 56, "family_size": 4}
TINY_BACKBONE = {"arch": "resnet10t", "input_size": 32, "epochs": 1, "batch_size": 32, "lr": 0.05}


@pytest.fixture
def shared_metadata() -> Path:
    if not SHARED_METADATA.is_dir():
        pytest.skip(f"real dataset metadata not available at {SHARED_METADATA} (it sits beside the repository "
                    "in the development workspace; CI clones do not have it)")
    return SHARED_METADATA


def write_params(root: Path, methods=("eszsl", "ale"), seeds=(0, 1)) -> None:
    import yaml

    params = {
        "datasets": ["synthetic"],
        "features": {"synthetic-resnet10t": {"dataset": "synthetic", "backbone": "resnet10t"}},
        "sources": {"synthetic": dict(TINY_SYNTHETIC)},
        "backbone": {"synthetic": {"resnet10t": dict(TINY_BACKBONE)}},
        "extract": {"synthetic": {"resnet10t": {"batch_size": 64, "levels": ["layer2", "layer3", "layer4"],
                                                "input_size": 64, "extra_sizes": [48]}}},   # APN's coarse@48
        "train": {"methods": list(methods), "seeds": list(seeds), "folds": "auto", "selection_metric": "H",
                  "search": True, "device": "cpu", "precision": "fp32", "micro_batch": None},
        "methods": {m: {} for m in (*methods, "mgmrn")},
        "ablate": {"method": "mgmrn", "variants": [], "seeds": [0]},
        "launch": {"launcher": "local", "workers": None},   # dvc.yaml's ablate stage tracks the section
        "tracking": {"mlflow": False},
        "compare": {},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A project folder with a tiny synthetic dataset prepared, a backbone trained and features extracted."""
    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    root = tmp_path_factory.mktemp("project")
    write_params(root)
    paths = ProjectPaths(root)
    params = load_params(paths)
    stages.prepare("synthetic", params, paths, progress=False)
    stages.backbone("synthetic", params, paths, progress=False)
    stages.extract("synthetic", params, paths, progress=False)
    return root


def pipeline_checkout(root: Path) -> Path:
    """What a clone holds for `dvc repro` (dvc.yaml, .dvcignore and the code its stages name) copied to `root`,
    so a test can run the real pipeline in a fresh git + DVC repository there (params.yaml is the test's)."""
    root.mkdir(parents=True, exist_ok=True)
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / f, root)
    for sub in ("pipelines", "zsl_bench", "methods"):
        shutil.copytree(REPO / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__"))
    # The copied folders under the names pip installs them as (pyproject.toml's package-dir), so that a process
    # with checkout_env(root) imports this checkout's code, not the editable install's.
    names = checkout_imports(root)
    names.mkdir(exist_ok=True)
    for name, folder in (("zsl_bench", "zsl_bench"), ("zsl_bench_methods", "methods"), ("zsl_bench_pipelines", "pipelines")):
        (names / name).symlink_to(root / folder, target_is_directory=True)
    return root


def checkout_imports(root: Path) -> Path:
    return root.parent / f"{root.name}-imports"


def checkout_env(root: Path, *more_paths) -> dict:
    """os.environ for a process that runs a `pipeline_checkout` copy's code (with `more_paths` on PYTHONPATH)."""
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout_imports(root)), *map(str, more_paths)])}


def copy_project(src: Path, dst: Path) -> Path:
    """A private copy of a project folder (the prepared folder points at the raw images by a relative path,
    which the copy keeps intact)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture
def project_copy(tiny_project, tmp_path) -> Path:
    """A private copy of the tiny project, for tests that write runs or reports."""
    return copy_project(tiny_project, tmp_path / "project")


@pytest.fixture(scope="session")
def region_project(tiny_project, tmp_path_factory) -> Path:
    """The tiny project with an attribute embedding (random vectors standing in for MiniLM, which would
    cost a model load) and its features re-extracted, as region methods need both."""
    import numpy as np

    from zsl_bench import stages
    from zsl_bench.data.dataset import attach_attribute_embeddings, load_dataset
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    root = copy_project(tiny_project, tmp_path_factory.mktemp("region") / "project")
    paths = ProjectPaths(root)
    d = load_dataset(paths.prepared("synthetic"))
    vectors = np.random.default_rng(0).normal(size=(d.n_attributes, 24)).astype(np.float32)
    attach_attribute_embeddings(paths.prepared("synthetic"), {"minilm": (vectors, {"kind": "minilm",
                                                                                   "source": "random (tests)"})})
    stages.extract("synthetic", load_params(paths), paths, progress=False)
    return root


TINY_CLIP = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="session")
def clip_data(region_project, tmp_path_factory):
    """(dataset, store, model, model name) of the region project's dataset through a tiny random-initialised
    open_clip model (3 blocks of 32 × 4 × 4 tokens) as a `pretrained` backbone from a weights file, what an
    offline user sets, extracted by the real code: a token store with CLIP class text, which serves the
    methods a CNN's store cannot (token methods, CLIP zero-shot)."""
    import json

    open_clip = pytest.importorskip("open_clip")
    import torch

    from zsl_bench.backbone import BackboneSpec, describe_untrained
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.feature_extraction import extract
    from zsl_bench.features import ExtractSpec, FeatureStore

    tmp = tmp_path_factory.mktemp("clip")
    name = "zsl-tiny-clip-tests"
    (tmp / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    torch.save(model.state_dict(), tmp / "weights.pt")
    describe_untrained(BackboneSpec(arch=name, library="open_clip", source="pretrained", input_size=32,
                                    weights_file=str(tmp / "weights.pt")), tmp / "backbone")
    dataset = load_dataset(region_project / "data" / "prepared" / "synthetic")
    levels = ("resblocks.0", "resblocks.1", "resblocks.2")
    store = FeatureStore(extract(dataset, tmp / "backbone", tmp / "store",
                                 ExtractSpec(levels=levels, input_size=32, batch_size=64, vectors="backbone"),
                                 progress=False))
    return dataset, store, model, name


@pytest.fixture(scope="session")
def region_data(region_project):
    """(dataset, feature store) of the region project, for tests that drive the evaluator directly."""
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.features import FeatureStore

    return (load_dataset(region_project / "data" / "prepared" / "synthetic"),
            FeatureStore(region_project / "features" / "synthetic" / "resnet10t"))


@pytest.fixture(scope="session")
def trained_template(tiny_project, tmp_path_factory) -> Path:
    """The tiny project with eszsl and ale trained for seeds 0 and 1, trained once per session (~10 s).
    Tests never write here: they get a private copy from `trained_project`."""
    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    root = copy_project(tiny_project, tmp_path_factory.mktemp("trained") / "project")
    paths = ProjectPaths(root)
    params = load_params(paths)
    for method in ("eszsl", "ale"):
        for seed in (0, 1):
            stages.train_run("synthetic", method, seed, params, paths, progress=False)
    return root


@pytest.fixture
def trained_project(trained_template, tmp_path) -> Path:
    """A private copy of the trained tiny project (copy on write: each test may change its copy)."""
    return copy_project(trained_template, tmp_path / "project")
