"""The generative family (f-CLSWGAN, TF-VAEGAN): the WGAN-GP penalty, that the generator learns the class
conditionals, the two final classifiers, that no unseen-class image reaches training, and a run through the
evaluator selecting both levels (generator epoch, classifier epoch) on validation."""
import numpy as np
import pytest
import torch

from zsl_bench import protocol
from zsl_bench.evaluator import Evaluator
from zsl_bench.feature_generation import MinMaxScaling, gradient_penalty
from zsl_bench.journal import RunJournal
from zsl_bench.method import ClassSemantics, FitContext, Task, TrainData
from zsl_bench.registry import get_method

GENERATIVE = ("fclswgan", "tfvaegan")
TINY = {"epochs": 2, "classifier_epochs": 2, "syn_num": 20, "ngh": 32, "ndh": 32, "hidden": 32,
        "pretrain_epochs": 2}


def tiny(cls, **extra) -> dict:
    base = cls.profile("synthetic")
    return {**base, **{k: v for k, v in {**TINY, **extra}.items() if k in base}}


def test_gradient_penalty_matches_a_hand_computation():
    """Critic D(x, a) = w₂·LeakyReLU(W₁[x; a] + b₁): ∇ₓD = W₁ₓᵀ (leaky′(pre) ⊙ w₂), by hand in numpy."""
    rng = np.random.default_rng(0)
    B, X, A, H = 5, 6, 3, 7
    W1, b1, w2 = rng.normal(size=(H, X + A)), rng.normal(size=H), rng.normal(size=H)
    real, fake, att, alpha = rng.normal(size=(B, X)), rng.normal(size=(B, X)), rng.normal(size=(B, A)), rng.random((B, 1))

    def critic(x, a):
        pre = torch.cat([x, a], 1) @ torch.as_tensor(W1).T + torch.as_tensor(b1)
        return torch.nn.functional.leaky_relu(pre, 0.2) @ torch.as_tensor(w2)[:, None]

    t = lambda v: torch.as_tensor(v)  # noqa: E731
    got = gradient_penalty(critic, t(real), t(fake), t(att), t(alpha)).item()
    mixed = alpha * real + (1 - alpha) * fake
    pre = np.concatenate([mixed, att], 1) @ W1.T + b1
    grad = (np.where(pre > 0, 1.0, 0.2) * w2) @ W1[:, :X]            # [B, X]
    expected = np.mean((np.linalg.norm(grad, axis=1) - 1) ** 2)
    assert got == pytest.approx(expected, rel=1e-12)
    # and it pulls a steep critic's slope towards 1: zero exactly when every gradient has unit norm
    assert expected > 0


def toy(n_per_class=40, dim=16, seed=0):
    """Four classes with well separated feature means (the fourth unseen) and one-hot-like attributes."""
    rng = np.random.default_rng(seed)
    means = rng.random((4, dim)) * 3
    att = np.eye(4, 6) + 0.1 * rng.random((4, 6))
    att /= np.linalg.norm(att, axis=1, keepdims=True)
    sem = lambda ids: ClassSemantics(class_ids=np.array(ids), att=att[ids], original=att[ids])  # noqa: E731
    y = np.repeat(np.arange(3), n_per_class)
    x = (means[y] + 0.1 * rng.normal(size=(len(y), dim))).astype(np.float32)
    task = Task(dataset="toy", attribute_names=tuple(f"a{i}" for i in range(6)), input_kind="vector",
                input_shape=(dim,))
    return TrainData(x=x, y=y, semantics=sem([0, 1, 2])), sem([3]), task, means


def fit(cls, hparams, train, unseen, task, checkpoints=None):
    method = cls(hparams, task, "cpu")
    ctx = FitContext(seed=0, device="cpu", progress=False,
                     _on_checkpoint=(checkpoints.append if checkpoints is not None else lambda e: None),
                     _unseen=unseen, _declared_unseen=cls.uses_unseen_semantics)
    method.fit(train, ctx)
    return method


@pytest.mark.parametrize("name", GENERATIVE)
def test_generated_features_move_toward_their_class(name):
    cls = get_method(name)
    train, unseen, task, _ = toy(n_per_class=200)
    # a WGAN alone learns the conditionals slowly; TF-VAEGAN's reconstruction loss, fast
    hp = tiny(cls, epochs={"fclswgan": 30, "tfvaegan": 15}[name], lr=3e-3, ngh=64, ndh=64, hidden=64,
              pretrain_epochs=20)
    method = fit(cls, hp, train, unseen, task)
    before = cls(hp, task, "cpu")
    before.n_seen = 3        # f-CLSWGAN's network holds the seen-class classifier
    torch.manual_seed(0)     # the fit's own seed: its initial networks
    before.net = before.build_net()
    scaled = method.scaling(train.x)
    class_means = np.stack([scaled[train.y == c].mean(0) for c in range(3)])
    torch.manual_seed(1)
    noise = torch.randn(200, task.n_attributes)

    def distances(m):
        m.net.eval()
        with torch.no_grad():
            out = []
            for c in range(3):
                a = torch.as_tensor(train.semantics.att[c], dtype=torch.float32).expand(200, -1)
                gen = m.synthesise(a, noise).numpy().mean(0)
                out.append(np.linalg.norm(class_means - gen, axis=1))
        return np.array(out)     # [generated class, real class]

    d0, d1 = distances(before), distances(method)
    assert np.all(np.diag(d1) < np.diag(d0)), (np.diag(d0), np.diag(d1))
    assert np.all(d1.argmin(1) == np.arange(3)), d1   # each class's features are nearest its own real mean


@pytest.mark.parametrize("name", GENERATIVE)
def test_zsl_scores_come_from_an_unseen_only_classifier_and_gzsl_from_the_all_class_one(name):
    cls = get_method(name)
    train, unseen, task, means = toy()
    unseen2 = ClassSemantics(class_ids=np.array([3]), att=unseen.att, original=unseen.original)
    method = fit(cls, tiny(cls), train, unseen2, task)
    x = means.astype(np.float32)
    everything = ClassSemantics(class_ids=np.array([2, 0, 3, 1]), att=np.zeros((4, 6)), original=np.zeros((4, 6)))
    gzsl = method.score(x, everything)
    assert gzsl.shape == (4, 4)
    # log-probabilities of one classifier over all four classes, in the order asked for
    np.testing.assert_allclose(np.log(np.exp(gzsl).sum(1)), 0, atol=1e-5)
    assert method.gzsl_head.out_features == 4 and method.zsl_head.out_features == 1
    zsl = method.score_zsl(x, unseen2)
    assert zsl.shape == (4, 1)
    np.testing.assert_allclose(zsl, 0, atol=1e-6)    # a classifier over the unseen class alone
    assert not np.allclose(gzsl[:, [2]], zsl), "not the all-class scores masked"
    with pytest.raises(ValueError, match="trained without classes"):
        method.score(x, ClassSemantics(class_ids=np.array([7]), att=np.zeros((1, 6)), original=np.zeros((1, 6))))


@pytest.mark.parametrize("name", GENERATIVE)
def test_two_unseen_classes_zsl_classifier_is_its_own(name):
    """With two unseen classes the ZSL classifier's probabilities differ from the GZSL classifier's
    renormalised over the unseen columns: a separate model, trained on synthetic features only."""
    cls = get_method(name)
    train, _, task, means = toy()
    rng = np.random.default_rng(3)
    att = rng.random((2, 6))
    att /= np.linalg.norm(att, axis=1, keepdims=True)
    unseen = ClassSemantics(class_ids=np.array([3, 4]), att=att, original=att)
    method = fit(cls, tiny(cls), train, unseen, task)
    x = means.astype(np.float32)
    zsl = method.score_zsl(x, unseen)
    gzsl = method.score(x, ClassSemantics(class_ids=np.array([0, 1, 2, 3, 4]), att=np.zeros((5, 6)),
                                          original=np.zeros((5, 6))))[:, 3:]
    renorm = gzsl - np.log(np.exp(gzsl).sum(1, keepdims=True))
    np.testing.assert_allclose(np.log(np.exp(zsl).sum(1)), 0, atol=1e-5)
    assert not np.allclose(renorm, zsl, atol=1e-3)


def test_feature_scaling_is_fitted_on_training_features_only():
    x = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0]], dtype=np.float32)
    s = MinMaxScaling.fit(x)
    np.testing.assert_allclose(s(x), [[0, 0, 0], [1, 0, 1]])
    np.testing.assert_allclose(s(np.array([[4.0, 6.0, 2.0]])), [[2, 1, 0.5]])   # evaluation may leave [0, 1]


class PoisonedStore:
    """A feature store whose rows of the given classes are replaced by large random values."""

    def __init__(self, store, labels, classes):
        self.store, self.poison = store, np.isin(labels, classes)

    def read(self, rows, name):
        out = np.array(self.store.read(rows, name), dtype=np.float32)
        bad = self.poison[np.asarray(rows)]
        out[bad] = np.random.default_rng(9).normal(50, 30, size=out[bad].shape)
        return out

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("name", GENERATIVE)
@pytest.mark.parametrize("phase_name", ["validation", "test"])
def test_no_unseen_class_image_reaches_training(region_data, name, phase_name):
    """Poison every row of the phase's unseen classes in the feature store: every fitted state is unchanged
    (the scores of those rows change, as they should)."""
    dataset, store = region_data
    cls = get_method(name)
    phase = protocol.validation_phase(dataset, 1) if phase_name == "validation" else protocol.test_phase(dataset)
    unseen = phase.candidate_classes[~phase.is_seen_class]

    def states(st):
        ev = Evaluator(dataset, st, cls, seed=0, search=False, device="cpu", progress=False,
                       hparams={k: v for k, v in TINY.items() if k in cls.profile("synthetic")})
        got = []
        ev.sweep(phase, lambda cid, epoch, scores, method, t1: got.append((method.state_dict(), scores[""])))
        return got

    clean, poisoned = states(store), states(PoisonedStore(store, dataset.labels, unseen))
    assert len(clean) == TINY["epochs"] * TINY["classifier_epochs"]
    for (a, sa), (b, sb) in zip(clean, poisoned):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not np.allclose(clean[-1][1], poisoned[-1][1]), "the poisoned rows are scored"


@pytest.mark.parametrize("name", GENERATIVE)
def test_a_run_selects_generator_and_classifier_epochs_on_validation(region_data, name, tmp_path):
    dataset, store = region_data
    cls = get_method(name)
    ev = Evaluator(dataset, store, cls, seed=0, search=False, device="cpu", progress=False,
                   hparams={k: v for k, v in TINY.items() if k in cls.profile("synthetic")})
    journal = RunJournal(tmp_path / "journal")
    out = ev.run(journal)
    labels = [f"g{g}/c{c}" for g in (1, 2) for c in (1, 2)]
    assert [r["epoch"] for r in out.validation_trace] == labels
    assert [r["epoch"] for r in out.test_trace] == labels
    val = out.selection["val"]
    best = max(out.validation_trace, key=lambda r: r["H"])
    assert val["epoch"] == best["epoch"] and val["epoch"] in labels   # both levels, chosen on validation
    paper = out.selection["paper"]
    assert paper["metrics"]["H"] == max(r["H_gamma0"] for r in out.test_trace)   # best test H, no calibration
    assert paper["metrics"]["T1"] == max(r["T1"] for r in out.test_trace)
    assert np.isfinite([r["T1"] for r in out.test_trace]).all()
    # snapshots only where a fit can resume: after each generator epoch's last classifier epoch, and at the end
    assert journal.saves == 2 * (TINY["epochs"] + 1)
    assert {"gzsl_head.weight", "zsl_head.weight", "scaling.low"} <= set(out.state)


@pytest.mark.parametrize("name", GENERATIVE)
def test_runs_on_the_xlsa17_release_vectors(tiny_project, tmp_path, name):
    """The papers' input: res101.mat's 2048-d vectors imported as they are (no images, no backbone)."""
    from scipy.io import savemat

    from tests.real_layouts import cell
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.features import FeatureStore
    from zsl_bench.feature_import import import_res101

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    rng = np.random.default_rng(0)
    feats = np.maximum(0, d.att[d.labels] @ rng.normal(size=(d.n_attributes, 2048)) + rng.normal(size=(len(d.labels), 2048)))
    savemat(tmp_path / "res101.mat", {"features": feats.T, "labels": (d.labels + 1).reshape(-1, 1).astype(float),
                                      "image_files": cell([f"/a/b/c/{f}" for f in d.image_files])})
    info = {"spec": vars(BackboneSpec(arch="resnet101", source="xlsa17_res101")), "arch": "resnet101",
            "pretraining_data": "imagenet-1k", "trained_on": None}
    store = FeatureStore(import_res101(d, tmp_path / "res101.mat", tmp_path / "store", info))
    cls = get_method(name)
    out = Evaluator(d, store, cls, seed=0, search=False, device="cpu", progress=False,
                    hparams={k: v for k, v in TINY.items() if k in cls.profile("synthetic")}).run()
    assert out.state["net.G.fc1.weight"].shape[1] == 2 * d.n_attributes    # noise and attributes in
    assert out.state["gzsl_head.weight"].shape[1] >= 2048                   # the release's 2048-d vectors
    assert 0 < out.selection["val"]["metrics"]["T1"] <= 1


@pytest.mark.parametrize("name", GENERATIVE)
def test_micro_batches_accumulate_to_the_whole_batch_update(name):
    """train.micro_batch splits each batch; the losses are per-sample means, so the fit matches the
    whole-batch fit up to float summation order."""
    from zsl_bench.method import TrainSettings

    cls = get_method(name)
    train, unseen, task, _ = toy()
    hp = tiny(cls, epochs=1, classifier_epochs=1)

    def state(settings):
        method = cls(hp, task, "cpu")
        ctx = FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=lambda e: None, _unseen=unseen,
                         _declared_unseen=True, settings=settings)
        method.fit(train, ctx)
        return method.state_dict()

    whole, parts = state(TrainSettings()), state(TrainSettings(micro_batch=16))
    for k in whole:
        if whole[k].is_floating_point():
            torch.testing.assert_close(parts[k], whole[k], rtol=1e-4, atol=1e-5, msg=k)
