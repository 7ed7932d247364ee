"""Building blocks of the feature-generating methods (f-CLSWGAN, TF-VAEGAN); the core never imports this.

A generative method learns, on seen-class features only, to synthesise a feature vector from a class's
attributes; it then synthesises features for the unseen classes (their attributes only: the methods declare
`uses_unseen_semantics`) and trains ordinary softmax classifiers:

- GZSL: real seen-class features + synthetic unseen-class features, one classifier over every class;
- ZSL: synthetic unseen-class features only, a classifier over the unseen classes (`score_zsl`).

Both published codes train these final classifiers after *every* generator epoch, for a fixed number of
classifier epochs, and keep the best test accuracy over both levels. Here every (generator epoch g,
classifier epoch c) is a checkpoint of the run, labelled "g{g}/c{c}", so the evaluator scores each on
validation as on test and a policy selects both levels at once: `val` on validation, `paper` on test as the
published code did. Only the last classifier epoch of a generator epoch is a resumable snapshot.

`GenerativeMethod` holds what both share: MinMax feature scaling fitted on the training features, the
generator's training through `training.TrainLoop` (one loop step = one critic batch, official order), the
synthesis, the final classifiers, scoring, state. A subclass gives its networks and its two update rules.
"""
from __future__ import annotations

import numpy as np

from zsl_bench.torch_methods import TorchMethod, torch_generator
from zsl_bench.method import PARAMETER_COUNT, ZSL_SCORER, ClassSemantics, FitContext, TrainData
from zsl_bench.training import BatchStream, TrainLoop, epoch_checkpoints


def search_spaces_around(loss_weight: str) -> dict:
    """The validation grid of a feature-generating method around each official setting: its auxiliary loss
    weight and the synthetic features per class; the embedded default runs the defaults only (time goal of
    `dvc repro`)."""
    around = {"CUB": [100, 300], "SUN": [100, 400], "AWA2": [600, 1800], "AWA1": [600, 1800], "*": [100, 300]}
    return {**{ds: {loss_weight: [0.01, 0.1], "syn_num": n} for ds, n in around.items()}, "synthetic": {}}


def checkpoint_label(generator_epoch: int, classifier_epoch: int) -> str:
    return f"g{generator_epoch}/c{classifier_epoch}"


def init_normal(module) -> None:
    """N(0, 0.02) weights and zero biases for every Linear (both official codes' `weights_init`)."""
    import torch.nn as nn

    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def gradient_penalty(critic, real, fake, att, alpha):
    """WGAN-GP (Gulrajani et al. 2017) for a conditional critic: mean over samples of
    (‖∇ₓ critic(x̂, a)‖₂ − 1)², x̂ = α·real + (1 − α)·fake, with one α per sample ([B, 1])."""
    import torch

    mixed = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    out = critic(mixed, att)
    grad, = torch.autograd.grad(out, mixed, grad_outputs=torch.ones_like(out), create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


class MinMaxScaling:
    """sklearn's MinMaxScaler fitted on the training features, then divided by the largest scaled training
    value (as both official data loaders do): training features in [0, 1]; a constant column maps to 0."""

    def __init__(self, low, scale):
        self.low, self.scale = np.asarray(low, np.float32), np.asarray(scale, np.float32)

    @classmethod
    def fit(cls, x: np.ndarray) -> "MinMaxScaling":
        x = np.asarray(x, dtype=np.float64)
        low, span = x.min(0), x.max(0) - x.min(0)
        span[span == 0] = 1.0
        peak = ((x - low) / span).max()
        return cls(low, span * (peak if peak > 0 else 1.0))

    def __call__(self, x) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.low) / self.scale).astype(np.float32)


def classifier_batches(n: int, batch_size: int):
    """The official final classifiers' `next_batch`, for torch's global generator: a permutation at the
    start, a fresh one whenever the current is used up, a batch that crosses the end completed from the
    next permutation; an "epoch" is ceil(n / batch_size) batches. Yields index tensors forever."""
    import torch

    order, pos = torch.randperm(n), 0
    while True:
        if pos + batch_size > n:
            rest = order[pos:]
            order, pos = torch.randperm(n), batch_size - len(rest)
            yield torch.cat([rest, order[:pos]])
        else:
            pos += batch_size
            yield order[pos - batch_size:pos]


class LogSoftmaxClassifier:
    """Linear layer + log-softmax trained with NLL and Adam(lr, β₁ = 0.5) (the official final classifier)."""

    def __init__(self, dim: int, n_classes: int, lr: float, device):
        import torch

        self.model = torch.nn.Linear(dim, n_classes).to(device)
        init_normal(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.5, 0.999))

    def step(self, x, y) -> None:
        import torch.nn.functional as F

        self.opt.zero_grad()
        F.nll_loss(F.log_softmax(self.model(x), dim=1), y).backward()
        self.opt.step()


class GenerativeMethod(TorchMethod):
    """Shared by f-CLSWGAN and TF-VAEGAN (module docstring). A subclass implements `build_net`,
    `make_optimizers`, `steps_per_epoch`, `train_step`, `synthesise` and, if its classifier reads more than the
    feature, `classifier_features`; `pretrain` runs before the generator's first step of a fresh fit."""
    input_kind = "vector"
    uses_unseen_semantics = True    # synthesises the unseen classes from their attributes
    capabilities = frozenset({PARAMETER_COUNT, ZSL_SCORER})
    default_calibration_gamma = 0.0

    @classmethod
    def checkpoint_count(cls, hparams: dict) -> int:
        return int(hparams["epochs"]) * int(hparams["classifier_epochs"])

    @property
    def nz(self) -> int:
        """Noise size: the attribute count, as every official configuration of both methods sets it."""
        return self.task.n_attributes

    # --- subclass hooks -----------------------------------------------------------------------------
    def make_optimizers(self) -> list:
        raise NotImplementedError

    def steps_per_epoch(self, n: int) -> int:
        raise NotImplementedError

    def pretrain(self, real, y) -> None:
        """Before the generator's first step (f-CLSWGAN's seen-class classifier). Not rerun on resume: its
        result is part of the network, restored with the loop's state."""

    def train_step(self, loop: TrainLoop, step: int, real, att, y) -> None:
        """One loop step (0-based within the generator epoch) on this process's share of the batch."""
        raise NotImplementedError

    def synthesise(self, att, noise):
        """Features for attribute rows `att` [N, A] and noise [N, nz], networks in eval mode, no grad."""
        raise NotImplementedError

    def classifier_features(self, x):
        """What the final classifiers read of a (scaled) feature batch: the feature itself by default."""
        return x

    # --- fit ----------------------------------------------------------------------------------------------
    def fit(self, train: TrainData, ctx: FitContext) -> None:
        import torch

        hp = self.hparams
        torch_generator(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        self.scaling = MinMaxScaling.fit(train.x)          # training features only
        real = self.tensor(self.scaling(train.x))
        y = torch.as_tensor(train.y, device=self.torch_device)
        att = self.tensor(self.class_matrix(train.semantics))
        unseen = ctx.unseen_semantics()
        unseen_att = self.tensor(self.class_matrix(unseen))
        self.gzsl_classes = np.concatenate([train.semantics.class_ids, unseen.class_ids])
        self.zsl_classes = np.asarray(unseen.class_ids)
        self.net = self.build_net().to(self.torch_device)
        if ctx.resume_state is None:
            self.pretrain(real, y)
        loop = TrainLoop(ctx, self.net, self.make_optimizers(), device=self.torch_device)
        n, per_epoch = len(train.y), self.steps_per_epoch(len(train.y))
        # the official `next_batch`: each batch a fresh random draw of distinct training samples
        stream = BatchStream(lambda r: [r.permutation(n)[:hp["batch_size"]]], rng)

        def update(idx, _):
            index = torch.as_tensor(idx, device=self.torch_device)
            self.train_step(loop, (loop.step_count - 1) % per_epoch, real[index], att[y[index]], y[index])

        def classifiers(g):
            self.train_classifiers(g, ctx, real, y, unseen_att)

        loop.run(stream, update, epoch_checkpoints(hp["epochs"], per_epoch), on_checkpoint=classifiers)

    def train_classifiers(self, g: int, ctx: FitContext, real, y, unseen_att) -> None:
        """After generator epoch g: synthesise `syn_num` features per unseen class, train the GZSL and ZSL
        classifiers side by side for `classifier_epochs`, and evaluate after each of their epochs."""
        import torch

        hp = self.hparams
        self.net.eval()
        k = int(hp["syn_num"])
        labels = torch.arange(len(unseen_att), device=self.torch_device).repeat_interleave(k)
        with torch.no_grad():
            syn = self.synthesise(unseen_att[labels], torch.randn(len(labels), self.nz, device=self.torch_device))
            syn_in = self.classifier_features(syn)
            real_in = torch.cat([self.classifier_features(real[lo:lo + 1024]) for lo in range(0, len(real), 1024)])
        n_seen = len(self.gzsl_classes) - len(self.zsl_classes)
        sets = {"gzsl": (torch.cat([real_in, syn_in]), torch.cat([y, labels + n_seen]), len(self.gzsl_classes)),
                "zsl": (syn_in, labels, len(self.zsl_classes))}
        heads = {name: LogSoftmaxClassifier(x.shape[1], c, hp["classifier_lr"], self.torch_device)
                 for name, (x, _, c) in sets.items()}
        # batches of syn_num samples, as the official codes pass syn_num as the classifier's batch size
        batches = {name: classifier_batches(len(x), k) for name, (x, _, _) in sets.items()}
        last = int(hp["classifier_epochs"])
        for c in range(1, last + 1):
            for name, (x, t, _) in sets.items():
                for _ in range(-(-len(x) // k)):
                    b = next(batches[name]).to(self.torch_device)
                    heads[name].step(x[b], t[b])
            self.gzsl_head, self.zsl_head = heads["gzsl"].model, heads["zsl"].model
            ctx.evaluate(checkpoint_label(g, c), snapshot=c == last)

    # --- scoring --------------------------------------------------------------------------------------
    def _logits(self, head, x) -> np.ndarray:
        import torch

        self.net.eval()
        out = []
        with torch.no_grad():
            for lo in range(0, len(x), 1024):
                feats = self.classifier_features(self.tensor(self.scaling(x[lo:lo + 1024])))
                out.append(torch.log_softmax(head(feats), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, head.out_features), np.float32)

    @staticmethod
    def _columns(trained: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
        where = {int(c): i for i, c in enumerate(trained)}
        missing = [int(c) for c in wanted if int(c) not in where]
        if missing:
            raise ValueError(f"the {what} classifier was trained without classes {missing[:5]}: a generative "
                             "method scores only the classes it synthesised or saw in training")
        return np.array([where[int(c)] for c in wanted])

    def score(self, x, semantics: ClassSemantics) -> np.ndarray:
        """Log-probabilities of the GZSL classifier (every class it was trained on), in `semantics`' order."""
        return self._logits(self.gzsl_head, x)[:, self._columns(self.gzsl_classes, semantics.class_ids, "GZSL")]

    def score_zsl(self, x, unseen: ClassSemantics) -> np.ndarray:
        """Log-probabilities of the ZSL classifier, trained on synthetic unseen-class features only."""
        return self._logits(self.zsl_head, x)[:, self._columns(self.zsl_classes, unseen.class_ids, "ZSL")]

    # --- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        import torch

        state = {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        for name in ("gzsl", "zsl"):
            head = getattr(self, f"{name}_head")
            state.update({f"{name}_head.{k}": v.detach().cpu().clone() for k, v in head.state_dict().items()})
            state[f"{name}_classes"] = torch.as_tensor(np.asarray(getattr(self, f"{name}_classes"), dtype=np.int64))
        state["scaling.low"] = torch.as_tensor(self.scaling.low)
        state["scaling.scale"] = torch.as_tensor(self.scaling.scale)
        return state

    def load_state_dict(self, state: dict) -> None:
        import torch

        self.net = self.build_net().to(self.torch_device)
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        for name in ("gzsl", "zsl"):
            weight = state[f"{name}_head.weight"]
            head = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(self.torch_device)
            head.load_state_dict({"weight": weight, "bias": state[f"{name}_head.bias"]})
            setattr(self, f"{name}_head", head)
            setattr(self, f"{name}_classes", state[f"{name}_classes"].numpy())
        self.scaling = MinMaxScaling(state["scaling.low"].numpy(), state["scaling.scale"].numpy())

    def parameter_count(self) -> dict:
        """Every network parameter is trained at some stage (f-CLSWGAN's seen-class classifier before the
        generator, then frozen), plus the two final classifiers; the feature scaling is fitted, not learned."""
        n = sum(p.numel() for p in self.net.parameters())
        n += sum(p.numel() for h in (self.gzsl_head, self.zsl_head) for p in h.parameters())
        return {"learned": int(n), "fixed": ["gzsl_classes", "zsl_classes", "scaling.low", "scaling.scale"]}
