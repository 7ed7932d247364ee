"""The shared training loop's settings (micro-batches, precision, the batch stream's state) and the image
DataLoader (per-image seeds: the same batch under any number of workers)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_parity_knobs import Blocks, context, mgmrn, semantics, transzero
from zsl_bench.method import TrainData, TrainSettings
from zsl_bench.training import BatchStream, resolve_precision


def levels(n=16):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, c, s, s)).astype(np.float32) for c, s in ((16, 12), (32, 6), (64, 3))]


def fit_mgmrn(settings: TrainSettings, **hp):
    method = mgmrn("mgmrn", epochs=2, lr_step=1, **hp)
    n = 16
    ctx = context(lambda e: None, semantics(3, offset=4))
    ctx.settings = settings
    method.fit(TrainData(x=Blocks(*levels(n)), y=np.arange(n) % 4, semantics=semantics(4)), ctx)
    return method.state_dict()


def test_micro_batches_accumulate_the_whole_batch_gradient():
    """Mg-MRN's losses are means over samples: 16 images as parts of 5, 5, 5, 1 (each weighted by its share)
    give the one-pass update up to float summation order, through all three sequential steps per batch."""
    whole = fit_mgmrn(TrainSettings())
    parts = fit_mgmrn(TrainSettings(micro_batch=5))
    moved = False
    for k in whole:
        torch.testing.assert_close(parts[k], whole[k], rtol=1e-4, atol=1e-5, msg=k)
        moved |= not torch.equal(parts[k], whole[k])
    assert moved, "accumulation reorders the sums: not bitwise, only close"


def test_bf16_autocast_trains_on_cpu_and_changes_the_numbers():
    fp32 = fit_mgmrn(TrainSettings(precision="fp32"))
    bf16 = fit_mgmrn(TrainSettings(precision="bf16"))
    assert all(torch.isfinite(v).all() for v in bf16.values() if v.is_floating_point())
    assert all(v.dtype == fp32[k].dtype for k, v in bf16.items()), "the weights stay fp32 (autocast computes in bf16)"
    assert any(not torch.allclose(bf16[k], fp32[k], atol=1e-6) for k in fp32)


def test_precision_rules():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")


def test_the_default_precision_is_fp32_even_on_a_gpu_with_bf16(monkeypatch):
    """Every official code trains in fp32: params.yaml's and a bare RunRequest's default resolve to fp32 on a
    (simulated) bf16-capable GPU; only an explicit `auto` picks bf16 there."""
    import torch

    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.runner import RunRequest

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    repo = ProjectPaths(Path(__file__).resolve().parents[1])
    assert load_params(repo)["train"]["precision"] == "fp32"
    assert resolve_precision(load_params(repo)["train"]["precision"], "cuda:0") == "fp32"
    assert resolve_precision(RunRequest(dataset="CUB", method="dazle", seed=0).precision, "cuda:0") == "fp32"
    assert resolve_precision("auto", "cuda:0") == "bf16"


def test_tables_mark_a_precision_other_than_fp32():
    from zsl_bench.table_cells import method_label

    row = {"method": "transzero", "hparams_searched": True}
    assert method_label({**row, "precision": "fp32"}) == "transzero"
    assert method_label({**row, "precision": "bf16"}) == "transzero (bf16)"
    assert method_label({**row, "precision": "bf16/fp32", "hparams_searched": False}) == "transzero (bf16/fp32) †"


def test_the_batch_stream_resumes_mid_epoch():
    """An epoch's batches drawn at once and a checkpoint inside it (TransZero's official cadence with
    shuffled passes): the state carries the batches not yet used."""
    draw = lambda rng: [rng.permutation(10)[i:i + 3] for i in range(0, 10, 3)]
    stream = BatchStream(draw, np.random.default_rng(4))
    first = [stream.next() for _ in range(2)]
    state = stream.state_dict()
    rest = [stream.next() for _ in range(6)]
    again = BatchStream(draw, np.random.default_rng(999))
    again.load_state_dict(state)
    assert len(state["pending"]) == 2 and len(first) == 2
    assert all(np.array_equal(a, b) for a, b in zip(rest, [again.next() for _ in range(6)]))


def test_a_resumed_fit_continues_bit_for_bit_in_process():
    """TransZero with the official cadence (a checkpoint after one step, then every R steps): the loop's state
    at checkpoint 2, handed to a fresh fit, gives checkpoint 3's state exactly."""
    states = []
    method, train = transzero(eval_cadence="official", sampling="epoch", epochs=3)
    ctx = context(lambda e: states.append((e, ctx.snapshot(), {k: v.clone() for k, v in method.state_dict().items()})),
                  semantics(3, offset=4))
    method.fit(train, ctx)
    resumed, train2 = transzero(eval_cadence="official", sampling="epoch", epochs=3)
    after = []
    ctx2 = context(lambda e: after.append((e, resumed.state_dict())), semantics(3, offset=4))
    ctx2.resume_state = states[1][1]
    resumed.fit(train2, ctx2)
    assert [e for e, _ in after] == [3]
    assert all(torch.equal(after[0][1][k], states[2][2][k]) for k in states[2][2])


# --- images ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_view(tiny_project):
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.images import ImageView

    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    return ImageView(d, np.arange(12))


def test_image_loader_batches_are_the_same_under_any_number_of_workers(image_view):
    from zsl_bench.images import ImageLoader
    from zsl_bench.torch_methods import resize_crop_transform

    parts = [(1, np.array([0, 3, 5]), 0), (2, np.array([5, 7]), 0), (3, np.array([7, 8]), 2)]
    before = torch.get_rng_state()
    inline = list(ImageLoader(image_view, resize_crop_transform(32, train=True), seed=11, workers=0)(parts))
    assert torch.equal(torch.get_rng_state(), before), "augmenting leaves the training process's stream alone"
    pooled = list(ImageLoader(image_view, resize_crop_transform(32, train=True), seed=11, workers=2)(parts))
    assert [b.shape for b in inline] == [(3, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32)]
    assert all(torch.equal(a, b) for a, b in zip(inline, pooled))
    # Image 5 at step 1 and step 2, image 7 as the first of its batch and as the third of the whole batch:
    # each draws its own crop and flip.
    assert not torch.equal(inline[0][2], inline[1][0]) and not torch.equal(inline[1][1], inline[2][0])
    other_seed = list(ImageLoader(image_view, resize_crop_transform(32, train=True), seed=12, workers=0)(parts))
    assert not torch.equal(inline[0], other_seed[0])


def test_evaluation_transform_is_deterministic_and_normalised(image_view):
    from zsl_bench.torch_methods import resize_crop_transform

    evaluation = resize_crop_transform(32, train=False)
    a, b = image_view.read([0, 1], evaluation), image_view.read([0, 1], evaluation)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert -3 < float(a.mean()) < 3 and float(a.std()) > 0.1
