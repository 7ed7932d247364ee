"""The classic baselines against their mathematics, and the plugin rules every method obeys."""
import numpy as np
import pytest

from zsl_bench_methods.ale import ALE, ranking_loss_gradient
from zsl_bench_methods.eszsl import ESZSL, eszsl_closed_form
from zsl_bench_methods.sae import sae_encoder
from zsl_bench.evaluator import Evaluator, grid
from zsl_bench.features import FeatureStore
from zsl_bench.io import ConfigError
from zsl_bench.method import ClassSemantics, FitContext, LeakageError, Method, Task, TrainData
from zsl_bench.registry import available_methods, get_method, register_method


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    n, d, z, a = 60, 7, 5, 4
    x = rng.normal(size=(n, d))
    y = rng.integers(0, z, n)
    s = rng.normal(size=(z, a))
    return x, y, s


def eszsl_targets(y, z, off):
    targets = np.full((len(y), z), off)
    targets[np.arange(len(y)), y] = 1
    return targets


def eszsl_objective(V, x, y, s, alpha, gamma, off):
    """The paper's objective with Ω(V) = α‖VSᵀ‖² + γ‖XV‖² + αγ‖V‖² (its γ, λ, β = γλ), samples as rows."""
    targets = eszsl_targets(y, len(s), off)
    return (np.sum((x @ V @ s.T - targets) ** 2) + alpha * np.sum((V @ s.T) ** 2)
            + gamma * np.sum((x @ V) ** 2) + alpha * gamma * np.sum(V ** 2))


@pytest.mark.parametrize("convention,off", [("01", 0.0), ("pm1", -1.0)])
def test_eszsl_closed_form_is_the_minimiser_of_its_objective(toy, convention, off):
    x, y, s = toy
    alpha, gamma = 0.7, 0.3
    V = eszsl_closed_form(x, y, s, alpha, gamma, targets=convention)
    # the explicit formula of the paper, with inverses
    explicit = np.linalg.inv(x.T @ x + alpha * np.eye(x.shape[1])) @ x.T @ eszsl_targets(y, len(s), off) @ s @ \
        np.linalg.inv(s.T @ s + gamma * np.eye(s.shape[1]))
    np.testing.assert_allclose(V, explicit, rtol=1e-10, atol=1e-12)
    # and it is a minimum: every small perturbation raises the objective
    rng = np.random.default_rng(1)
    base = eszsl_objective(V, x, y, s, alpha, gamma, off)
    for _ in range(20):
        assert eszsl_objective(V + 1e-3 * rng.normal(size=V.shape), x, y, s, alpha, gamma, off) > base


def test_eszsl_shares_its_eigenbases_across_the_grid_and_equals_the_two_solves():
    """The eigenbasis form (decompositions once per training set) equals the two D × D solves at every
    point of the default 7 × 7 log-grid, both target conventions, to 1e-8 relative; the bases are computed
    once for the whole grid, and again for another training set."""
    import zsl_bench_methods.eszsl as eszsl

    rng = np.random.default_rng(0)
    x, s, y = rng.random((300, 64)), rng.random((20, 24)), rng.integers(0, 20, 300)
    calls = []
    real_eigh = np.linalg.eigh
    eszsl.np.linalg.eigh = lambda a: calls.append(a.shape) or real_eigh(a)
    try:
        for targets, off in (("01", 0.0), ("pm1", -1.0)):
            for la in range(-3, 4):
                for lg in range(-3, 4):
                    alpha, gamma = 10.0 ** la, 10.0 ** lg
                    left = np.linalg.solve(x.T @ x + alpha * np.eye(64), x.T @ eszsl_targets(y, 20, off) @ s)
                    solved = np.linalg.solve((s.T @ s + gamma * np.eye(24)).T, left.T).T
                    got = eszsl_closed_form(x, y, s, alpha, gamma, targets=targets)
                    assert np.abs(got - solved).max() <= 1e-8 * np.abs(solved).max(), (targets, la, lg)
        assert len(calls) == 4, "one pair of decompositions per training set and target convention"
        eszsl_closed_form(x[:200], y[:200], s, 1.0, 1.0)
        assert len(calls) == 6
    finally:
        eszsl.np.linalg.eigh = real_eigh


def test_eszsl_targets_by_hand():
    """Two samples x = 1, 2 of classes with signatures 1, 2 (D = A = 1), α = γ = 1: (XᵀX + α)⁻¹ = 1/6 and
    (SᵀS + γ)⁻¹ = 1/6. With {0, 1} targets XᵀYS = 1·1 + 2·2 = 5, so V = 5/36 (the default, the authors'
    code); with {−1, 1} XᵀY = (1 − 2, −1 + 2) = (−1, 1), XᵀYS = −1 + 2 = 1, so V = 1/36 (`eszsl.pm1`)."""
    x, y, s = np.array([[1.0], [2.0]]), np.array([0, 1]), np.array([[1.0], [2.0]])
    assert eszsl_closed_form(x, y, s, 1.0, 1.0)[0, 0] == pytest.approx(5 / 36, rel=1e-12)
    assert eszsl_closed_form(x, y, s, 1.0, 1.0, targets="pm1")[0, 0] == pytest.approx(1 / 36, rel=1e-12)
    assert ESZSL.profile("CUB")["targets"] == "01" and get_method("eszsl.pm1").default_hparams("CUB")["targets"] == "pm1"


def test_sae_scores_with_w_rows_normalised_by_hand():
    """W = [[3, 4], [0, 2]] (attribute rows) normalised is [[0.6, 0.8], [0, 1]] (the authors' NormalizeFea(W)).
    S→F, class s = (1, 1): decoded sW = (0.6, 1.8), cos with x = (1, 0) is 0.6/√3.6; raw W gives (3, 6) and
    3/√45 (`sae.raw-w`). F→S, x = (0, 1): xWᵀ = (0.8, 1) → cos with s = (1, 0) is 0.8/√1.64; raw 4/√20."""
    from zsl_bench_methods.sae import SAE

    sae = SAE.__new__(SAE)
    sae.W = np.array([[3.0, 4.0], [0.0, 2.0]])
    att = np.array([[1.0, 1.0], [1.0, 0.0]])
    sem = ClassSemantics(class_ids=np.arange(2), att=att, original=att)
    expected = {("S2F", "rows"): 0.6 / np.sqrt(3.6), ("S2F", "none"): 3 / np.sqrt(45)}
    for (direction, norm), value in expected.items():
        sae.hparams = {"direction": direction, "w_norm": norm}
        assert sae.score(np.array([[1.0, 0.0]]), sem)[0, 0] == pytest.approx(value, rel=1e-12)
    for norm, value in (("rows", 0.8 / np.sqrt(1.64)), ("none", 4 / np.sqrt(20))):
        sae.hparams = {"direction": "F2S", "w_norm": norm}
        assert sae.score(np.array([[0.0, 1.0]]), sem)[0, 1] == pytest.approx(value, rel=1e-12)
    assert SAE.profile("CUB")["w_norm"] == "rows" and SAE.score_variants == {"raw-w": {"w_norm": "none"}}


def test_sae_solves_its_sylvester_equation_and_minimises_its_objective(toy):
    x, y, s = toy
    lam = 0.5
    W = sae_encoder(x, s[y], lam)
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    S = s[y].T
    np.testing.assert_allclose(S @ S.T @ W + W @ (lam * xn @ xn.T), (1 + lam) * S @ xn.T, atol=1e-9)
    from scipy.linalg import solve_sylvester

    for other in (lam, 0.01, 100.0):   # the eigen-bases are reused across λ: each λ still solves its own equation
        expected = solve_sylvester(S @ S.T, other * xn @ xn.T, (1 + other) * S @ xn.T)
        np.testing.assert_allclose(sae_encoder(x, s[y], other), expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())

    def objective(W):
        return np.sum((xn - W.T @ S) ** 2) + lam * np.sum((W @ xn - S) ** 2)

    rng = np.random.default_rng(2)
    base = objective(W)
    assert all(objective(W + 1e-3 * rng.normal(size=W.shape)) > base for _ in range(20))


def test_ale_ranking_gradient_matches_finite_differences(toy):
    x, y, s = toy
    beta = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, len(s) + 1))])
    W = np.random.default_rng(3).normal(size=(x.shape[1], s.shape[1]))

    def loss(W):
        scores = x @ W @ s.T
        rows = np.arange(len(y))
        margins = 1 + scores - scores[rows, y][:, None]
        viol = margins > 0
        viol[rows, y] = False
        r = viol.sum(1)
        w = np.where(r > 0, beta[r] / np.maximum(r, 1), 0)
        return float(np.sum(w * np.sum(np.where(viol, margins, 0), axis=1)))

    g = ranking_loss_gradient(x, y, W, s, beta)
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (6, 3)]:
        E = np.zeros_like(W)
        E[i, j] = eps
        numeric = (loss(W + E) - loss(W - E)) / (2 * eps)
        assert g[i, j] == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_ale_training_lowers_the_ranking_loss_and_checkpoints_every_epoch(toy):
    x, y, s = toy
    sem = ClassSemantics(class_ids=np.arange(len(s)), att=s / np.linalg.norm(s, axis=1, keepdims=True), original=s)
    task = Task(dataset="toy", attribute_names=tuple("abcd"), input_kind="vector", input_shape=(x.shape[1],))
    seen_epochs, train_acc = [], []
    m = ALE({"lr": 0.1, "epochs": 8, "batch_size": 16}, task)

    def checkpoint(epoch):
        seen_epochs.append(epoch)
        train_acc.append(np.mean(m.score(x, sem).argmax(1) == y))

    ctx = FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=checkpoint, _unseen=sem,
                     _declared_unseen=False)
    m.fit(TrainData(x=x, y=y, semantics=sem), ctx)
    assert seen_epochs == list(range(1, 9))
    assert train_acc[-1] > 1.5 / len(s), "eight epochs of ranking SGD should beat chance on the training set"


class Snooper(Method):
    """Reads unseen-class attributes in fit without declaring it."""
    input_kind = "vector"
    profiles = {"*": {}}

    def fit(self, train, ctx):
        self.unseen = ctx.unseen_semantics()

    def score(self, x, semantics):
        return np.zeros((len(x), len(semantics)))

    def state_dict(self):
        return {}


class DeclaredSnooper(Snooper):
    uses_unseen_semantics = True


def test_reading_unseen_semantics_without_declaring_it_fails(tiny_project):
    from zsl_bench.data.dataset import load_dataset

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(tiny_project / "features" / "synthetic" / "resnet10t")
    with pytest.raises(LeakageError, match="uses_unseen_semantics"):
        Evaluator(d, store, Snooper, seed=0, progress=False).run()
    out = Evaluator(d, store, DeclaredSnooper, seed=0, progress=False).run()
    assert out.selection["val"]["metrics"]["T1"] >= 0


def test_fit_sees_only_seen_classes(tiny_project):
    from zsl_bench.data.dataset import load_dataset

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(tiny_project / "features" / "synthetic" / "resnet10t")
    seen_in_fit = []

    class Recorder(ESZSL):
        def fit(self, train, ctx):
            seen_in_fit.append((set(train.semantics.class_ids.tolist()), len(train.y), int(train.y.max())))
            super().fit(train, ctx)

    Recorder.name = "recorder"
    ev = Evaluator(d, store, Recorder, seed=0, search=False, progress=False)
    ev.run()
    train_c, _ = d.fold_classes(1)
    assert seen_in_fit[0][0] == set(train_c)              # validation sweep: fold train classes only
    assert seen_in_fit[-1][0] == set(d.seen_classes)       # test sweep: seen classes only
    assert not seen_in_fit[-1][0] & set(d.unseen_classes)
    assert all(ymax < len(class_ids) for class_ids, _, ymax in seen_in_fit)  # y indexes the seen rows only


def test_registry_finds_methods_by_entry_point_and_names_unknown_ones():
    assert {"eszsl", "sae", "ale"} <= set(available_methods())
    assert get_method("eszsl") is ESZSL
    with pytest.raises(ConfigError, match="available: .*eszsl"):
        get_method("no-such-method")


def test_register_method_warns_on_overwrite():
    @register_method("toy-method")
    class A(Snooper):
        pass

    with pytest.warns(UserWarning, match="registered twice"):
        @register_method("toy-method")
        class B(Snooper):
            pass
    assert get_method("toy-method") is B


def test_grid_puts_defaults_first_and_never_repeats():
    configs = grid({"a": 1, "b": 2}, {"a": [0, 1], "b": [2]})
    assert configs == [{"a": 1, "b": 2}, {"a": 0, "b": 2}]


@pytest.mark.parametrize("name", available_methods())
def test_every_method_has_defaults_for_the_real_datasets_and_a_readme(name):
    import sys
    from pathlib import Path

    cls = get_method(name)
    for ds in ("CUB", "SUN", "AWA2", "synthetic"):
        assert isinstance(cls.default_hparams(ds), dict)
    assert (Path(sys.modules[cls.__module__].__file__).parent / "README.md").is_file()


def test_a_dataset_without_a_profile_is_an_error_not_a_silent_fallback():
    """A method with only per-dataset profiles names itself and the dataset; one with an any-dataset
    profile uses it; `profile:` in the overrides starts from a named profile."""
    dazle = get_method("dazle")
    with pytest.raises(ConfigError, match="dazle has no default hyperparameters for dataset 'FLO'"):
        dazle.default_hparams("FLO")
    assert dazle.default_hparams("FLO", {"profile": "CUB", "epochs": 3}) == {**dazle.default_hparams("CUB"),
                                                                             "epochs": 3}
    assert get_method("eszsl").default_hparams("FLO") == {"log10_alpha": 3, "log10_gamma": 0, "targets": "01"}
    with pytest.raises(ConfigError, match="no hyperparameter 'epoch'.*epochs"):
        dazle.default_hparams("CUB", {"epoch": 3})


def test_variant_switch_wins_over_user_overrides():
    cls = get_method("mgmrn.levels1")
    assert cls.default_hparams("synthetic", {"levels": 3, "epochs": 2})["levels"] == 1
    assert cls.default_hparams("synthetic", {"epochs": 2})["epochs"] == 2


def test_published_numbers_come_from_the_method_folder():
    from zsl_bench.registry import published

    assert published("eszsl", "CUB").T1 == 53.9 and "GBU" in published("eszsl", "cub").source
    assert published("mgmrn", "CUB") is None and published("mgmrn.levels1", "CUB") is None


def test_declared_capabilities_must_be_implemented():
    from zsl_bench.method import ATTENTION_MAPS

    class Claims(Snooper):
        capabilities = frozenset({ATTENTION_MAPS})

    with pytest.raises(TypeError, match="declares 'attention_maps' but does not implement"):
        register_method("claims")(Claims)
