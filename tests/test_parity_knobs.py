"""Parity knobs of the region methods: TransZero's sampling and evaluation cadence, Mg-MRN's SCAM
projection init and its `channels-input-only` variant, and the paper rules' sources."""
import copy

import numpy as np
import pytest
import torch

from zsl_bench_methods.mgmrn.model import SCAM, MgMRNHead
from zsl_bench.map_families import AllClassMapMethod
from zsl_bench.method import ClassSemantics, FitContext, Task, TrainData
from zsl_bench.registry import get_method

A, DV = 12, 20   # attributes, word-vector size


class Blocks:
    """A stand-in for the feature store's MapView: `read(idx)` gives one array per level, and every read
    is logged (the indices a fit trained on, in order)."""

    def __init__(self, *arrays):
        self.arrays, self.reads = arrays, []

    def __len__(self):
        return len(self.arrays[0])

    def read(self, idx):
        self.reads.append(np.asarray(idx).copy())
        return [a[idx] for a in self.arrays]


def task(input_shapes, kind="map"):
    rng = np.random.default_rng(0)
    return Task(dataset="toy", attribute_names=tuple(f"a{i}" for i in range(A)), input_kind=kind,
                input_shape=input_shapes[-1], input_shapes=tuple(input_shapes),
                attribute_embeddings={"w2v": rng.normal(size=(A, DV)), "minilm": rng.normal(size=(A, DV))})


def semantics(n, offset=0):
    rng = np.random.default_rng(offset + 1)
    original = rng.uniform(0, 100, (n, A))
    return ClassSemantics(class_ids=np.arange(offset, offset + n),
                          att=original / np.linalg.norm(original, axis=1, keepdims=True), original=original)


def context(on_checkpoint, unseen, seed=0):
    return FitContext(seed=seed, device="cpu", progress=False, _on_checkpoint=on_checkpoint, _unseen=unseen,
                      _declared_unseen=True)


# --- TransZero ----------------------------------------------------------------------------------------

def transzero(n=23, **hparams):
    """A tiny TransZero (4 seen classes, 8 × 3 × 3 maps) and its training data."""
    cls = get_method("transzero")
    hp = {**cls.default_hparams("synthetic"), "d": 16, "d_ff": 32, "batch_size": 5, "epochs": 3,
          "attribute_embedding": "w2v", **hparams}
    rng = np.random.default_rng(1)
    y = np.arange(n) % 4
    train = TrainData(x=Blocks(rng.normal(size=(n, 8, 3, 3)).astype(np.float32)), y=y, semantics=semantics(4))
    return cls(hp, task([(8, 3, 3)])), train


def fit_recording(method, train, fit=None):
    """Fit; returns [(label, number of training batches read so far, state)] at each checkpoint."""
    out = []
    ctx = context(lambda e: out.append((e, len(train.x.reads), copy.deepcopy(method.state_dict()))),
                  semantics(3, offset=4))
    (fit or type(method).fit)(method, train, ctx)
    assert ctx.checkpoints == [label for label, _, _ in out]
    return out


def same_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_profiles_use_the_official_knobs_and_the_synthetic_default_the_harness_procedure():
    cls = get_method("transzero")
    for ds in ("CUB", "SUN", "AWA2"):
        hp = cls.default_hparams(ds)
        assert (hp["sampling"], hp["eval_cadence"]) == ("independent", "official"), ds
    hp = cls.default_hparams("synthetic")
    assert (hp["sampling"], hp["eval_cadence"]) == ("epoch", "epoch_end")


def test_epoch_and_epoch_end_are_the_shared_loop_step_for_step():
    """The knobs' loop with the harness settings = `AllClassMapMethod.fit`: same batches, same states at
    the same checkpoints, bit for bit (so both official settings run the same per-batch updates)."""
    ours, train = transzero()
    base, train_base = transzero()
    got = fit_recording(ours, train)
    expected = fit_recording(base, train_base, fit=AllClassMapMethod.fit)
    assert [(e, n) for e, n, _ in got] == [(e, n) for e, n, _ in expected] == [(1, 5), (2, 10), (3, 15)]
    assert all(np.array_equal(a, b) for a, b in zip(train.x.reads, train_base.x.reads))
    assert all(same_states(a, b) for (_, _, a), (_, _, b) in zip(got, expected))


def test_independent_sampling_draws_each_batch_afresh():
    n = 23
    method, train = transzero(n=n, sampling="independent", epochs=4)
    fit_recording(method, train)
    reads = train.x.reads
    assert len(reads) == 4 * 5 and all(len(b) == 5 and len(set(b)) == 5 for b in reads)   # distinct within a batch
    epochs = [np.concatenate(reads[i:i + 5]) for i in range(0, len(reads), 5)]
    assert any(len(set(e)) < len(e) for e in epochs), "images repeat within an epoch"
    assert any(set(e) != set(range(n)) for e in epochs), "an epoch need not cover every image"

    method, train = transzero(n=n, sampling="epoch", epochs=4)
    fit_recording(method, train)
    reads = train.x.reads
    assert all(sorted(np.concatenate(reads[i:i + 5])) == list(range(n)) for i in range(0, len(reads), 5))


def test_balanced_sampler_is_independent_in_both_settings():
    """The official balanced sampler (SUN, AWA2) already draws every batch afresh: `sampling` changes nothing."""
    reads = []
    for sampling in ("epoch", "independent"):
        method, train = transzero(sampler="balanced", sampling=sampling)
        fit_recording(method, train)
        reads.append(train.x.reads)
    assert all(np.array_equal(a, b) for a, b in zip(*reads))
    assert all(len(set(train.y[b])) == len(b) == 4 for b in reads[0])   # distinct classes, one image each


def test_official_cadence_checkpoints_after_steps_one_plus_j_r():
    n, epochs = 23, 3   # batch 5: R = 23 // 5 = 4 → after steps 1, 5, 9
    method, train = transzero(n=n, eval_cadence="official", epochs=epochs)
    got = fit_recording(method, train)
    assert [(e, steps) for e, steps, _ in got] == [(1, 1), (2, 5), (3, 9)]
    assert len(train.x.reads) == 9, "training stops at the last checkpoint"
    assert len(got) == epochs

    epoch_end = fit_recording(*transzero(n=n, eval_cadence="epoch_end", epochs=epochs))
    assert not same_states(got[0][2], epoch_end[0][2]), "after one step ≠ after a full epoch"
    one_step = fit_recording(*transzero(n=n, eval_cadence="official", epochs=1))
    assert same_states(got[0][2], one_step[0][2])


def test_official_cadence_keeps_its_labels_on_a_larger_training_set():
    """The evaluator refits on trainval and needs the validation fit's checkpoint labels."""
    small = fit_recording(*transzero(n=23, eval_cadence="official", sampling="independent"))
    large = fit_recording(*transzero(n=61, eval_cadence="official", sampling="independent"))
    assert [e for e, _, _ in small] == [e for e, _, _ in large] == [1, 2, 3]
    assert [s for _, s, _ in large] == [1, 13, 25]   # R = 61 // 5 = 12


@pytest.mark.parametrize("knob,value", [("sampling", "shuffled"), ("eval_cadence", "iteration")])
def test_unknown_knob_values_are_refused(knob, value):
    method, train = transzero(**{knob: value})
    with pytest.raises(ValueError, match=knob):
        fit_recording(method, train)


# --- Mg-MRN -------------------------------------------------------------------------------------------

def test_scam_projection_is_c2_xavier_fill():
    """fvcore's c2_xavier_fill = kaiming_uniform_(a=1): U(±√(3 / fan_in)), not Xavier's ±√(6 / (fan_in + fan_out))."""
    torch.manual_seed(0)
    scam = SCAM(256, 64)
    torch.manual_seed(0)
    expected = torch.nn.Conv2d(256, 64, 1, bias=False).weight.detach()   # the same draws for torch's default init
    torch.nn.init.kaiming_uniform_(expected, a=1)
    assert torch.equal(scam.proj.weight.detach(), expected) and scam.proj.bias is None
    assert scam.proj.weight.abs().max() <= (3 / 256) ** 0.5


def full_width_head(halvings):
    with torch.device("meta"):
        return MgMRNHead((512, 1024, 2048), np.zeros((312, 300)), width=1.0, halvings=halvings)


@pytest.mark.parametrize("halvings,fine_tokens,s3_params", [("consistent", 392, 47_196_677),
                                                            ("released", 980, 9_443_845)])
def test_full_width_figures_at_448(halvings, fine_tokens, s3_params):
    """ResNet-101 at 448 px: layer2 56×56×512, layer3 28×28×1024, layer4 14×14×2048 (meta tensors, no compute)."""
    head = full_width_head(halvings)
    assert sum(p.numel() for p in head.granularity["1"].parameters()) == s3_params
    maps = {1: torch.empty(1, 512, 56, 56, device="meta"), 2: torch.empty(1, 1024, 28, 28, device="meta"),
            3: torch.empty(1, 2048, 14, 14, device="meta")}
    _, attention = head(maps)
    assert {k: a.shape[-1] for k, a in attention.items()} == {1: fine_tokens, 2: 392, 3: 196}


def mgmrn(name, shapes=((16, 12, 12), (32, 6, 6), (64, 3, 3)), **hparams):
    cls = get_method(name)
    hp = {**cls.default_hparams("synthetic"), "attribute_embedding": "w2v", "epochs": 1, **hparams}
    return cls(hp, task(list(shapes), "maps"))


def test_channels_input_only_variant_fits_one_epoch_and_scores():
    cls = get_method("mgmrn.channels-input-only")
    assert cls.default_hparams("CUB")["halvings"] == "released"
    assert get_method("mgmrn").default_hparams("CUB")["halvings"] == "auto"   # consistent on ResNet maps
    method = mgmrn("mgmrn.channels-input-only")   # the embedded default's 12×12 / 6×6 / 3×3 maps
    rng = np.random.default_rng(0)
    n = 16
    levels = [rng.normal(size=(n, c, s, s)).astype(np.float32) for c, s in ((16, 12), (32, 6), (64, 3))]
    train = TrainData(x=Blocks(*levels), y=np.arange(n) % 4, semantics=semantics(4))
    labels = []
    method.fit(train, context(labels.append, semantics(3, offset=4)))
    assert labels == [1]
    head = method.net["head"]
    assert head.grids({1: (12, 12), 2: (6, 6), 3: (3, 3)}) == {1: (6, 6), 2: (3, 3), 3: (3, 3)}
    scores = method.score(Blocks(*levels), semantics(7))
    assert scores.shape == (n, 7) and np.isfinite(scores).all()
    _, attention = head({k + 1: torch.as_tensor(v[:2]) for k, v in enumerate(levels)})
    assert attention[1].shape[-1] == 36 + 9   # 6×6 own tokens + 3×3 fused
    maps = method.attention_maps(Blocks(*levels))
    assert maps["fine (layer2)"].shape == (n, 3, 3)
    np.testing.assert_allclose(maps["fine (layer2)"].sum((1, 2)), 1.0, rtol=1e-5)


def test_auto_halvings_bring_a_cnns_levels_and_a_vits_blocks_to_one_grid():
    from zsl_bench_methods.mgmrn.model import auto_halvings

    assert auto_halvings({1: (56, 56), 2: (28, 28), 3: (14, 14)}) == "consistent"   # ResNet-101 at 448 px
    assert auto_halvings({1: (12, 12), 2: (6, 6), 3: (3, 3)}) == "consistent"       # the embedded default
    assert auto_halvings({1: (32, 32), 2: (32, 32), 3: (32, 32)}) == "equal"        # DINOv2 ViT-B/14 at 448 px
    head = mgmrn("mgmrn", shapes=((16, 4, 4), (16, 4, 4), (16, 4, 4))).build_net()["head"]
    assert head.halvings == {1: 0, 2: 0, 3: 0}
    assert mgmrn("mgmrn").build_net()["head"].halvings == {1: 2, 2: 1, 3: 0}


def test_halvings_that_would_shrink_a_map_below_one_cell_are_a_clear_error():
    with pytest.raises(ValueError, match=r"mgmrn\.channels-input-only: the fine \(layer2\) map is 1×1"):
        mgmrn("mgmrn.channels-input-only", shapes=((16, 1, 1), (32, 2, 2), (64, 1, 1))).build_net()
    with pytest.raises(ValueError, match=r"^mgmrn: the fine \(layer2\) map is 2×2; halving it 2 time"):
        mgmrn("mgmrn", shapes=((16, 2, 2), (32, 2, 2), (64, 1, 1)), halvings="consistent").build_net()
    with pytest.raises(ValueError, match=r"^mgmrn: halvings 'auto' found no mode bringing the maps 2×2, 2×2, 1×1"):
        mgmrn("mgmrn", shapes=((16, 2, 2), (32, 2, 2), (64, 1, 1))).build_net()
    head = mgmrn("mgmrn.channels-input-only").build_net()["head"]   # built for 12/6/3, fed smaller maps
    tiny = {1: torch.zeros(1, 16, 1, 1), 2: torch.zeros(1, 32, 2, 2), 3: torch.zeros(1, 64, 1, 1)}
    with pytest.raises(ValueError, match="channels-input-only.*1×1"):
        head(tiny)
    with pytest.raises(ValueError, match="fuses levels on different grids"):
        mgmrn("mgmrn.channels-input-only", fusion="mutual").build_net()


# --- paper rules --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,checkpoint,calibration,separately", [
    ("transzero", "test", "fixed", ("T1", "H")),
    ("dazle", "test", "fixed", ("H",)),
    ("mgmrn", "test", "test-grid", ("T1", "H", "AUSUC")),
    ("rezsl", "test", "test-grid", ("T1", "H", "AUSUC")),
    ("gemzsl", "test", "fixed", ("T1", "H")),
    ("msdn", "test", "fixed", ("T1", "H")),
    ("apn", "test", "fixed", ("T1", "H")),
    ("eszsl", "validation", "zero", ("T1", "H")),
    ("sae", "validation", "zero", ("T1", "H")),
    ("ale", "validation", "zero", ("T1", "H")),
])
def test_paper_rules_cite_source_lines(name, checkpoint, calibration, separately):
    rule = get_method(name).paper_rule
    assert (rule.checkpoint, rule.calibration, tuple(rule.separately)) == (checkpoint, calibration, separately)
    assert ":L" in rule.source, f"{name}: a file and line numbers"


# --- through the evaluator (validation folds, then the refit on trainval) --------------------------------

def evaluate(region_project, name, **hparams):
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.features import FeatureStore

    d = load_dataset(region_project / "data" / "prepared" / "synthetic")
    store = FeatureStore(region_project / "features" / "synthetic" / "resnet10t")
    return Evaluator(d, store, get_method(name), seed=0, search=False, progress=False, hparams=hparams).run()


def test_official_knobs_run_through_the_evaluator(region_project):
    """The refit on trainval (more images, larger R) reaches the validation fit's checkpoint labels."""
    out = evaluate(region_project, "transzero", epochs=2, sampling="independent", eval_cadence="official")
    assert [r["epoch"] for r in out.validation_trace] == [1, 2]
    assert out.selection["val"]["epoch"] in (1, 2) and out.selection["paper"]["epoch"] in (1, 2)


def test_channels_input_only_runs_through_the_evaluator(region_project):
    out = evaluate(region_project, "mgmrn.channels-input-only", epochs=1)
    assert [r["epoch"] for r in out.validation_trace] == [1]
    assert 0.0 <= out.selection["val"]["metrics"]["T1"] <= 100.0


def test_update_joint_is_the_sequential_update_on_frozen_maps():
    """Why the ablation stage does not run `mgmrn.update-joint` on maps (`identical_when`): with the stop-
    gradients no parameter is shared between the branches, so one step on the summed loss moves every
    parameter as the three sequential steps do. With the fusion's stop-gradients off it is not so."""
    rng = np.random.default_rng(0)
    n = 16
    levels = [rng.normal(size=(n, c, s, s)).astype(np.float32) for c, s in ((16, 12), (32, 6), (64, 3))]

    def fitted(name, **hp):
        method = mgmrn(name, **hp)
        train = TrainData(x=Blocks(*levels), y=np.arange(n) % 4, semantics=semantics(4))
        method.fit(train, context(lambda e: None, semantics(3, offset=4)))
        return method.state_dict()

    official, joint = fitted("mgmrn"), fitted("mgmrn.update-joint")
    assert official.keys() == joint.keys()
    for k in official:
        torch.testing.assert_close(joint[k], official[k], rtol=1e-5, atol=1e-6, msg=k)
    assert get_method("mgmrn.update-joint").identical_to_base() and not get_method("mgmrn.levels1").identical_to_base()
    loose_official, loose_joint = fitted("mgmrn", stop_gradient=False), fitted("mgmrn.update-joint", stop_gradient=False)
    assert any(not torch.allclose(loose_joint[k], loose_official[k], rtol=1e-5, atol=1e-6) for k in loose_official)
