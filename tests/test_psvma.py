"""PSVMA: parity with the release's computation (re-typed in benchmarks/psvma_official_copy.py) in float64 on
the frozen-token head and on a tiny ViT end to end; shapes, where gradients go, one step, the declarations and
refusals; a tiny run through the evaluator (slow)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zsl_bench_methods.psvma.model import DSAD, GroupGate, PSVMAHead, PSVMAImage, PSVMAMaps
from tests.test_region_methods import one_step_lowers
from zsl_bench.method import ClassSemantics, Task
from zsl_bench.registry import get_method
from zsl_bench.torch_methods import token_backbone

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from psvma_official_copy import PSVMANet, copy_weights, their_name, total_loss  # noqa: E402

A, DV, C = 12, 20, 16   # attributes, word-vector size, channels
NAMES = tuple(f"type{i // 4}::v{i}" for i in range(A))
N_SEEN, N_UNSEEN = 6, 3
LAMBDAS = {"lambda_cls": 1.0, "lambda_reg": 0.5, "lambda_bias": 0.1}
VIT = dict(img_size=32, patch_size=8, embed_dim=C, depth=3, num_heads=2)   # a 4 × 4 grid at 32 px


def task(kind="map", shape=(C, 3, 4)):
    rng = np.random.default_rng(0)
    return Task(dataset="toy", attribute_names=NAMES, input_kind=kind, input_shape=shape, input_shapes=(shape,),
                attribute_embeddings={"w2v": rng.normal(size=(A, DV))})


def semantics(n, offset=0):
    rng = np.random.default_rng(offset + 1)
    original = rng.uniform(0, 100, (n, A))
    return ClassSemantics(class_ids=np.arange(offset, offset + n),
                          att=original / np.linalg.norm(original, axis=1, keepdims=True), original=original)


def method(name="psvma", **hp):
    cls = get_method(name)
    image = cls.input_kind == "image"
    hparams = {**cls.default_hparams("synthetic"), "attribute_embedding": "w2v", "groups": 3, "mix_hidden": 10, **hp}
    if image:
        hparams.update(backbone="vit_tiny_patch16_224", pretrained=False, image_size=32)
    m = cls(hparams, task(cls.input_kind, (3,) if image else (C, 3, 4)))
    torch.manual_seed(0)
    m.net = m.build_net()
    m.unseen_att = m.tensor(semantics(N_UNSEEN, offset=N_SEEN).att)
    return m


def class_att(dtype=torch.float32):
    seen, unseen = semantics(N_SEEN).att, semantics(N_UNSEEN, offset=N_SEEN).att
    return torch.as_tensor(seen, dtype=dtype), torch.as_tensor(unseen, dtype=dtype)


# --- parity with the release, float64 ---------------------------------------------------------------------

def parity(ours, official, m, x_ours, x_theirs):
    """Scores (GZSL over all classes, ZSL over the unseen), the weighted loss and every parameter's gradient."""
    ours.double(), official.double()
    copy_weights(ours, official)
    seen, unseen = class_att(torch.float64)
    every = torch.cat([seen, unseen])
    y = torch.tensor([0, 3, 5, 1, 2])
    m.net, m.unseen_att = ours, unseen
    ours.eval(), official.eval()
    out = ours(x_ours)
    torch.testing.assert_close(m.class_scores(out, every), official(x_theirs, seen_att=every, att_all=every),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.class_scores(out, unseen), official(x_theirs, seen_att=unseen, att_all=every),
                               rtol=1e-10, atol=1e-12)
    # no dropout anywhere (rates 0), so train mode computes what eval mode does; the release's loss needs it
    assert all(mod.p == 0 for mod in official.modules() if isinstance(mod, torch.nn.Dropout))
    official.train()
    reference = total_loss(official(x_theirs, att=seen[y], label=y, seen_att=seen, att_all=every),
                           {1: LAMBDAS["lambda_cls"], 2: LAMBDAS["lambda_reg"], 3: LAMBDAS["lambda_bias"]})
    loss = m.loss(ours(x_ours), y, seen)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=1e-12)
    loss.backward()
    reference.backward()
    theirs = dict(official.named_parameters(remove_duplicate=False))
    for name, p in ours.named_parameters():
        if name.startswith("backbone.net.norm."):   # the ViT's final norm: off the path in both (no gradient)
            assert p.grad is None and theirs[their_name(name)].grad is None
            continue
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, theirs[their_name(name)].grad, rtol=1e-10, atol=1e-13,
                                   msg=lambda msg, name=name: f"{name}: {msg}")
    matched = {id(theirs[their_name(n)]) for n, _ in ours.named_parameters()}
    unused = {n for n, p in official.named_parameters() if id(p) not in matched}
    assert unused == {"scale", "cat.weight", "cat.bias", "blocks.reason.fc1.weight", "blocks.reason.fc1.bias",
                      "blocks.reason.fc2.weight", "blocks.reason.fc2.bias"}
    assert all(dict(official.named_parameters())[n].grad is None for n in unused)


def w2v32(m):
    """The word vectors as our head stores them (a float32 buffer), in float64 for the release's copy."""
    return m.attribute_embedding().astype(np.float32).astype(np.float64)


def test_frozen_token_head_matches_the_official_computation_in_fp64_scores_loss_and_every_gradient():
    m = method(**LAMBDAS)
    torch.manual_seed(2)
    ours = PSVMAMaps(PSVMAHead(C, m.attribute_embedding(), 3, 12, 10))
    with torch.no_grad():   # away from the 0.01 initial scale, so every term is far from degenerate
        ours.head.W.normal_(), ours.head.V.normal_()
    official = PSVMANet(None, C, A, N_SEEN + N_UNSEEN, N_UNSEEN, 3, w2v32(m), scale=25.0,
                        tokens=12, mix_hidden=10)
    maps = torch.rand(5, C, 3, 4, dtype=torch.float64)
    parity(ours, official, m, maps, maps.flatten(2).transpose(1, 2))


def test_vit_end_to_end_matches_the_official_computation_in_fp64_scores_loss_and_every_gradient():
    """The interleaving: blocks but the last, DSAD, class parameter + position embedding afresh, the last
    block, DSAD again (same weights), no final norm."""
    import timm

    m = method(**LAMBDAS)
    torch.manual_seed(3)
    backbone = token_backbone("vit_tiny_patch16_224", False, None, **VIT)
    ours = PSVMAImage(backbone, PSVMAHead(C, m.attribute_embedding(), 3, 16, 10))
    with torch.no_grad():
        ours.head.W.normal_(), ours.head.V.normal_()
        backbone.net.cls_token.normal_()
    basenet = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **VIT)
    official = PSVMANet(basenet, C, A, N_SEEN + N_UNSEEN, N_UNSEEN, 3, w2v32(m), scale=25.0,
                        tokens=16, mix_hidden=10)
    images = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    parity(ours, official, m, images, images)


# --- behaviour --------------------------------------------------------------------------------------------

def test_head_shapes_attention_rows_and_four_regression_terms():
    m = method()
    out = m.forward(torch.rand(6, C, 3, 4))
    assert out["attributes"].shape == (6, A) and out["grid"] == (3, 4)
    assert out["attention"].shape == (6, A, 12)
    torch.testing.assert_close(out["attention"].sum(-1), torch.ones(6, A))
    assert len(out["maxima"]) == 4 and all(t.shape == (6, A) for t in out["maxima"])
    # the attention logits are ReLU'd and scaled: their maxima are non-negative
    assert all((t >= 0).all() for t in out["maxima"])
    assert m.class_scores(out, m.tensor(semantics(5).att)).shape == (6, 5)


def test_one_dsad_serves_both_passes():
    head = method().net.head
    assert sum(isinstance(mod, DSAD) for mod in head.modules()) == 1


def test_frozen_mode_trains_every_head_parameter_and_one_step_lowers_the_loss():
    m = method()
    x, y = torch.rand(6, C, 3, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    seen = m.tensor(semantics(N_SEEN).att)
    m.loss(m.forward(x), y, seen).backward()
    assert {n for n, p in m.net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} == \
        {n for n, p in m.net.named_parameters()}
    m.net.zero_grad()
    before, after = one_step_lowers(lambda: m.loss(m.forward(x), y, seen), list(m.net.parameters()), 1e-3)
    assert after < before


def test_image_mode_builds_a_tiny_vit_trains_it_end_to_end_and_takes_a_step():
    m = method("psvma.image")
    assert m.map_grid() == (2, 2)   # vit_tiny at 32 px, patch 16
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    seen = m.tensor(semantics(N_SEEN).att)
    m.loss(m.forward(x), y, seen).backward()
    got = {n for n, p in m.net.backbone.net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    depth = len(m.net.backbone.net.blocks)
    assert {"patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.weight",
            f"blocks.{depth - 1}.mlp.fc2.weight"} <= got
    assert not any(n.startswith("norm.") for n in got), "the final norm is not on the path (official)"
    m.net.zero_grad()
    before, after = one_step_lowers(lambda: m.loss(m.forward(x), y, seen), list(m.net.parameters()), 1e-4)
    assert after < before


def test_token_backbone_returns_patch_grids_without_prefix_tokens():
    backbone = token_backbone("vit_tiny_patch16_224", False, None, **VIT)
    grids = backbone(torch.randn(2, 3, 32, 32), [0, 2])
    assert [tuple(g.shape) for g in grids] == [(2, C, 4, 4)] * 2
    assert [tuple(g.shape) for g in backbone(torch.randn(2, 3, 48, 48), [2])] == [(2, C, 6, 6)]   # dynamic size


def test_group_gate_refuses_more_groups_than_attributes():
    with pytest.raises(ValueError, match="groups"):
        GroupGate(3, 4)


def test_refuses_a_cnn_store_before_any_run():
    from zsl_bench.runner import NotApplicable, check_applicable

    class CnnStore:
        token_maps = False

        def unavailable(self, arrays):
            return None

        def backbone_label(self):
            return "toy/resnet"

        def resolve(self, name):
            return name

        def __getattr__(self, name):   # anything else the evaluator asks of a store: not needed here
            raise AttributeError(name)

    cls = get_method("psvma")
    assert cls.requires_token_maps
    with pytest.raises(NotApplicable, match="token model"):
        check_applicable(cls, CnnStore(), cls.default_hparams("synthetic"))


def test_fit_reads_unseen_semantics_so_it_is_declared():
    cls = get_method("psvma")
    assert cls.uses_unseen_semantics

    class Ctx:
        def unseen_semantics(self):
            raise RuntimeError("asked")

    with pytest.raises(RuntimeError, match="asked"):
        method().fit(None, Ctx())


def test_profiles_follow_the_official_configs():
    cls = get_method("psvma")
    hp = {ds: cls.default_hparams(ds) for ds in ("CUB", "SUN", "AWA2", "AWA1", "APY")}
    assert [hp[ds]["shots"] for ds in ("CUB", "SUN", "AWA2")] == [2, 3, 3]
    assert [hp[ds]["epochs"] for ds in ("CUB", "SUN", "AWA2")] == [25, 25, 20]
    assert [hp[ds]["lambda_bias"] for ds in ("CUB", "SUN", "AWA2")] == [0.001, 0.02, 0.1]
    assert [hp[ds]["groups"] for ds in ("CUB", "SUN", "AWA2")] == [28, 4, 9]
    assert [cls.fixed_gamma(hp[ds]) for ds in ("CUB", "SUN", "AWA2", "AWA1")] == [1.5, 1.5, 3.5, 3.5]
    assert all(hp[ds]["ways"] == 16 and hp[ds]["lr"] == 1e-3 and hp[ds]["weight_decay"] == 1e-4
               and hp[ds]["lr_step"] == 5 and hp[ds]["lr_gamma"] == 0.1 and hp[ds]["scale"] == 25.0
               and hp[ds]["lambda_reg"] == 0.5 and hp[ds]["image_size"] == 224 for ds in hp)
    assert "γ = 3.5" in cls.official_selection(hp["AWA2"])
    m = method(lr=1.0, lr_gamma=0.1, lr_step=5)
    opt = m.optimizer()
    rates = []
    for epoch in (1, 4, 5, 10):   # StepLR stepped before each epoch: the first decay starts epoch 5
        m.epoch_start(epoch, opt)
        rates.append(opt.param_groups[0]["lr"])
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.01])


@pytest.mark.slow
def test_tiny_run_through_the_evaluator(region_data):
    from zsl_bench.evaluator import Evaluator

    d, store = region_data
    out = Evaluator(d, store, get_method("psvma"), seed=0, search=False, progress=False,
                    hparams={"epochs": 2, "groups": 2}).run()
    assert out.selection["val"]["epoch"] in (1, 2) and out.selection["paper"]["epoch"] in (1, 2)
    metrics = out.selection["val"]["metrics"]
    assert 0 <= metrics["H"] <= 1 and np.isfinite(metrics["AUSUC"])
    assert out.selection["last"]["metrics"]["gamma"] == 1.5
