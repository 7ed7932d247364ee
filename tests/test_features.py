"""Backbones and the feature store."""
import numpy as np
import pytest

from zsl_bench.backbone import BackboneSpec, describe_pretrained, load_backbone
from zsl_bench.data.dataset import load_dataset
from zsl_bench.features import FeatureStore
from zsl_bench.io import DataError, read_json


def test_trained_backbone_saw_only_fold_train_images(tiny_project):
    info = read_json(tiny_project / "data" / "backbones" / "synthetic" / "backbone.json")
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    trained = info["trained_on"]
    assert trained["split"] == "fold1_train"
    assert trained["n_images"] == len(d.splits["fold1_train"])
    train_c, val_c = d.fold_classes(1)
    assert set(trained["classes"]) == set(train_c)
    assert not set(trained["classes"]) & (set(val_c) | set(d.unseen_classes))


def test_store_is_float16_memory_mapped_and_indexed(tiny_project):
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(tiny_project / "features" / "synthetic")
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
    model, info = load_backbone(tiny_project / "data" / "backbones" / "synthetic")
    x = to_normalised_tensor(load_batch([d.image_path(7)], info["spec"]["input_size"]))
    with torch.inference_mode():
        direct = model(x).numpy()[0]
    stored = FeatureStore(tiny_project / "features" / "synthetic").rows(np.array([7]))[0]
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)  # float16 storage


def test_store_from_another_dataset_version_is_refused(tiny_project, tmp_path):
    import shutil

    dst = tmp_path / "features"
    shutil.copytree(tiny_project / "features" / "synthetic", dst)
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
    folder = describe_pretrained(spec, tmp_path / "backbone")
    model, info = load_backbone(folder)
    assert info["pretraining_data"] == "imagenet-1k" and info["trained_on"] is None
    assert model.num_features == 512
    torch.testing.assert_close(model.state_dict()["conv1.0.weight"], reference.state_dict()["conv1.0.weight"])


def test_backbone_spec_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown backbone parameters"):
        BackboneSpec.from_params({"arch": "resnet10t", "epoch": 3})
    with pytest.raises(ValueError, match="source must be"):
        BackboneSpec.from_params({"source": "imagenet"})
