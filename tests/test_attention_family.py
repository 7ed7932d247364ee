"""ReZSL, GEM-ZSL, MSDN and APN: shapes in every mode, where gradients reach, the losses on hand-computed
cases, one step lowering each loss, and the per-dataset fixed γ; tiny runs through the evaluator (slow)."""
import numpy as np
import pytest
import torch

from zsl_bench_methods.apn.model import APNHead, compactness as apn_compactness, decorrelation, group_lasso
from zsl_bench_methods.gemzsl.model import GEMHead, attribute_decorrelation, compactness as gem_compactness
from zsl_bench_methods.msdn.model import MSDNNet, distillation
from zsl_bench_methods.rezsl.model import AttentionHead, remse_weights
from tests.test_region_methods import one_step_lowers
from zsl_bench.map_families import AllClassTargets, attribute_groups_by_name
from zsl_bench.method import ClassSemantics, Task
from zsl_bench.registry import get_method

A, DV, C = 12, 20, 16   # attributes, word-vector size, map channels
NAMES = tuple(f"type{i // 4}::v{i}" for i in range(A))   # three groups of four


def task(kind="map", shape=(C, 3, 4), dataset="toy"):
    rng = np.random.default_rng(0)
    return Task(dataset=dataset, attribute_names=NAMES, input_kind=kind, input_shape=shape, input_shapes=(shape,),
                attribute_embeddings={"w2v": rng.normal(size=(A, DV))})


def semantics(n, offset=0):
    rng = np.random.default_rng(offset + 1)
    original = rng.uniform(0, 100, (n, A))
    return ClassSemantics(class_ids=np.arange(offset, offset + n),
                          att=original / np.linalg.norm(original, axis=1, keepdims=True), original=original)


def method(name, dataset="synthetic", **hp):
    cls = get_method(name)
    kind = cls.input_kind
    image = kind == "image"
    hparams = {**cls.default_hparams(dataset), "attribute_embedding": "w2v", **hp}
    if image:
        hparams.update(backbone="resnet10t", pretrained=False, image_size=64)
    m = cls(hparams, task(kind, (3,) if image else (C, 3, 4)))
    torch.manual_seed(0)
    m.net = m.build_net()
    return m


def inputs(m, b=6):
    torch.manual_seed(1)
    return torch.randn(b, 3, 64, 64) if m.input_kind == "image" else torch.rand(b, C, 3, 4)


# --- shapes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rezsl", "rezsl.image", "gemzsl", "gemzsl.image", "apn", "apn.image"])
def test_one_map_methods_shapes_in_every_mode(name):
    m = method(name)
    out = m.forward(inputs(m))
    h, w = m.map_grid()
    assert (h, w) == ((2, 2) if m.input_kind == "image" else (3, 4))   # resnet10t at 64 px: stride 32
    assert out["attributes"].shape == (6, A)
    key = "similarity" if name.startswith("apn") else "attention"
    assert out[key].shape == ((6, A, h, w) if name.startswith("apn") else (6, A, h * w))
    att = m.tensor(semantics(5).att)
    assert m.class_scores(out, att).shape == (6, 5)


def test_rezsl_awa2_head_has_the_4096_hidden_layer_and_m_300():
    head = AttentionHead(C, np.ones((A, DV)), mid=300, hidden=4096)
    assert head.query.out_features == 300 and head.probe.shape == (A, 4096)
    assert head(torch.rand(2, C, 3, 3))["attributes"].shape == (2, A)


def test_msdn_shapes_and_initial_state():
    net = MSDNNet(C, np.random.default_rng(0).normal(size=(A, DV)), normalize_V=False)
    z1, z2, a1 = net(torch.rand(4, C, 3, 4), torch.rand(7, A))
    assert z1.shape == z2.shape == (4, 7) and a1.shape == (4, A, 12)
    # W2, W3, W4 start at zero: uniform A→V attention, a V→A sub-net that scores nothing yet
    torch.testing.assert_close(a1, torch.full_like(a1, 1 / 12))
    assert torch.equal(z2, torch.zeros_like(z2))
    torch.testing.assert_close(net.V.norm(dim=1), torch.ones(A))


# --- where gradients go -----------------------------------------------------------------------------------

def reached(module):
    return {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("name", ["rezsl", "gemzsl", "apn"])
def test_frozen_maps_train_the_head_only(name):
    m = method(name)
    assert set(m.net) == {"head"}, "no backbone in map mode"
    m.batch_total = 6
    m.loss(m.forward(inputs(m)), torch.tensor([0, 1, 2, 3, 4, 0]), m.tensor(semantics(5).att)).backward()
    trainable = {n for n, p in m.net.named_parameters() if p.requires_grad}
    assert reached(m.net) == trainable


@pytest.mark.parametrize("name,frozen", [("rezsl.image", ()), ("gemzsl.image", ()),
                                         ("apn.image", ("conv1", "bn1", "layer1"))])
def test_image_mode_trains_the_backbone_too_except_apns_frozen_stem(name, frozen):
    m = method(name)
    m.batch_total = 6
    m.loss(m.forward(inputs(m)), torch.tensor([0, 1, 2, 3, 4, 0]), m.tensor(semantics(5).att)).backward()
    got = reached(m.net["backbone"].net)
    top = {n.split(".")[0] for n in got}
    assert {"layer2", "layer3", "layer4"} <= top
    assert not top & set(frozen), f"{name}: frozen layers received gradients"
    if not frozen:
        assert "conv1" in top or "layer1" in top
    frozen_params = [p for n, p in m.net["backbone"].net.named_parameters() if n.split(".")[0] in frozen]
    assert all(not p.requires_grad for p in frozen_params)
    assert all(p.requires_grad for p in m.net["head"].parameters())


def test_msdn_gradients_reach_both_subnets_and_the_word_vectors():
    m = method("msdn")
    m.net = m.build_net()
    with torch.no_grad():   # past the zero init, so the V→A sub-net's parameters get gradients too
        for p in (m.net.W2, m.net.W3, m.net.W4):
            p.normal_()
    targets = AllClassTargets.build(m, semantics(5), semantics(3, offset=5), 1.0)
    m.loss(inputs(m), torch.tensor([0, 1, 2, 3, 4, 0]), targets).backward()
    assert reached(m.net) == {"V", "W1", "W2", "W3", "W4"}


# --- the losses on cases computed by hand -----------------------------------------------------------------

def test_remse_weights_are_one_for_uniform_residual_statistics():
    y = torch.tensor([0, 0, 1, 2])
    a_hat = torch.nn.functional.normalize(torch.rand(4, A), dim=1)
    w = remse_weights(a_hat + 0.1, a_hat, y, p=0.75, p2=0.5)   # one residual on every attribute of every class
    torch.testing.assert_close(w, torch.ones_like(w))


def test_rezsl_loss_is_the_plain_normalised_mse_when_statistics_are_uniform_and_differs_otherwise():
    """One class in the batch: its residuals are the minimum across classes (weight 1), and with p2 = 0 the
    across-attribute factor is 1: ReZSL's loss is the re-weighting-free one (`rezsl.remse-off`)."""
    m, plain = method("rezsl", remse_p=0.75, remse_p2=0.0), method("rezsl.remse-off")
    plain.net.load_state_dict(m.net.state_dict())
    x, att = inputs(m), m.tensor(semantics(5).att)
    same = torch.zeros(6, dtype=torch.long)
    torch.testing.assert_close(m.loss(m.forward(x), same, att), plain.loss(plain.forward(x), same, att))
    mixed = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        weighted, unweighted = m.loss(m.forward(x), mixed, att), plain.loss(plain.forward(x), mixed, att)
    assert float(weighted) > float(unweighted), \
        "weights ≥ 1, and > 1 wherever a class's residual exceeds the smallest"


def test_remse_weights_hand_computed():
    # two classes, two attributes; class 0's residuals (1, 4), class 1's (2, 2) (mean over its two images)
    y = torch.tensor([0, 1, 1])
    a = torch.zeros(3, 2)
    p = torch.tensor([[1.0, 2.0], [1.0, 1.0], [np.sqrt(3.0), np.sqrt(3.0)]])
    w = remse_weights(p, a, y, p=1.0, p2=1.0)
    # e = [[1, 4], [2, 2]]; across classes min per attribute (1, 2); across attributes min per class (1, 2)
    e = np.array([[1.0, 4.0], [2.0, 2.0]])
    w1 = 1 + np.log(e / np.array([1.0, 2.0]))
    w2 = 1 + np.log(e / np.array([[1.0], [2.0]]))
    expected = (w1 * w2)[[0, 1, 1]]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    # p = p2 = 0: every weight 1
    assert torch.equal(remse_weights(p, a, y, 0.0, 0.0), torch.ones(3, 2))


def test_msdn_distillation_is_zero_when_the_subnets_agree_and_positive_otherwise():
    z = torch.randn(4, 7)
    assert float(distillation(z, z.clone())) == pytest.approx(0.0, abs=1e-7)
    d = torch.tensor([[1.0, -2.0, 0.0]])
    z1, z2 = torch.zeros(1, 3), -d
    p, q = torch.softmax(z1, 1), torch.softmax(z2, 1)
    m = (p + q) / 2
    js = 0.5 * ((q * (q / m).log()).sum() + (p * (p / m).log()).sum())
    expected = (d.abs() ** 3).sum() / d.norm() + js
    torch.testing.assert_close(distillation(z1, z2), expected)


def test_apn_group_lasso_decorrelation_and_compactness_by_hand():
    w = torch.tensor([[3.0, 0.0], [4.0, 1.0], [0.0, 2.0]])
    assert float(group_lasso(w, [0, 1])) == pytest.approx(np.sqrt(9 + 16 + 1 + 2e-8))
    groups = [[0, 1], [2]]
    got = decorrelation(w, 2 * w, groups, l_regular=0.5, regular=0.25)
    expected = sum(0.5 * np.sqrt(float((w[g] ** 2).sum()) + 2e-8) + 0.25 * np.sqrt(float(((2 * w[g]) ** 2).sum()) + 2e-8)
                   for g in groups)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    assert float(decorrelation(w, 2 * w, [], 0.5, 0.25)) == pytest.approx(0.5 * float(w.norm()) + 0.25 * 2 * float(w.norm()))
    # one image, one attribute, a 2 × 2 map peaking at cell (0, 1): distances (1, 0, 2, 1)
    sim = torch.tensor([[[[0.0, 5.0], [1.0, 2.0]]]])
    expected = sum(torch.sigmoid(torch.tensor(v)) * d for v, d in zip((0.0, 5.0, 1.0, 2.0), (1, 0, 2, 1)))
    torch.testing.assert_close(apn_compactness(sim), expected)


def test_gem_decorrelation_and_compactness_by_hand():
    q = torch.tensor([[3.0, 0.0], [4.0, 1.0], [0.0, 2.0]])
    # group [0, 1]: channel norms (5, 1) → mean 3; group [2]: (0, 2) → mean 1; average 2
    assert float(attribute_decorrelation(q, [[0, 1], [2]])) == pytest.approx(2.0)
    att = torch.tensor([[[0.1, 0.6, 0.2, 0.1]]])   # 2 × 2 grid, peak at (0, 1): distances (1, 0, 2, 1)
    assert float(gem_compactness(att, (2, 2))) == pytest.approx((0.1 * 1 + 0.2 * 2 + 0.1 * 1) / 4)


def test_attribute_groups_by_name_are_cubs_28_types():
    cub_like = [f"has_{t}::{v}" for t, n in (("bill_shape", 9), ("wing_color", 15), ("size", 5)) for v in range(n)]
    assert attribute_groups_by_name(cub_like) == [list(range(9)), list(range(9, 24)), list(range(24, 29))]
    assert attribute_groups_by_name(["a", "b"]) == []
    assert len(method("gemzsl").groups()) == 3


def test_official_groups_need_the_official_attribute_count():
    m = get_method("gemzsl")({**get_method("gemzsl").default_hparams("SUN"), "attribute_embedding": "w2v"},
                             task(dataset="SUN"))
    m.task = Task(dataset="SUN", attribute_names=tuple(f"a{i}" for i in range(102)), input_kind="map",
                  input_shape=(C, 3, 4), attribute_embeddings={})
    assert [len(g) for g in m.groups()] == [36, 40, 10, 16]
    m.task = Task(dataset="SUN", attribute_names=tuple(f"a{i}" for i in range(12)), input_kind="map",
                  input_shape=(C, 3, 4), attribute_embeddings={})
    with pytest.raises(ValueError, match="no attribute groups"):
        m.groups()
    apn = get_method("apn")
    a = apn(apn.default_hparams("CUB"), Task(dataset="CUB", attribute_names=tuple(f"a{i}" for i in range(312)),
                                             input_kind="map", input_shape=(C, 3, 4), attribute_embeddings={}))
    parts = a.groups()
    assert len(parts) == 7 and parts[1] == parts[3], "belly twice (official parts[:7])"
    covered = {i for g in parts for i in g}
    assert not covered & {24, 38, 58, 72, 236, 239} and not covered & {217, 235, 248, 262}, "back and others unused"
    assert len(covered) == 312 - 34 - 34


# --- one step lowers each loss ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,lr", [("rezsl", 1e-3), ("rezsl.remse-off", 1e-3), ("gemzsl", 1e-3),
                                     ("apn", 1e-5)])   # APN's weights start at U[0, 2e-4): a small step
def test_one_training_step_lowers_the_loss_on_a_fixed_batch(name, lr):
    m = method(name)
    m.batch_total, m.warm = 6, False   # APN: past the warm-up, so L_CPT counts too
    x, y, att = inputs(m), torch.tensor([0, 1, 2, 3, 4, 0]), m.tensor(semantics(5).att)
    before, after = one_step_lowers(lambda: m.loss(m.forward(x), y, att), list(m.net.parameters()), lr)
    assert after < before, name


def test_one_msdn_step_lowers_its_loss():
    m = method("msdn", lambda_distill=1.0)
    targets = AllClassTargets.build(m, semantics(5), semantics(3, offset=5), 1.0)
    x, y = inputs(m), torch.tensor([0, 1, 2, 3, 4, 0])
    before, after = one_step_lowers(lambda: m.loss(x, y, targets), list(m.net.parameters()), 1e-3)
    assert after < before


# --- declarations --------------------------------------------------------------------------------------

def test_fixed_gamma_follows_the_dataset():
    assert [get_method("gemzsl").fixed_gamma(get_method("gemzsl").default_hparams(ds))
            for ds in ("CUB", "SUN", "AWA2")] == [0.7, 0.7, 3.5]
    assert [get_method("apn").fixed_gamma(get_method("apn").default_hparams(ds))
            for ds in ("CUB", "SUN", "AWA2")] == [0.7, 0.4, 0.7]
    assert get_method("msdn").fixed_gamma(get_method("msdn").default_hparams("CUB")) == 2.0
    assert get_method("rezsl").fixed_gamma(get_method("rezsl").default_hparams("CUB")) == 0.0
    assert "γ = 3.5" in get_method("gemzsl").official_selection(get_method("gemzsl").default_hparams("AWA2"))
    assert not any(get_method(n).uses_unseen_semantics for n in ("rezsl", "gemzsl", "apn"))
    assert get_method("msdn").uses_unseen_semantics


def test_msdn_profiles_follow_the_official_scripts():
    hp = {ds: get_method("msdn").default_hparams(ds) for ds in ("CUB", "SUN", "AWA2")}
    assert [hp[ds]["epochs"] for ds in hp] == [30, 70, 50]
    assert [(hp[ds]["weight_av"], hp[ds]["weight_va"]) for ds in hp] == [(0.9, 0.1), (0.7, 0.3), (1.0, 0.0)]
    assert [hp[ds]["sampler"] for ds in hp] == ["random", "balanced", "balanced"]
    assert all(hp[ds]["sampling"] == "independent" and hp[ds]["eval_cadence"] == "official" for ds in hp)


def test_apn_epoch_start_warm_up_then_decay_and_fresh_moments():
    m = method("apn.image", pretrain_epoch=1, pretrain_lr=1e-2, classifier_lr=1e-3)
    opt = m.optimizer()
    m.epoch_start(1, opt)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"head": 1e-2, "backbone": 0.0} and m.warm
    m.batch_total = 6
    m.loss(m.forward(inputs(m)), torch.tensor([0, 1, 2, 3, 4, 0]), m.tensor(semantics(5).att)).backward()
    opt.step()
    assert opt.state
    m.epoch_start(3, opt)   # official epoch 2 > pretrain_epoch 1
    assert not m.warm and not opt.state, "a new optimizer every epoch: no moments carried over"
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"head": 1e-3, "backbone": 1e-3}
    m.epoch_start(12, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.8)


def test_rezsl_learning_rate_decays_at_the_start_of_epoch_lr_step():
    m = method("rezsl", lr=1.0, lr_gamma=0.1, lr_step=10)
    opt = m.optimizer()
    rates = []
    for epoch in (1, 9, 10, 20):
        m.epoch_start(epoch, opt)
        rates.append(opt.param_groups[0]["lr"])
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.01])


# --- through the evaluator ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["rezsl", "gemzsl", "apn", "msdn"])
def test_tiny_run_through_the_evaluator(region_data, name):
    from zsl_bench.evaluator import Evaluator

    d, store = region_data
    out = Evaluator(d, store, get_method(name), seed=0, search=False, progress=False, hparams={"epochs": 2}).run()
    assert out.selection["val"]["epoch"] in (1, 2) and out.selection["paper"]["epoch"] in (1, 2)
    metrics = out.selection["val"]["metrics"]
    assert 0 <= metrics["H"] <= 1 and np.isfinite(metrics["AUSUC"])
    assert out.selection["last"]["metrics"]["gamma"] == get_method(name).fixed_gamma(
        get_method(name).default_hparams("synthetic"))
    if name == "msdn":
        readouts = out.score_variants   # each sub-net alone, read off the same fitted models
        assert set(readouts) == {"inference-av", "inference-va"}
        assert all(r.selection["val"]["metrics"] != metrics for r in readouts.values())
