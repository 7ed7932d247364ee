"""Backbones and the feature store."""
import numpy as np
import pytest

from zsl_bench.backbone import BackboneSpec, describe_untrained, load_backbone
from zsl_bench.data.dataset import load_dataset
from zsl_bench.features import FeatureStore
from zsl_bench.io import DataError, read_json


def test_trained_backbone_saw_only_fold_train_images(tiny_project):
    info = read_json(tiny_project / "data" / "backbones" / "synthetic" / "resnet10t" / "backbone.json")
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    trained = info["trained_on"]
    assert trained["split"] == "fold1_train"
    assert trained["n_images"] == len(d.splits["fold1_train"])
    train_c, val_c = d.fold_classes(1)
    assert set(trained["classes"]) == set(train_c)
    assert not set(trained["classes"]) & (set(val_c) | set(d.unseen_classes))


def test_store_is_float16_memory_mapped_and_indexed(tiny_project):
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(tiny_project / "features" / "synthetic" / "resnet10t")
    arr = store.array()
    assert isinstance(arr, np.memmap) and arr.dtype == np.float16
    assert arr.shape[0] == len(d.labels)
    assert store.index["arrays"]["pooled"]["shape"] == list(arr.shape)
    rows = store.rows(np.array([0, 5]))
    assert rows.dtype == np.float32 and rows.shape == (2, arr.shape[1])
    assert np.isfinite(rows).all() and (rows >= 0).all()  # pooled after ReLU
    store.check_matches(d)


def test_extracted_features_match_the_backbone_on_the_same_image(tiny_project):
    import torch

    from zsl_bench.images import load_batch, to_normalised_tensor

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    model, info = load_backbone(tiny_project / "data" / "backbones" / "synthetic" / "resnet10t")
    store = FeatureStore(tiny_project / "features" / "synthetic" / "resnet10t")
    x = to_normalised_tensor(load_batch([d.image_path(7)], store.index["input_size"]))
    with torch.inference_mode():
        direct = model(x).numpy()[0]
    stored = store.rows(np.array([7]))[0]
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)  # float16 storage


def test_the_gpu_loading_path_gives_the_cpu_path_inputs(tiny_project):
    """What extraction does on a GPU, run here: images decoded by a thread pool, kept uint8 until normalised
    where the model runs. Its inputs are the CPU path's exactly, at both crops and the backbone's statistics."""
    import torch

    from zsl_bench.feature_extraction import _device_path, input_statistics

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    model, info = load_backbone(tiny_project / "data" / "backbones" / "synthetic" / "resnet10t")
    norm = input_statistics(model, info)
    images = [d.image_path(r) for r in range(0, 40, 3)]
    cpu_load, cpu_run = _device_path(model, "cpu", norm)
    pooled_load, pooled_run = _device_path(model, "cpu", norm, pipelined=True)
    for crop in ("none", "center"):
        batch = pooled_load(images, 40, crop)
        assert batch.dtype == torch.uint8 and batch.shape == (len(images), 3, 40, 40)
        assert torch.equal(pooled_run(batch), cpu_run(cpu_load(images, 40, crop)))


def test_store_from_another_dataset_version_is_refused(tiny_project, tmp_path):
    import shutil

    dst = tmp_path / "features"
    shutil.copytree(tiny_project / "features" / "synthetic" / "resnet10t", dst)
    index = read_json(dst / "index.json")
    index["dataset_fingerprint"] = "0" * 64
    from zsl_bench.io import write_json

    write_json(dst / "index.json", index)
    with pytest.raises(DataError, match="another version"):
        FeatureStore(dst).check_matches(load_dataset(tiny_project / "data" / "prepared" / "synthetic"))


def test_pretrained_backbone_loads_offline_from_a_local_weight_file(tmp_path):
    """Real datasets use ImageNet weights; offline, params name a local file (timm's file overlay)."""
    import timm
    import torch

    reference = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    weights = tmp_path / "resnet10t.pth"
    torch.save(reference.state_dict(), weights)
    spec = BackboneSpec(arch="resnet10t", source="pretrained", weights_file=str(weights),
                        pretraining_data="imagenet-1k", input_size=64)
    folder = describe_untrained(spec, tmp_path / "backbone")
    model, info = load_backbone(folder)
    assert info["pretraining_data"] == "imagenet-1k" and info["trained_on"] is None
    assert model.num_features == 512
    torch.testing.assert_close(model.state_dict()["conv1.0.weight"], reference.state_dict()["conv1.0.weight"])


def test_backbone_spec_rejects_unknown_settings():
    with pytest.raises(DataError, match="unknown backbone parameters"):
        BackboneSpec.from_params({"arch": "resnet10t", "epoch": 3})
    with pytest.raises(DataError, match="source must be"):
        BackboneSpec.from_params({"source": "imagenet"})


def test_npy_rows_reads_any_rows_in_the_order_asked(tmp_path):
    from zsl_bench.features import NpyRows

    data = np.arange(7 * 3 * 2 * 2, dtype=np.float16).reshape(7, 3, 2, 2)
    f = NpyRows.create(tmp_path / "m.npy", data.shape, np.float16)
    f.write(0, data[:4])
    f.write(4, data[4:])
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), data)   # a plain .npy for any reader
    rows = [5, 0, 1, 2, 6, 6]
    np.testing.assert_array_equal(NpyRows.open(tmp_path / "m.npy").read(rows), data[rows])
    with pytest.raises(IndexError):
        f.read([7])


def test_map_extraction_resumes_after_an_interruption(tiny_project, tmp_path):
    from zsl_bench.feature_extraction import extract
    from zsl_bench.features import ExtractSpec

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    backbone = tiny_project / "data" / "backbones" / "synthetic" / "resnet10t"
    spec = ExtractSpec(levels=("layer3", "layer4"), batch_size=64)
    full = FeatureStore(extract(d, backbone, tmp_path / "full", spec, progress=False))
    with pytest.raises(KeyboardInterrupt):
        extract(d, backbone, tmp_path / "cut", spec, progress=False, stop_after_batches=2)
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial" / "progress.json").is_file()
    resumed = FeatureStore(extract(d, backbone, tmp_path / "cut", spec, progress=False))
    from zsl_bench.provenance import read_provenance

    assert read_provenance(tmp_path / "cut")["resumed_from_row"] == 128   # noise: outside index.json
    assert "resumed_from_row" not in resumed.index
    for name in ("pooled", "layer3", "layer4"):
        assert resumed.shape(name) == full.shape(name)
        assert resumed.fingerprint(name) == full.fingerprint(name)
    n, c, h, w = full.shape("layer4")
    assert (n, c) == (len(d.labels), 512) and h == w
    # the pooled vector is the spatial mean of the last map (global average pooling)
    np.testing.assert_allclose(full.read([3])[0], full.read([3], "layer4")[0].mean(axis=(1, 2)), atol=2e-2)


def test_res101_vectors_are_imported_in_dataset_row_order(tiny_project, tmp_path):
    from scipy.io import savemat

    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.feature_import import import_res101
    from tests.real_layouts import cell

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    feats = np.random.default_rng(0).random((len(d.labels), 2048))
    savemat(tmp_path / "res101.mat", {"features": feats.T, "labels": (d.labels + 1).reshape(-1, 1).astype(float),
                                      "image_files": cell([f"/a/b/c/{f}" for f in d.image_files])})
    info = {"spec": vars(BackboneSpec(arch="resnet101", source="xlsa17_res101")), "arch": "resnet101",
            "pretraining_data": "imagenet-1k", "trained_on": None}
    store = FeatureStore(import_res101(d, tmp_path / "res101.mat", tmp_path / "store", info))
    np.testing.assert_allclose(store.read([0, 5]), feats[[0, 5]].astype(np.float32))
    bad = d.labels.copy()
    bad[[0, 1]] = bad[[1, 0]] if bad[0] != bad[1] else (bad[0] + 1, bad[1])
    savemat(tmp_path / "bad.mat", {"features": feats.T, "labels": (bad + 1).reshape(-1, 1).astype(float)})
    with pytest.raises(DataError, match="labels differ"):
        import_res101(d, tmp_path / "bad.mat", tmp_path / "store2", info)


def write_dazle_hdf5(path, d, maps, leaky=True):
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("feature_map", data=maps)
        f.create_dataset("labels", data=d.labels)
        for key in ("trainval", "test_seen", "test_unseen"):
            f.create_dataset(f"{key}_loc", data=d.splits[key])
        f.create_dataset("att", data=d.att)
        f.create_dataset("original_att", data=d.original_att)
        f.create_dataset("w2v_att", data=np.zeros((d.n_attributes, 300)))
        if leaky:  # DAZLE's SUN/AWA2 files carry the v1 fields; they must be ignored
            f.create_dataset("train_loc", data=d.splits["test_seen"])


def test_dazle_hdf5_is_read_lazily_after_checking_it_matches(tiny_project, tmp_path):
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.feature_import import register_hdf5

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    maps = np.random.default_rng(1).random((len(d.labels), 8, 3, 3)).astype(np.float32)
    write_dazle_hdf5(tmp_path / "f.hdf5", d, maps)
    info = {"spec": vars(BackboneSpec(arch="resnet101", source="hdf5", features_file=str(tmp_path / "f.hdf5"))),
            "arch": "resnet101", "pretraining_data": "imagenet-1k", "trained_on": None}
    store = FeatureStore(register_hdf5(d, tmp_path / "f.hdf5", tmp_path / "store", info))
    assert store.index["ignored_keys"] == ["train_loc"]
    np.testing.assert_array_equal(store.read([9, 2, 2], "layer4"), maps[[9, 2, 2]])
    shuffled = d.labels[::-1].copy()
    import h5py

    with h5py.File(tmp_path / "f.hdf5", "r+") as f:
        f["labels"][...] = shuffled
    with pytest.raises(DataError, match="labels differ"):
        register_hdf5(d, tmp_path / "f.hdf5", tmp_path / "store3", info)
