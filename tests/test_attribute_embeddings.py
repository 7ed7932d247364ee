"""Attribute text embeddings: pinned word2vec pickles over HTTP, and the offline sentence model."""
import hashlib
import os
import pickle

import numpy as np
import pytest

from tests.httpserver import FileServer
from zsl_bench import attribute_embeddings as ae
from zsl_bench.data.download import DownloadError, FetchOptions
from zsl_bench.io import DataError


def blob(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@pytest.fixture
def served_pickle(tmp_path, monkeypatch):
    vectors = np.random.default_rng(0).normal(size=(85, 300))
    data = pickle.dumps(vectors, protocol=2)
    www = tmp_path / "www"
    www.mkdir()
    (www / "AWA2_attribute.pkl").write_bytes(data)
    monkeypatch.setitem(ae.W2V_BLOBS, "AWA2", blob(data))
    with FileServer(www) as server:
        yield server, vectors, www


def test_word2vec_vectors_download_checked_against_their_git_blob(served_pickle, tmp_path):
    server, vectors, _ = served_pickle
    got, origin = ae.word2vec("AWA2", tmp_path / "dl", 85, FetchOptions(mirror=server.url, progress=False))
    np.testing.assert_array_equal(got, vectors)
    assert origin["kind"] == "w2v" and origin["git_blob"] == ae.W2V_BLOBS["AWA2"]
    with pytest.raises(DataError, match=r"shape \(85, 300\), the dataset has 84 attributes"):
        ae.word2vec("AWA2", tmp_path / "dl", 84, FetchOptions(mirror=server.url, progress=False))


def test_word2vec_vectors_accept_a_copy_the_user_has(served_pickle, tmp_path):
    """`from: [~/AWA2_attribute.pkl]` (or `zsl-bench download AWA2 --from …`), checked like a download."""
    _, vectors, www = served_pickle
    own = tmp_path / "mine" / "AWA2_attribute.pkl"
    own.parent.mkdir()
    own.write_bytes((www / "AWA2_attribute.pkl").read_bytes())
    offline = FetchOptions(from_paths=(own,), progress=False)   # no mirror, no network needed
    got, _ = ae.word2vec("AWA2", tmp_path / "dl", 85, offline)
    np.testing.assert_array_equal(got, vectors)


def test_a_tampered_pickle_fails_its_pin(served_pickle, tmp_path):
    server, vectors, www = served_pickle
    (www / "AWA2_attribute.pkl").write_bytes(pickle.dumps(vectors * 2, protocol=2))
    with pytest.raises(DownloadError, match="git_blob"):
        ae.word2vec("AWA2", tmp_path / "dl", 85, FetchOptions(mirror=server.url, progress=False))


def test_a_pickle_that_is_not_a_plain_array_is_refused_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="refusing to load"):
        ae.load_array_pickle(path)
    assert not (tmp_path / "pwned").exists()


def test_no_word2vec_for_the_embedded_default():
    with pytest.raises(DataError, match="minilm"):
        ae.w2v_remote("synthetic")


def test_attribute_names_are_cleaned_for_the_sentence_model():
    assert ae.clean_attribute_name("has_bill_shape::curved_(up_or_down)") == "bill shape curved up or down"
    assert ae.clean_attribute_name("sailing/ boating") == "sailing boating"


@pytest.mark.parametrize("name", ["CUB", "SUN", "AWA2"])
def test_pinned_shapes_match_the_published_vectors(shared_metadata, name):
    vectors = np.load(shared_metadata / name / "attribute_w2v_300d.npy", allow_pickle=False)
    assert vectors.shape == ae.W2V_SHAPES[name]
    if name == "SUN":
        assert not vectors[88].any(), "SUN's man-made vector is all zeros (guard every normalisation)"


@pytest.mark.slow
def test_sentence_embeddings_offline_and_attached_to_the_dataset(project_copy):
    from zsl_bench import stages
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(project_copy)
    params = load_params(paths)
    params["sources"]["synthetic"]["attribute_embeddings"] = ["minilm"]
    before = load_dataset(paths.prepared("synthetic")).fingerprint()
    stages.prepare("synthetic", params, paths, progress=False)
    d = load_dataset(paths.prepared("synthetic"))
    vectors = d.attribute_embeddings()["minilm"]
    assert vectors.shape == (d.n_attributes, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    names = d.attribute_names
    red_wing, red_body = names.index("has_wing_color::red"), names.index("has_primary_color::red")
    needle = names.index("has_bill_shape::needle")
    assert vectors[red_wing] @ vectors[red_body] > vectors[red_wing] @ vectors[needle]
    assert d.meta["attribute_embeddings"]["minilm"]["source"] == ae.SENTENCE_MODEL
    assert d.fingerprint() != before
