"""Real-dataset sources end to end over a local HTTP server, with archives in the real layouts."""
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests import real_layouts
from tests.httpserver import FileServer
from zsl_bench.data import awa2, cub, sun
from zsl_bench.data.dataset import load_dataset
from zsl_bench.data.download import DownloadError
from zsl_bench.io import DataError


@pytest.fixture(scope="module")
def www(tiny_project, tmp_path_factory):
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    root = tmp_path_factory.mktemp("www")
    (root / "CUB_200_2011.tgz").write_bytes(real_layouts.cub_tgz(tiny_project / "data" / "raw" / "synthetic"))
    cub_release = real_layouts.xlsa17_release(
        d, "CUB", d.class_names, d.image_files, f"{real_layouts.CLUSTER_PREFIX}/MSc/CUB_200_2011/CUB_200_2011/images/")
    awa2_zip, awa2_base, awa2_release = real_layouts.awa2(d)
    (root / "AwA2-data.zip").write_bytes(awa2_zip)
    (root / "AwA2-base.zip").write_bytes(awa2_base)
    sun_meta, sun_images, sun_release = real_layouts.sun(d)
    (root / "SUNAttributeDB.tar.gz").write_bytes(sun_meta)
    (root / "SUNAttributeDB_Images.tar.gz").write_bytes(sun_images)
    (root / "xlsa17.zip").write_bytes(real_layouts.xlsa17_zip([cub_release, awa2_release, sun_release]))
    return {"root": root, "d": d, "sizes": {"CUB": cub_release.sizes, "AWA2": awa2_release.sizes,
                                            "SUN": sun_release.sizes}}


@pytest.fixture
def server(www):
    with FileServer(www["root"]) as s:
        yield s


@pytest.fixture
def small_sizes(monkeypatch, www):
    """The published sizes are CUB's real ones; our archives are small, so their own sizes stand in."""
    for module, name in ((cub, "CUB"), (awa2, "AWA2"), (sun, "SUN")):
        monkeypatch.setattr(module, "SIZES", www["sizes"][name])
    data = (www["root"] / "CUB_200_2011.tgz").read_bytes()
    monkeypatch.setattr(cub, "ARCHIVE", dataclasses.replace(cub.ARCHIVE, size=len(data),
                                                            md5=hashlib.md5(data).hexdigest()))


def project(tmp_path):
    return tmp_path / "data" / "raw", tmp_path / "data" / "prepared", tmp_path / "data" / "downloads"


def test_cub_downloads_verifies_extracts_and_loads(server, small_sizes, tmp_path, www):
    raw, prepared, downloads = project(tmp_path)
    out = cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url}, progress=False,
                             downloads=downloads)
    d = load_dataset(out)
    assert d.n_classes == www["d"].n_classes and len(d.labels) == len(www["d"].labels)
    assert "res101.mat image list and labels agree with the images on disk, row for row" in d.meta["checks"]
    assert any("sizes match" in c for c in d.meta["checks"])
    np.testing.assert_array_equal(d.labels, www["d"].labels)
    assert d.image_path(0).is_file()


def test_cub_resumes_a_dropped_download(server, small_sizes, tmp_path):
    raw, prepared, downloads = project(tmp_path)
    server.drop_after["CUB_200_2011.tgz"] = 50_000
    cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url}, progress=False, downloads=downloads)
    ranges = [r for name, r in server.requests if name == "CUB_200_2011.tgz"]
    assert ranges[0] is None and ranges[1] == "bytes=50000-"
    assert load_dataset(prepared / "CUB").n_classes > 0


def test_cub_wrong_checksum_ends_in_a_clear_error_and_no_dataset(server, small_sizes, monkeypatch, tmp_path):
    monkeypatch.setattr(cub, "ARCHIVE", dataclasses.replace(cub.ARCHIVE, md5="0" * 32))
    raw, prepared, downloads = project(tmp_path)
    with pytest.raises(DownloadError, match="md5 .* differs"):
        cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url}, progress=False, downloads=downloads)
    assert not (prepared / "CUB").exists() and not (raw / "CUB").exists()


def test_corrupt_archive_ends_in_a_clear_error_and_no_partial_folder(server, small_sizes, www, tmp_path):
    raw, prepared, downloads = project(tmp_path)
    downloads.mkdir(parents=True)
    good = (www["root"] / "xlsa17.zip").read_bytes()
    broken = tmp_path / "xlsa17.zip"
    broken.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url, "from": [str(broken)]},
                           progress=False, downloads=downloads)
    assert not (prepared / "CUB").exists()
    leftovers = [p for p in raw.rglob("*") if ".tmp-" in p.name] if raw.exists() else []
    assert leftovers == []


def test_unreachable_host_names_what_to_do(small_sizes, tmp_path):
    raw, prepared, downloads = project(tmp_path)
    with pytest.raises(DownloadError, match="(?s)xlsa17.zip.*--mirror URL.*--from PATH"):
        cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": "http://127.0.0.1:9"}, progress=False,
                           downloads=downloads)


def test_cub_release_only_builds_the_dataset_from_res101(server, small_sizes, tmp_path, www):
    raw, prepared, downloads = project(tmp_path)
    out = cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url, "images": False},
                             progress=False, downloads=downloads)
    d = load_dataset(out)
    np.testing.assert_array_equal(d.labels, www["d"].labels)
    assert d.image_files == www["d"].image_files
    assert d.meta["images_downloaded"] is False and d.attribute_names[0] == "attribute_001"
    assert ("CUB_200_2011.tgz", None) not in server.requests


def test_awa2_records_and_applies_the_missing_value_policy(server, small_sizes, tmp_path):
    raw, prepared, downloads = project(tmp_path)
    d = load_dataset(awa2.prepare_source(raw / "AWA2", prepared / "AWA2", {"mirror": server.url}, progress=False,
                                         downloads=downloads))
    cells = d.meta["missing_values"]["cells"]
    assert {(c["class"], c["attribute"]) for c in cells} == {("antelope", p) for p in real_layouts.PREDICATES}
    antelope = d.class_names.index("antelope")
    assert (d.original_att[antelope, :4] == -1).all() and d.meta["missing_values"]["policy"] == "keep"
    zero = load_dataset(awa2.prepare_source(raw / "AWA2z", prepared / "AWA2z",
                                            {"mirror": server.url, "missing_values": "zero"}, progress=False,
                                            downloads=downloads))
    assert (zero.original_att[antelope, :4] == 0).all() and zero.meta["missing_values"]["policy"] == "zero"
    assert d.image_files[0].split("/")[0] in d.class_names


def test_sun_joins_nested_scene_folders_and_checks_class_means(server, small_sizes, tmp_path, www):
    raw, prepared, downloads = project(tmp_path)
    d = load_dataset(sun.prepare_source(raw / "SUN", prepared / "SUN", {"mirror": server.url}, progress=False,
                                        downloads=downloads))
    assert "scene00_outdoor" in d.class_names
    assert float(d.meta["notes"][0].rsplit(" ", 1)[1]) < 1e-12   # the class means agree
    assert "every image of images.mat is on disk" in d.meta["checks"]
    assert len(d.labels) == len(www["d"].labels)


def test_missing_images_are_refused_naming_the_folder(server, small_sizes, tmp_path, www):
    raw, prepared, downloads = project(tmp_path)
    cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url}, progress=False, downloads=downloads)
    folder = raw / "CUB" / "CUB_200_2011" / "images"
    first = sorted(folder.iterdir())[0]
    first.rename(first.with_name(first.name + "_renamed"))
    with pytest.raises(DataError, match=r"images: \d+ of the \d+ images of images.txt are missing"):
        cub.prepare(raw / "CUB", raw / "CUB" / "xlsa17" / "data" / "CUB", tmp_path / "out", "CUB")
    assert not (tmp_path / "out").exists()


def test_datasets_status_moves_from_missing_to_verified_to_prepared(server, small_sizes, tmp_path):
    from zsl_bench.catalog import datasets_text, download, status
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(tmp_path)
    params = {"datasets": ["CUB"], "sources": {"CUB": {"mirror": server.url}}}
    assert status("CUB", params, paths).status == "missing"
    paths.downloads.mkdir(parents=True)
    (paths.downloads / "CUB_200_2011.tgz.part").write_bytes(b"x" * 10)
    s = status("CUB", params, paths)
    assert s.status == "missing" and any("partial" in a for a in s.archives)
    (paths.downloads / "CUB_200_2011.tgz.part").unlink()
    download("CUB", params, paths, mirror=None, from_paths=[], images=None, progress=False)
    s = status("CUB", params, paths)
    assert s.status == "verified" and all("verified" in a for a in s.archives)
    assert "md5 match the pinned value" in s.archives[0]
    cub.prepare_source(paths.raw("CUB"), paths.prepared("CUB"), params["sources"]["CUB"], progress=False,
                       downloads=paths.downloads)
    s = status("CUB", params, paths)
    assert s.status == "prepared" and s.bytes_on_disk > 0 and s.command.endswith("dvc repro")
    text = datasets_text(params, paths)
    for name in ("CUB (in params.yaml): prepared", "SUN: missing", "AWA2: missing", "synthetic: missing",
                 "zsl-bench download SUN"):
        assert name in text


@pytest.mark.parametrize("module", [awa2, sun], ids=["AWA2", "SUN"])
def test_release_only_mode_needs_no_images(server, small_sizes, tmp_path, www, module):
    raw, prepared, downloads = project(tmp_path)
    d = load_dataset(module.prepare_source(raw / module.NAME, prepared / module.NAME,
                                           {"mirror": server.url, "images": False}, progress=False,
                                           downloads=downloads))
    assert d.meta["images_downloaded"] is False and d.meta["attribute_names_known"] is True
    assert len(d.labels) == len(www["d"].labels)
    assert not any("Images" in name or "data.zip" in name for name, _ in server.requests)


def test_hdf5_maps_through_the_pipeline_stages(project_copy):
    from tests.test_features import write_dazle_hdf5
    from zsl_bench import stages
    from zsl_bench.features import FeatureStore
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(project_copy)
    params = load_params(paths)
    d = load_dataset(paths.prepared("synthetic"))
    maps = np.random.default_rng(2).random((len(d.labels), 4, 2, 2)).astype(np.float32)
    write_dazle_hdf5(project_copy / "maps.hdf5", d, maps, leaky=False)
    params["backbone"]["synthetic"]["resnet10t"] = {"arch": "resnet101", "source": "hdf5",
                                                    "pretraining_data": "imagenet-1k",
                                                    "features_file": str(project_copy / "maps.hdf5")}
    stages.backbone("synthetic", params, paths, progress=False)
    assert not (paths.backbone("synthetic", "resnet10t") / "weights.pt").exists(), "nothing is trained for an HDF5 source"
    store = FeatureStore(stages.extract("synthetic", params, paths, progress=False))
    np.testing.assert_array_equal(store.read([1, 0], "layer4"), maps[[1, 0]])


def test_a_real_dataset_s_vector_methods_read_the_xlsa17_vectors_and_apn_its_224_px_grid(server, small_sizes, tmp_path,
                                                                                          tiny_project):
    """params.yaml's CUB extraction (at a small input size here) keeps the backbone's maps for the map methods
    and serves xlsa17's published res101.mat vectors to every vector method, as their papers read them; APN
    in map mode reads layer4 of the images at its official 224 px (7 × 7). `vectors: backbone` is the one
    switch back to the extraction's own pooled vectors."""
    from zsl_bench import feature_extraction, features
    from zsl_bench.data.xlsa17 import read_res101
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.registry import get_method

    raw, prepared, downloads = project(tmp_path)
    d = load_dataset(cub.prepare_source(raw / "CUB", prepared / "CUB", {"mirror": server.url}, progress=False,
                                        downloads=downloads))
    repo = ProjectPaths(Path(__file__).resolve().parents[1])
    configured = load_params(repo)["extract"]["CUB"]["resnet101"]
    assert configured["vectors"] == "xlsa17_res101" and configured["extra_sizes"] == [224]
    backbone = tiny_project / "data" / "backbones" / "synthetic" / "resnet10t"   # the fixture's images are the tiny project's

    def store(**change):
        spec = features.ExtractSpec.from_params({**configured, "input_size": 64, "batch_size": 64, **change})
        return features.FeatureStore(feature_extraction.extract(d, backbone, tmp_path / "features" / "CUB" / "resnet101", spec,
                                                                        progress=False))

    s = store()
    read = lambda name, **hp: Evaluator.features_of(get_method(name), s, get_method(name).default_hparams("CUB", hp))
    for name in ("eszsl", "sae", "ale", "fclswgan", "tfvaegan"):
        assert read(name) == ("xlsa17_res101",), name
    assert read("dazle") == ("layer4",) and read("mgmrn") == ("layer2", "layer3", "layer4")
    assert read("apn") == ("layer4@224",) and s.shape("layer4@224")[2:] == (7, 7) and s.shape("layer4")[2:] == (2, 2)
    assert read("apn", map_size=None) == ("layer4",)
    published = read_res101(d.xlsa17_dir / "res101.mat", lambda p: p).features()
    np.testing.assert_array_equal(s.read(np.arange(len(d.labels)), s.vectors), published.astype(np.float32))
    assert s.shape("pooled")[1] != published.shape[1], "the backbone's own vectors are still there, apart"

    s = store(vectors="backbone", extra_sizes=[])
    assert read("eszsl") == ("pooled",) and "xlsa17_res101" not in s.names()
    with pytest.raises(DataError, match=r"extract\.CUB\.resnet101\.extra_sizes: \[224\]"):
        s.read([0], read("apn")[0])
