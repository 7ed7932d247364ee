"""PSVMA's network (ManLiuCoder/PSVMA@abd282a models/modeling/PSVMAModel/PSVMANet.py): the dual semantic-visual
transformer module (DSAD, the official `Block`), one instance applied twice with shared weights, and the head
around it: attribute prototypes w2v·W as the semantic tokens, GAP of the adapted patch tokens times V as the
attribute prediction.

Our code; the official computation is re-typed in benchmarks/psvma_official_copy.py only to test parity.
Layouts: patch tokens [B, P, C] (P = H·W, row-major), semantic tokens [B, A, C].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    """Single-head attention with pre-norm on q, k and v (official `AnyAttention`, qkv bias on). The logits are
    ReLU(q·k)·C^-1/2 (ReLU before the scale, then a softmax over keys); they are returned with the softmax
    and the output because the attribute regression reads the logits' maximum, not the softmax."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.scale = dim ** -0.5

    def forward(self, q, kv):
        q, k, v = self.to_q(self.norm_q(q)), self.to_k(self.norm_k(kv)), self.to_v(self.norm_v(kv))
        logits = torch.relu(q @ k.transpose(1, 2)) * self.scale
        weights = torch.softmax(logits, dim=-1)
        return logits, weights, self.proj(weights @ v)


class FeedForward(nn.Module):
    """LayerNorm → Linear → GELU → Linear, Xavier-uniform weights (official `Mlp`, dropout 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            bound = fc.weight.shape[1] ** -0.5
            nn.init.uniform_(fc.bias, -bound, bound)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class GroupGate(nn.Module):
    """Official `SimpleReasoning`: each semantic token's channel maximum → A → A/g → A (GELU, sigmoid) →
    a per-token gate; x + gate·x."""

    def __init__(self, n_att: int, groups: int):
        super().__init__()
        hidden = n_att // groups
        if hidden < 1:
            raise ValueError(f"PSVMA: {groups} attribute groups leave no hidden unit for {n_att} attributes")
        self.fc1, self.fc2 = nn.Linear(n_att, hidden), nn.Linear(hidden, n_att)

    def forward(self, x):
        gate = torch.sigmoid(self.fc2(F.gelu(self.fc1(x.amax(-1)))))[..., None]
        return gate * x + x


class TokenMix(nn.Module):
    """Official `Tokenmix`: LayerNorm over channels, then an MLP across the P patch tokens (P → h → h → P,
    GELU), residual. The official P is fixed at 196 (224 px / 16) and h at 512."""

    def __init__(self, dim: int, tokens: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(tokens, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, tokens))

    def forward(self, x):
        return x + self.net(self.norm(x).transpose(1, 2)).transpose(1, 2)


class DSAD(nn.Module):
    """The official `Block`: the encoder adapts the semantic tokens to the image in two rounds (attention of
    the tokens over the patches, group gate, feed-forward; the second round starts from tokens + first
    round), the decoder lets the patches attend to the adapted tokens, then token mixing and a feed-forward.
    Returns the adapted patches, the two rounds' logits maximised over patches [B, A] (the regression
    targets' predictions) and the second round's softmax attention over patches [B, A, P]."""

    def __init__(self, dim: int, n_att: int, groups: int, tokens: int, mix_hidden: int = 512, ffn_exp: int = 4):
        super().__init__()
        self.enc_attn = Attention(dim)
        self.group_gate = GroupGate(n_att, groups)
        self.enc_ffn = FeedForward(dim, dim)
        self.dec_attn = Attention(dim)
        self.mix = TokenMix(dim, tokens, mix_hidden)
        self.ffn = FeedForward(dim, dim * ffn_exp)

    def adapt(self, parts, x):
        logits, weights, out = self.enc_attn(parts, x)
        attended = parts + out
        gated = self.group_gate(attended)
        return gated + self.enc_ffn(gated) + attended, logits.amax(-1), weights

    def forward(self, x, parts):
        first, max0, _ = self.adapt(parts, x)
        adapted, max1, attention = self.adapt(parts + first, x)
        feats = x + self.dec_attn(x, adapted)[2]
        feats = self.mix(feats)
        return feats + self.ffn(feats), (max0, max1), attention


def truncated_normal(*shape, std=0.01):
    """The official `trunc_normal_`: N(0, 1) redrawn outside (−2, 2), times std."""
    t = torch.empty(*shape)
    nn.init.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0)
    return t * std


class PSVMAHead(nn.Module):
    """Semantic tokens w2v·W, DSAD → `between` → DSAD (the same weights both times), GAP over patches, ·V.
    `between` is the ViT's last block in image mode (official: it runs between the two passes); on frozen
    tokens there is nothing to run (None)."""

    def __init__(self, channels: int, w2v, groups: int, tokens: int, mix_hidden: int = 512):
        super().__init__()
        self.register_buffer("w2v", torch.as_tensor(w2v, dtype=torch.float32))
        n_att = self.w2v.shape[0]
        self.W = nn.Parameter(truncated_normal(self.w2v.shape[1], channels))
        self.V = nn.Parameter(truncated_normal(channels, n_att))
        self.dsad = DSAD(channels, n_att, groups, tokens, mix_hidden)

    def forward(self, tokens, grid, between=None) -> dict:
        parts = (self.w2v @ self.W).expand(tokens.shape[0], -1, -1)
        feats, maxima0, _ = self.dsad(tokens, parts)
        if between is not None:
            feats = between(feats)
        feats, maxima1, attention = self.dsad(feats, parts)
        return {"attributes": feats.mean(1) @ self.V, "maxima": (*maxima0, *maxima1), "attention": attention,
                "grid": grid}


class PSVMAMaps(nn.Module):
    """Frozen patch-token grids [B, C, H, W] (the store's final block) → the head."""

    def __init__(self, head: PSVMAHead):
        super().__init__()
        self.head = head

    def forward(self, maps):
        return self.head(maps.flatten(2).transpose(1, 2), tuple(maps.shape[2:]))


class PSVMAImage(nn.Module):
    """Images → the timm ViT's blocks but the last (patch embedding, class token, position embedding), the
    head's first DSAD pass, the class *parameter* and position embedding added afresh, the last block, the
    second pass (official PSVMANet.forward L246-L256; no final norm). `backbone` is `token_backbone`'s."""

    def __init__(self, backbone, head: PSVMAHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images):
        vit = self.backbone.net
        x = vit.patch_embed(images)                       # [B, H, W, C] (dynamic_img_size)
        b, h, w, c = x.shape
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
        for block in vit.blocks[:-1]:
            x = block(x)
        prefix = vit.num_prefix_tokens

        def last_block(feats):
            return vit.blocks[-1](vit._pos_embed(feats.reshape(b, h, w, c)))[:, prefix:]

        return self.head(x[:, prefix:], (h, w), between=last_block)
