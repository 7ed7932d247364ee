"""TF-VAEGAN: Narayan, Gupta, Khan, Snoek & Shao, "Latent Embedding Feedback and Discriminative Features for
Zero-Shot Classification", ECCV 2020.

The f-VAEGAN-D2 core on pooled features — encoder E(x, a) → (μ, log σ²), generator G(z, a) (sigmoid output:
features are MinMax-scaled to [0, 1]), conditional critic D(x, a) — plus a semantic embedding decoder
Dec(x) → â (unit norm) whose hidden layer h feeds back into the generator through F:

    G_fb(z, a) = sigmoid(W₂ (LeakyReLU(W₁ [z, a]) + a₁ F(h(G(z, a)))))

Per generator epoch, `feedback_loop` passes (the first without feedback, the second with it) of
ceil(N / batch_size) iterations; each iteration = `critic_iter` critic steps, each on a fresh random batch and
preceded by a decoder step on real features (L_R = r · weighted-L1(Dec(x), a)), then one step of E, G (F in the
feedback pass, Dec unless `freeze_dec`) on the last batch:

    L_D  = γ_D (E[D(x̃, a)] − E[D(x, a)] + λ GP),        x̃ = G(μ + σε, a)   (encoded noise)
    L_EG = BCE(x̃, x) + KL(q(z|x, a) ‖ N(0, I)) − γ_G E[D(x̃, a)] + r · weighted-L1(Dec(x̃), a)

λ adapts as in the official code: ×1.1 when the critic steps' mean penalty exceeds 1.05, ÷1.1 below 1.001.
Synthesis for the final classifiers uses z ~ N(0, I) and feedback weight a₂; those classifiers read
[x, Dec(x), h(x)] (`classifier_features`), as the paper does.
"""
from __future__ import annotations

from zsl_bench.feature_generation import GenerativeMethod, gradient_penalty, init_normal, search_spaces_around
from zsl_bench.method import PaperRule, dataset_profiles

OFFICIAL = "akshitac8/tfvaegan@a0de81c"
COMMON = {"batch_size": 64, "critic_iter": 5, "lambda_gp": 10.0, "beta1": 0.5, "ngh": 4096, "ndh": 4096,
          "hidden": 4096, "classifier_epochs": 25, "feedback_loop": 2, "freeze_dec": False, "dec_lr": 1e-4}
# scripts/run_{cub,sun,awa}_tfvaegan.py (noise and latent size = attribute count everywhere)
PAPER = {
    "CUB": {"epochs": 300, "lr": 1e-4, "classifier_lr": 1e-3, "syn_num": 300, "gamma_d": 10.0, "gamma_g": 10.0,
            "recons_weight": 0.01, "a1": 1.0, "a2": 1.0, "feed_lr": 1e-5},
    "SUN": {"epochs": 400, "lr": 1e-3, "classifier_lr": 5e-4, "syn_num": 400, "gamma_d": 1.0, "gamma_g": 1.0,
            "recons_weight": 0.01, "a1": 0.1, "a2": 0.01, "feed_lr": 1e-4},
    "AWA2": {"epochs": 120, "lr": 1e-5, "classifier_lr": 1e-3, "syn_num": 1800, "gamma_d": 10.0, "gamma_g": 10.0,
             "recons_weight": 0.1, "a1": 0.01, "a2": 0.01, "feed_lr": 1e-4, "freeze_dec": True},
}
# The embedded default (512-d pooled vectors, ~1,800 training images): CUB's weights, smaller networks, a
# higher learning rate and a short schedule (at lr 1e-3 six epochs reach T1 ≈ 20 there, at 3e-3 ≈ 35).
SYNTHETIC = {**PAPER["CUB"], "epochs": 6, "lr": 3e-3, "feed_lr": 1e-4, "syn_num": 60, "ngh": 512, "ndh": 512,
             "hidden": 512, "classifier_epochs": 4}


def build_tfvaegan(dim: int, n_att: int, latent: int, hidden: int, ngh: int, ndh: int):
    import torch
    import torch.nn as nn

    if hidden != ngh:
        raise ValueError(f"TF-VAEGAN adds the feedback F(h) (size ngh = {ngh}) to the generator's hidden layer "
                         f"(size hidden = {hidden}): set them equal")

    leaky = lambda x: nn.functional.leaky_relu(x, 0.2)  # noqa: E731

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc3 = nn.Linear(dim + n_att, hidden), nn.Linear(hidden, 2 * latent)
            self.mean, self.log_var = nn.Linear(2 * latent, latent), nn.Linear(2 * latent, latent)

        def forward(self, x, att):
            h = leaky(self.fc3(leaky(self.fc1(torch.cat([x, att], 1)))))
            return self.mean(h), self.log_var(h)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc3 = nn.Linear(latent + n_att, hidden), nn.Linear(hidden, dim)

        def forward(self, z, att, feedback=None, weight=0.0):
            h = leaky(self.fc1(torch.cat([z, att], 1)))
            # the sigmoid in fp32: under bf16/fp16 autocast it would round to exactly 1 for moderate logits,
            # and BCE's gradient there is inf (fp16: NaN) or 0
            return torch.sigmoid(self.fc3(h if feedback is None else h + weight * feedback).float())

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(dim + n_att, ndh), nn.Linear(ndh, 1)

        def forward(self, x, att):
            return self.fc2(leaky(self.fc1(torch.cat([x, att], 1))))

    class Feedback(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(ngh, ngh), nn.Linear(ngh, ngh)

        def forward(self, h):
            return leaky(self.fc2(leaky(self.fc1(h))))

    class Decoder(nn.Module):
        """Features → unit-norm attributes; `forward` returns (â, hidden)."""
        def __init__(self):
            super().__init__()
            self.fc1, self.fc3 = nn.Linear(dim, ngh), nn.Linear(ngh, n_att)

        def forward(self, x):
            h = leaky(self.fc1(x))
            out = self.fc3(h)
            return out / out.norm(dim=1, keepdim=True), h

    net = nn.ModuleDict({"E": Encoder(), "G": Generator(), "D": Critic(), "F": Feedback(), "Dec": Decoder()})
    init_normal(net)
    net.register_buffer("lambda_gp", torch.zeros(()))   # the adaptive λ: state, so a resumed fit keeps it
    return net


def weighted_l1(pred, target):
    """The official `WeightedL1`: |pred − target| weighted by each sample's normalised squared error."""
    diff = pred - target
    w = diff.pow(2)
    w = w / w.sum(1, keepdim=True).sqrt()
    return (w * diff.abs()).sum() / len(pred)


class TFVAEGAN(GenerativeMethod):
    paper = "Narayan, Gupta, Khan, Snoek & Shao, ECCV 2020"
    paper_rule = PaperRule(checkpoint="test", calibration="zero", separately=("T1", "H"),
                           source=f"{OFFICIAL} train_images.py:L265-L286 (after every generator epoch, keep the best "
                                  "test GZSL H and, separately, ZSL accuracy), classifiers/classifier_images.py:"
                                  "L60-L116 (each final classifier's best test epoch of 25); no calibration")
    # The release-only xlsa17 datasets: AWA1 has AWA2's 50 classes and 85 attributes, so AWA2's setting (what
    # papers reporting AWA1 use); APY, which TF-VAEGAN does not report, CUB's setting, the method's reference.
    profiles = dataset_profiles(COMMON, {**PAPER, "AWA1": PAPER["AWA2"], "APY": PAPER["CUB"]}, SYNTHETIC)
    # around each official setting: the decoder's reconstruction weight and the synthetic features per class
    search_spaces = search_spaces_around("recons_weight")

    def build_net(self):
        hp = self.hparams
        return build_tfvaegan(self.task.input_shape[0], self.task.n_attributes, self.nz, hp["hidden"], hp["ngh"],
                              hp["ndh"])

    def pretrain(self, real, y):
        self.net.lambda_gp.fill_(self.hparams["lambda_gp"])

    def make_optimizers(self):
        import torch

        hp, net = self.hparams, self.net
        betas = (hp["beta1"], 0.999)
        return [torch.optim.Adam(net["D"].parameters(), lr=hp["lr"], betas=betas),
                torch.optim.Adam(net["Dec"].parameters(), lr=hp["dec_lr"], betas=betas),
                torch.optim.Adam(net["E"].parameters(), lr=hp["lr"]),          # default betas, as official
                torch.optim.Adam(net["G"].parameters(), lr=hp["lr"], betas=betas),
                torch.optim.Adam(net["F"].parameters(), lr=hp["feed_lr"], betas=betas)]

    def steps_per_epoch(self, n):
        hp = self.hparams
        return hp["feedback_loop"] * -(-n // hp["batch_size"]) * hp["critic_iter"]

    def generate(self, z, att, feedback_weight):
        """G(z, a), and with feedback from the decoder's hidden layer (detached, as official) when a weight
        is given."""
        G = self.net["G"]
        fake = G(z, att)
        if feedback_weight is None:
            return fake
        _, hidden = self.net["Dec"](fake)
        return G(z, att, self.net["F"](hidden.detach()), feedback_weight)

    def encode(self, real, att, eps):
        """Encoded noise z = μ + σ·ε (the official `--encoded_noise`), with (μ, log σ²)."""
        import torch

        mean, log_var = self.net["E"](real, att)
        return eps * torch.exp(0.5 * log_var) + mean, mean, log_var

    def train_step(self, loop, step, real, att, y):
        import torch
        import torch.nn.functional as F

        hp, net = self.hparams, self.net
        opt_d, opt_dec, opt_e, opt_g, opt_f = loop.optimizers
        per_pass = -(-self._n_train // hp["batch_size"]) * hp["critic_iter"]
        feedback = hp["a1"] if step // per_pass == 1 else None     # the second pass of each epoch only
        first, last = step % hp["critic_iter"] == 0, (step + 1) % hp["critic_iter"] == 0
        n = len(real)
        if first:
            self._gp = torch.zeros((), device=real.device)
        net["D"].requires_grad_(True)
        net["Dec"].requires_grad_(True)
        decoder = hp["recons_weight"] > 0        # official: no decoder training at all without its loss
        if decoder:
            loop.step(opt_dec, lambda p: hp["recons_weight"] * weighted_l1(net["Dec"](real[p])[0], att[p]), n)

        eps = loop.global_rows(lambda m: torch.randn(m, self.nz, device=real.device))
        alpha = loop.global_rows(lambda m: torch.rand(m, 1, device=real.device))
        lam = float(net.lambda_gp)
        batch = min(hp["batch_size"], self._n_train)   # every batch: that many distinct samples

        def critic_loss(p):
            with torch.no_grad():   # the critic step trains D only: the fake is a constant to it
                fake = self.generate(self.encode(real[p], att[p], eps[p])[0], att[p], feedback)
            gp = gradient_penalty(net["D"], real[p], fake, att[p], alpha[p])
            self._gp = self._gp + gp.detach() * ((p.stop - p.start) / batch)   # this part's share of the batch
            return hp["gamma_d"] * (net["D"](fake, att[p]).mean() - net["D"](real[p], att[p]).mean() + lam * gp)

        loop.step(opt_d, critic_loss, n)
        if not last:
            return
        mean_gp = float(loop.sum_across(self._gp)) / hp["critic_iter"]
        if mean_gp > 1.05:
            net.lambda_gp.mul_(1.1)
        elif mean_gp < 1.001:
            net.lambda_gp.div_(1.1)

        net["D"].requires_grad_(False)
        if decoder and hp["freeze_dec"]:
            net["Dec"].requires_grad_(False)
        eps = loop.global_rows(lambda m: torch.randn(m, self.nz, device=real.device))

        def generator_loss(p):
            x = real[p]
            z, mean, log_var = self.encode(x, att[p], eps[p])
            fake = self.generate(z, att[p], feedback)
            with torch.autocast(fake.device.type, enabled=False):   # BCE is unsafe in half precision
                bce = F.binary_cross_entropy(fake.float() + 1e-12, x.float(), reduction="sum") / len(x)
            kld = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp()) / len(x)
            return (bce + kld - hp["gamma_g"] * net["D"](fake, att[p]).mean()
                    + hp["recons_weight"] * weighted_l1(net["Dec"](fake)[0], att[p]))

        stepped = [opt_e, opt_g] + ([opt_f] if feedback is not None else []) + ([opt_dec] if decoder and not hp["freeze_dec"] else [])
        loop.step(tuple(stepped), generator_loss, n)

    def fit(self, train, ctx):
        self._n_train = len(train.y)
        super().fit(train, ctx)

    def synthesise(self, att, noise):
        return self.generate(noise, att, self.hparams["a2"])

    def classifier_features(self, x):
        import torch

        out, hidden = self.net["Dec"](x)
        return torch.cat([x, out, hidden], 1)
