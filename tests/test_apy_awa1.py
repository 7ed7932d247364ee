"""APY and AWA1, the release-only xlsa17 datasets: small releases in the real layout (tests/real_layouts.py)
served over local HTTP, prepared by their sources as the prepare stage does, their vectors imported; and every
shipped method's defaults for them."""
from importlib.metadata import entry_points

import numpy as np
import pytest
from scipy.io import loadmat

from tests import real_layouts
from tests.httpserver import FileServer
from zsl_bench.data import apy, awa1
from zsl_bench.data.dataset import load_dataset
from zsl_bench.io import DataError


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    releases = {"APY": real_layouts.apy_release()}
    releases["AWA1"], base = real_layouts.awa1_release()
    (root / "xlsa17.zip").write_bytes(real_layouts.xlsa17_zip(list(releases.values())))
    (root / "AwA2-base.zip").write_bytes(base)
    return {"root": root, **releases}


@pytest.fixture
def server(www, monkeypatch):
    """The published sizes are the real ones; the small releases' own stand in."""
    for module in (apy, awa1):
        monkeypatch.setattr(module, "SIZES", www[module.NAME].sizes)
    with FileServer(www["root"]) as s:
        yield s


def prepare(module, server, tmp_path, **params):
    return load_dataset(module.prepare_source(tmp_path / "raw" / module.NAME, tmp_path / "prepared" / module.NAME,
                                              {"mirror": server.url, "images": False, **params}, progress=False,
                                              downloads=tmp_path / "downloads"))


def res101(release) -> dict:
    import io

    return loadmat(io.BytesIO(release.files["res101.mat"]))


def test_apy_keeps_res101_row_order_with_its_repeated_voc_files(server, tmp_path, www):
    d = prepare(apy, server, tmp_path)
    assert d.class_names == real_layouts.APY_CLASSES and d.n_attributes == 64
    assert [d.class_names[c] for c in d.unseen_classes] == sorted(real_layouts.APY_UNSEEN, key=d.class_names.index)
    assert len(d.seen_classes) == 20 and len(d.unseen_classes) == 12
    assert all((len(d.fold_classes(k)[0]), len(d.fold_classes(k)[1])) == (15, 5) for k in d.folds)
    assert d.meta["images_downloaded"] is False and d.meta["attribute_names_known"] is False
    assert d.meta["att_splits_version"] == "2.0"
    # res101's order is not a directory listing (aPascal objects, then aYahoo): rows stay as the release lists them
    np.testing.assert_array_equal(d.labels, res101(www["APY"])["labels"].ravel() - 1)
    assert "rows in res101.mat order as listed there, labels in allclasses order" in d.meta["checks"]
    assert len(set(d.image_files)) < len(d.image_files), "one VOC file per object"
    assert d.image_files[0].startswith("JPEGImages/") and d.image_files[-1].startswith("ayahoo_test_images/")
    sizes = www["APY"].sizes
    assert [len(d.splits[s]) for s in ("trainval", "test_seen", "test_unseen")] == \
        [sizes.trainval, sizes.test_seen, sizes.test_unseen]
    assert [name for name, _ in server.requests] == ["xlsa17.zip"]

    from zsl_bench.feature_import import import_res101

    out = import_res101(d, d.xlsa17_dir / "res101.mat", tmp_path / "features",   # checks labels row for row
                        {"spec": {"source": "xlsa17_res101"}, "arch": "resnet101", "pretraining_data": "imagenet-1k"})
    np.testing.assert_array_equal(np.load(out / "pooled.npy"),
                                  res101(www["APY"])["features"].T.astype(np.float32))


def test_awa1_names_its_attributes_from_awa2_metadata_and_keeps_the_missing_values(server, tmp_path, www):
    d = prepare(awa1, server, tmp_path)
    assert d.class_names == real_layouts.AWA_CLASSES and len(d.seen_classes) == 40 and len(d.unseen_classes) == 10
    assert d.meta["attribute_names_known"] is True and d.attribute_names[:4] == real_layouts.PREDICATES
    cells = {(c["class"], c["attribute"]) for c in d.meta["missing_values"]["cells"]}
    assert cells == {("antelope", p) for p in real_layouts.PREDICATES}
    assert (d.original_att[0, :4] == -1).all() and d.meta["missing_values"]["policy"] == "keep"
    np.testing.assert_array_equal(d.labels, res101(www["AWA1"])["labels"].ravel() - 1)
    assert sorted(name for name, _ in server.requests) == ["AwA2-base.zip", "xlsa17.zip"]
    zero = prepare(awa1, server, tmp_path / "zero", missing_values="zero")
    assert (zero.original_att[0, :4] == 0).all()


@pytest.mark.parametrize("module", [apy, awa1], ids=["APY", "AWA1"])
def test_images_true_is_one_line_saying_why_and_what_to_set(module, server, tmp_path):
    with pytest.raises(DataError, match=rf"sources\.{module.NAME}\.images: true, but .*(no image release|no longer "
                                        r"distributed).*; set `images: false`") as e:
        prepare(module, server, tmp_path, images=True)
    assert "\n" not in str(e.value)
    assert server.requests == [] and not (tmp_path / "raw").exists()


def test_zsl_bench_datasets_lists_them_with_the_shared_release(tmp_path):
    from zsl_bench.catalog import datasets_text
    from zsl_bench.paths import ProjectPaths

    text = datasets_text({"datasets": [], "sources": {}}, ProjectPaths(tmp_path))
    assert "APY: missing" in text and "AWA1: missing" in text and "AwA2-base.zip: missing" in text
    assert "xlsa17.zip (the split release) serves APY, AWA1, AWA2, CUB, SUN" in text


SHIPPED = sorted(ep.name for ep in entry_points(group="zsl_bench.methods"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_method_and_variant_has_defaults_for_apy_and_awa1(name):
    """No per-method override needed: each resolves its defaults (the train stage does so even for a method it
    then skips, as map methods are on release-only features) and a grid over its own hyperparameters; AWA1
    takes AWA2's setting wherever a method names AWA1."""
    from zsl_bench.registry import get_method

    base = get_method(name)
    for cls in [base, *(get_method(f"{name}.{v}") for v in base.variants)]:
        for ds in ("APY", "AWA1"):
            assert set(cls.search_space(ds)) <= set(cls.default_hparams(ds)), (cls.name, ds)
        if "AWA1" in base.profiles:
            assert cls.default_hparams("AWA1") == cls.default_hparams("AWA2"), cls.name
