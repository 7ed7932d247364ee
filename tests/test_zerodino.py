"""ZeroDINO (methods/zerodino): parity with the release's computation re-typed in
benchmarks/zerodino_official_copy.py, and the plugin's own behaviour on tiny token stores."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from zsl_bench.method import ClassSemantics, FitContext, LeakageError, Task, TrainData  # noqa: E402
from zsl_bench_methods.zerodino import ZeroDINO  # noqa: E402
from zsl_bench_methods.zerodino.model import ZeroDINOHead, grid_tokens  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def official_module():
    import zerodino_official_copy

    return zerodino_official_copy


@pytest.mark.parametrize("topk_fine, topk_macro", [(10, 128), (64, 3)])
def test_zerodino_matches_the_official_computation_in_fp64_scores_loss_and_every_gradient(topk_fine, topk_macro):
    """On the same weights and batch, in float64 and eval mode (no dropout): the three attribute scores, the
    pooled tokens, the attention, the GZSL scores (confidence fusion + softmax over all classes), the loss
    (three CEs over the seen classes + 5 · the release's JS term at epoch 3) and the gradient of every
    parameter agree with the re-typed release to 1e-10. Sparse top-k on the fine tokens (10 of 64) and a
    dense macro branch (4 tokens), then the other way round."""
    off = official_module()
    torch.manual_seed(0)
    b, dim, n_att, word_dim, n_cls, n_seen = 5, 16, 9, 7, 6, 4
    w2v = torch.randn(n_att, word_dim, dtype=torch.float64)
    ours = ZeroDINOHead(dim, w2v, macro_pools=2, fine_standardise=False).double().eval()
    official = off.OfficialZeroDINO(n_att, dim, word_dim=word_dim).double().eval()
    with torch.no_grad():   # not the init values: every parameter (τ, LayerNorms) away from its start
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
        ours.fine_block.attn.tau.fill_(0.7)
        ours.macro_block.attn.tau.fill_(0.35)
    off.copy_weights(ours, official)
    fine, mid = torch.randn(b, dim, 8, 8, dtype=torch.float64), torch.randn(b, dim, 8, 8, dtype=torch.float64)
    att = torch.nn.functional.normalize(torch.rand(n_cls, n_att, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 3, 1, 2, 3])

    mine = ours(fine, mid, topk_fine, topk_macro)
    theirs = official(grid_tokens(fine), grid_tokens(mid), ours.word_vectors, topk_fine, topk_macro)
    close = lambda a, c: torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)  # noqa: E731
    close(mine["fused"], theirs["fine_result"])
    close(mine["fine"], theirs["x_fine_result"])
    close(mine["macro"], theirs["x_macro_result"])
    close(mine["pool_fine"], theirs["pool_fine"][:, 0])
    close(mine["pool_macro"], theirs["pool_macro"][:, 0])
    close(mine["attention_fine"], theirs["fine_weights"].mean(1))
    close(mine["attention_macro"], theirs["macro_weights"].mean(1))
    kept = (theirs["fine_weights"] > 0).sum(-1)   # per head: the top-k really prunes (or keeps all 64)
    assert (kept == min(topk_fine, 64)).all()

    method = ZeroDINO(ZeroDINO.default_hparams("CUB"), task=None)
    close(method.class_probabilities(mine, att), off.gzsl_scores(theirs, att))
    loss = method.loss(mine, y, att[:n_seen], epoch=3)
    reference = off.calculate_loss(theirs, y, att[:n_seen], epoch=3)
    close(loss, reference)
    loss.backward()
    reference.backward()
    their_params = dict(official.named_parameters())
    for my_name, p in ours.named_parameters():
        assert p.grad is not None, f"{my_name} lost its gradient"
        torch.testing.assert_close(p.grad, their_params[off.name_map()[my_name]].grad, rtol=1e-10, atol=1e-12,
                                   msg=lambda m: f"{my_name}: {m}")
    # the release's parameters that its forward never reads (MLP norms, predictor biases) and nothing else
    unread = sorted(n for n, p in official.named_parameters() if p.grad is None)
    assert set(off.name_map().values()) | set(unread) == set(their_params)
    assert all(".mlp.norm." in n or n.endswith("predictor.bias") for n in unread), unread


# --- the plugin on tiny token stores -----------------------------------------------------------------------

class Tokens:
    """A stand-in for the feature store's MapView: [mid, coarse] blocks of the chosen rows."""

    def __init__(self, mid, fine, rows=None):
        self.mid, self.fine = mid, fine
        self.rows = np.arange(len(mid)) if rows is None else np.asarray(rows)

    def __len__(self):
        return len(self.rows)

    def read(self, positions):
        r = self.rows[np.asarray(positions)]
        return [self.mid[r], self.fine[r]]


def tiny_problem(seed=0, n_cls=8, n_seen=6, per_class=12, dim=16, side=8, n_att=12):
    """Classes whose attributes are written into the tokens (a learnable, tiny token store)."""
    rng = np.random.default_rng(seed)
    att = rng.random((n_cls, n_att))
    att /= np.linalg.norm(att, axis=1, keepdims=True)
    proj = rng.normal(size=(n_att, dim))
    labels = np.repeat(np.arange(n_cls), per_class)
    signal = (att[labels] @ proj)[:, :, None, None]
    fine = (signal + rng.normal(size=(len(labels), dim, side, side))).astype(np.float32)
    mid = (0.5 * signal + rng.normal(size=(len(labels), dim, side, side))).astype(np.float32)
    task = Task(dataset="synthetic", attribute_names=tuple(f"a{i}::v" for i in range(n_att)), input_kind="maps",
                input_shape=(dim, side, side), input_shapes=((dim, side, side), (dim, side, side)),
                attribute_embeddings={"minilm": rng.normal(size=(n_att, 10))})
    sem = lambda cs: ClassSemantics(class_ids=np.asarray(cs), att=att[cs], original=att[cs])  # noqa: E731
    seen_rows = np.flatnonzero(labels < n_seen)
    train = TrainData(x=Tokens(mid, fine, seen_rows), y=labels[seen_rows], semantics=sem(np.arange(n_seen)))
    return task, train, Tokens(mid, fine), labels, sem


def context(on_checkpoint=lambda epoch: None, declared_unseen=False):
    return FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=on_checkpoint, _unseen=None,
                      _declared_unseen=declared_unseen)


def small_hparams(**overrides):
    return {**ZeroDINO.default_hparams("synthetic"), "epochs": 2, "samples_per_epoch": 0, "batch_size": 16,
            "eval_batch_size": 32, "topk_fine": 8, "topk_macro": 8, **overrides}


def test_zerodino_fits_scores_and_round_trips_on_a_tiny_token_store():
    task, train, x_all, labels, sem = tiny_problem()
    method = ZeroDINO(small_hparams(), task)
    seen_at = []
    method.fit(train, context(seen_at.append))   # never asks for unseen semantics (LeakageError otherwise)
    assert seen_at == [1, 2]
    scores = method.score(x_all, sem(np.arange(8)))
    assert scores.shape == (len(labels), 8) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)   # class probabilities: γ is on their scale
    again = ZeroDINO(small_hparams(), task)
    again.load_state_dict(method.state_dict())
    np.testing.assert_allclose(again.score(x_all, sem(np.arange(8))), scores, rtol=1e-6, atol=1e-7)
    maps = method.attention_maps(Tokens(x_all.mid, x_all.fine, np.arange(3)), None)
    assert set(maps) == {"fine attention", "macro attention"}
    for m in maps.values():
        assert m.shape == (3, 8, 8)
        np.testing.assert_allclose(m.sum((1, 2)), 1.0, rtol=1e-5)
    counted = method.parameter_count()
    assert counted["learned"] == sum(p.numel() for p in method.net.parameters())
    assert counted["fixed"] == ["word_vectors"]


def test_zerodino_training_lowers_its_loss_and_learns_the_seen_classes():
    from zsl_bench.torch_methods import torch_generator

    task, train, x_all, labels, sem = tiny_problem()
    hp = small_hparams(epochs=6, lr=3e-3)
    seen_att = torch.as_tensor(train.semantics.att, dtype=torch.float32)
    blocks = [torch.as_tensor(b) for b in train.x.read(np.arange(len(train.y)))]

    def full_loss(method):   # the training objective on every training image, without dropout
        method.net.eval()
        with torch.no_grad():
            return float(method.loss(method.forward(blocks), torch.as_tensor(train.y), seen_att, epoch=1))

    start = ZeroDINO(hp, task)
    torch_generator(0)   # what fit does with the context's seed 0 before it builds the network
    start.net = start.build_net()
    trained = ZeroDINO(hp, task)
    trained.fit(train, context())
    before, after = full_loss(start), full_loss(trained)
    assert after < 0.8 * before, (before, after)
    seen = labels < 6
    scores = trained.score(Tokens(x_all.mid, x_all.fine, np.flatnonzero(seen)), sem(np.arange(6)))
    assert (scores.argmax(1) == labels[seen]).mean() > 0.5


def test_zerodino_refuses_what_it_cannot_read():
    task, train, *_ = tiny_problem()
    # a CNN's layers: two levels of different widths and grids
    cnn = Task(dataset="synthetic", attribute_names=task.attribute_names, input_kind="maps", input_shape=(32, 4, 4),
               input_shapes=((16, 8, 8), (32, 4, 4)), attribute_embeddings=task.attribute_embeddings)
    with pytest.raises(ValueError, match="channels"):
        ZeroDINO(small_hparams(), cnn).build_net()
    # a grid too small for the macro pooling
    small = Task(dataset="synthetic", attribute_names=task.attribute_names, input_kind="maps", input_shape=(16, 2, 2),
                 input_shapes=((16, 2, 2), (16, 2, 2)), attribute_embeddings=task.attribute_embeddings)
    with pytest.raises(ValueError, match="pooled"):
        ZeroDINO(small_hparams(macro_pools=2), small).build_net()
    # the attribute vectors it names must exist (CUB's profile reads the w2v vectors)
    from zsl_bench.io import DataError

    with pytest.raises(DataError, match="w2v"):
        ZeroDINO(small_hparams(attribute_embedding="w2v"), task).build_net()
    # declarations: token maps only; unseen semantics never read, and a fit that tried would fail
    assert ZeroDINO.requires_token_maps and not ZeroDINO.uses_unseen_semantics
    with pytest.raises(LeakageError):
        context().unseen_semantics()


def test_zerodino_store_without_token_maps_is_not_applicable():
    from zsl_bench.runner import NotApplicable, check_applicable

    class CnnStore:
        token_maps = False

        def resolve(self, name):
            return {"mid": "layer3", "coarse": "layer4"}.get(name, name)

        def unavailable(self, names):
            return None

        def backbone_label(self):
            return "CUB/resnet101 (timm resnet101)"

    with pytest.raises(NotApplicable, match="token"):
        check_applicable(ZeroDINO, CnnStore(), ZeroDINO.default_hparams("CUB"))


def test_zerodino_official_settings():
    """Profiles against configs/*_train.json and sovler.py; the schedule, temperature, sampler, γ and the arrays."""
    for ds, epochs, gamma in (("CUB", 10, 0.85), ("SUN", 30, 0.75), ("AWA2", 20, 0.95), ("AWA1", 20, 0.95)):
        hp = ZeroDINO.default_hparams(ds)
        assert (hp["epochs"], hp["batch_size"], hp["lr"], hp["lambda_js"]) == (epochs, 32, 1e-6, 5.0)
        assert ZeroDINO.fixed_gamma(hp) == gamma
    assert ZeroDINO.feature_arrays(ZeroDINO.default_hparams("CUB")) == ("mid", "coarse")
    assert ZeroDINO.feature_arrays({"macro_level": "blocks.10"}) == ("blocks.10", "coarse")
    method = ZeroDINO(ZeroDINO.default_hparams("SUN"), task=None)
    # MultiStepLR([10, 20, 50], 0.5) stepped after every epoch
    assert [method.epoch_lr(e) for e in (1, 10, 11, 20, 21, 30)] == [1e-6, 1e-6, 5e-7, 5e-7, 2.5e-7, 2.5e-7]
    assert method.temperature(10) == pytest.approx(0.5 + 0.5 * np.exp(-1))
    # WeightedRandomSampler(1 / class count): classes drawn uniformly whatever their sizes
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    draws = np.concatenate([np.concatenate(method.draw(y)(np.random.default_rng(i))) for i in range(40)])
    assert len(draws) == 40 * 100
    assert abs((y[draws] == 1).mean() - 0.5) < 0.03
    assert ZeroDINO.paper_rule.checkpoint == "test" and ZeroDINO.paper_rule.separately == ("H",)


def test_zerodino_fixed_gamma_reproduces_the_official_gzsl_prediction():
    """The release predicts argmax(softmax(fused · aᵀ) − γ on seen classes); the evaluator's `fixed`
    calibration subtracts the profile's γ from the seen columns of our scores: the same argmax."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(7, 0.05), size=200)   # peaked: some seen classes win despite γ
    seen = np.array([1, 1, 1, 1, 0, 0, 0], bool)
    gamma = ZeroDINO.fixed_gamma(ZeroDINO.default_hparams("CUB"))
    official = np.argmax(probs - np.where(seen, gamma, 0.0), axis=1)
    from zsl_bench.metrics import gzsl_accuracies

    labels = official.copy()   # every prediction right iff ours predicts what the release does
    g = gzsl_accuracies(probs, labels, seen, gamma)
    assert 0 < (official < 4).mean() < 1
    assert g.U == pytest.approx(1.0) and g.S == pytest.approx(1.0)
