"""The official TransZero computation, re-typed for timing: shiming-chen/TransZero `model.py` (7c10cdb) as it
computes a training step, on any device (the release hard-codes `.cuda()`), with the CUB config.

Kept as the release computes it, because these are what the benchmark measures against:
- the relative-geometry embedding rebuilt at every forward for every batch element, in float32
  ([B, 196, 196, 64]), then `Linear(64 → 1)` + ReLU on it;
- the attribute queries repeated over the batch, and the decoder's self- and cross-attention through
  `nn.MultiheadAttention` called with its defaults (`need_weights=True`, averaged weights), sequence-first;
- `nn.Dropout` modules; the three-operand `torch.einsum` for the attribute scores; the loss on one-hot rows.
Left out: `nn.TransformerDecoder`'s wrapper, whose current signature no longer accepts the release's layer
(it passes `tgt_is_causal`); with one layer and no final norm it only calls the layer, which is done here.

`copy_weights(ours, official)` gives both the same parameters, so `benchmarks/bench_transzero_step.py` can
check that the two compute the same scores and losses before timing them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def box_relational_embedding(batch: int, grid=(14, 14), dim_g: int = 64, wave_len: float = 1000.0, device=None,
                             dtype=torch.float32):
    """BoxRelationalEmbedding for grid cells, as the release builds it at every step: [B, R, R, dim_g] (in
    float32 there; `dtype` lets a float64 check compute it in float64)."""
    x = torch.arange(0, grid[0], device=device).to(dtype)
    y = torch.arange(0, grid[1], device=device).to(dtype)
    px_min = x.view(-1, 1).expand(-1, grid[0]).contiguous().view(-1)
    py_min = y.view(1, -1).expand(grid[1], -1).contiguous().view(-1)

    def rel(v, n):
        return v.view(1, -1, 1).expand(batch, -1, -1) / n

    x_min, y_min, x_max, y_max = rel(px_min, grid[0]), rel(py_min, grid[1]), rel(px_min + 1, grid[0]), rel(py_min + 1, grid[1])
    cx, cy = (x_min + x_max) * 0.5, (y_min + y_max) * 0.5
    w, h = (x_max - x_min) + 1.0, (y_max - y_min) + 1.0
    delta_x = torch.log(torch.clamp(torch.abs((cx - cx.view(batch, 1, -1)) / w), min=1e-3))
    delta_y = torch.log(torch.clamp(torch.abs((cy - cy.view(batch, 1, -1)) / h), min=1e-3))
    delta_w = torch.log(w / w.view(batch, 1, -1))
    delta_h = torch.log(h / h.view(batch, 1, -1))
    size = delta_h.size()
    position = torch.cat([d.view(batch, size[1], size[2], 1) for d in (delta_x, delta_y, delta_w, delta_h)], -1)
    dim_mat = 1.0 / torch.pow(wave_len, torch.arange(dim_g / 8, device=device, dtype=dtype) / (dim_g / 8))
    position = 100.0 * position.view(batch, size[1], size[2], 4, -1)
    mul = (position * dim_mat.view(1, 1, 1, -1)).view(batch, size[1], size[2], -1)
    return torch.cat((torch.sin(mul), torch.cos(mul)), -1)


class GeometryAttention(nn.Module):   # ScaledDotProductGeometryAttention, h = 1
    def __init__(self, d: int):
        super().__init__()
        self.fc_q, self.fc_k, self.fc_v, self.fc_o = (nn.Linear(d, d) for _ in range(4))
        self.dropout = nn.Dropout(0.1)   # the release never passes its dropout here
        self.d = d

    def forward(self, queries, keys, values, geometry):
        b, nq, nk = queries.shape[0], queries.shape[1], keys.shape[1]
        q = self.fc_q(queries).view(b, nq, 1, self.d).permute(0, 2, 1, 3)
        k = self.fc_k(keys).view(b, nk, 1, self.d).permute(0, 2, 3, 1)
        v = self.fc_v(values).view(b, nk, 1, self.d).permute(0, 2, 1, 3)
        att = torch.matmul(q, k) / np.sqrt(self.d)
        att = self.dropout(torch.softmax(-geometry + att, -1))
        return self.fc_o(torch.matmul(att, v).permute(0, 2, 1, 3).contiguous().view(b, nq, self.d))


class EncoderLayer(nn.Module):   # EncoderLayer ∘ MultiHeadGeometryAttention ∘ PositionWiseFeedForward
    def __init__(self, d: int, d_ff: int, dropout: float):
        super().__init__()
        self.attention = GeometryAttention(d)
        self.mh_dropout, self.mh_norm = nn.Dropout(dropout), nn.LayerNorm(d)
        self.dropout, self.lnorm = nn.Dropout(dropout), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
        self.ff_dropout, self.ff_dropout_2, self.ff_norm = nn.Dropout(dropout), nn.Dropout(dropout), nn.LayerNorm(d)

    def forward(self, x, geometry):
        att = self.mh_norm(x + self.mh_dropout(self.attention(x, x, x, geometry)))
        att = self.lnorm(x + self.dropout(att))
        out = self.ff_dropout(self.fc2(self.ff_dropout_2(F.relu(self.fc1(att)))))
        return self.ff_norm(att + out)


class DecoderLayer(nn.TransformerDecoderLayer):   # the release's TransformerDecoderLayer.forward, SAtt = True
    def forward(self, tgt, memory):
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(tgt, tgt, tgt)[0]))
        tgt = self.norm2(tgt + self.dropout2(self.multihead_attn(tgt, memory, memory)[0]))
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(tgt))))))


class OfficialTransZero(nn.Module):
    def __init__(self, att: torch.Tensor, w2v: torch.Tensor, seen: int, dim_f: int = 2048, d: int = 300,
                 d_ff: int = 512, dropout: float = 0.4):
        super().__init__()
        self.att = nn.Parameter(F.normalize(att), requires_grad=False)
        self.V = nn.Parameter(F.normalize(w2v))
        mask = torch.ones(1, att.shape[0])
        mask[:, :seen] *= -1
        self.vec_bias = nn.Parameter(mask, requires_grad=False)   # mask_bias · bias (bias = 1)
        self.unseen = torch.arange(seen, att.shape[0])
        self.W_1 = nn.Parameter(torch.randn(w2v.shape[1], d))
        self.embed_cv, self.embed_cv_aux = nn.Linear(dim_f, d), nn.Linear(dim_f, d)   # aux: built, never used
        self.embed_attr = nn.Linear(w2v.shape[1], d)
        self.WG = nn.Linear(64, 1)
        self.encoder = EncoderLayer(d, d_ff, dropout)
        self.decoder = DecoderLayer(d, 1, dim_feedforward=d_ff, dropout=dropout)
        self.weight_ce = nn.Parameter(torch.eye(att.shape[0]), requires_grad=False)

    def forward(self, maps):
        b, c = maps.shape[:2]
        fs = F.normalize(maps.reshape(b, c, -1), dim=1)
        h_cv = self.embed_cv(fs.permute(0, 2, 1))
        h_attr = self.embed_attr(self.V)
        geometry = box_relational_embedding(b, tuple(maps.shape[2:]), device=maps.device, dtype=maps.dtype)
        size = list(geometry.shape[:3])
        size.insert(1, 1)
        geometry = F.relu(self.WG(geometry.view(-1, 64)).view(size))
        memory = self.encoder(h_cv, geometry).permute(1, 0, 2)
        out = self.decoder(h_attr.unsqueeze(0).repeat(b, 1, 1).permute(1, 0, 2), memory).permute(1, 0, 2)
        embed = torch.einsum("iv,vf,bif->bi", self.V, self.W_1, out)
        return torch.einsum("ki,bi->bk", self.att, embed) + self.vec_bias, embed

    def loss(self, pred, embed, labels):
        one_hot = self.weight_ce[labels]
        ce = torch.mean(-torch.einsum("bk,bk->b", F.log_softmax(pred - self.vec_bias, dim=1), one_hot))
        cal = -torch.log(torch.mean(torch.sum(F.softmax(pred, dim=-1)[:, self.unseen], dim=1)))
        reg = F.mse_loss(embed, one_hot @ self.att, reduction="mean")
        return ce + 0.3 * cal + 0.005 * reg


def copy_weights(ours: nn.Module, official: OfficialTransZero) -> None:
    """Give `official` the parameters of our `methods.transzero.model.TransZeroNet` (same config)."""
    enc, dec = ours.encoder, ours.decoder
    pairs = {official.V: ours.V, official.W_1: ours.W_1, official.WG.weight: enc.geometry.weight,
             official.WG.bias: enc.geometry.bias}
    modules = [(official.embed_cv, ours.embed_regions), (official.embed_attr, ours.embed_attributes),
               (official.encoder.attention.fc_q, enc.fc_q), (official.encoder.attention.fc_k, enc.fc_k),
               (official.encoder.attention.fc_v, enc.fc_v), (official.encoder.attention.fc_o, enc.fc_o),
               (official.encoder.mh_norm, enc.ln_attn), (official.encoder.lnorm, enc.ln_layer),
               (official.encoder.fc1, enc.fc1), (official.encoder.fc2, enc.fc2), (official.encoder.ff_norm, enc.ln_ff),
               (official.decoder.self_attn, dec.self_attn), (official.decoder.multihead_attn, dec.cross_attn),
               (official.decoder.norm1, dec.norm1), (official.decoder.norm2, dec.norm2),
               (official.decoder.norm3, dec.norm3), (official.decoder.linear1, dec.linear1),
               (official.decoder.linear2, dec.linear2)]
    for theirs, mine in modules:
        theirs.load_state_dict(mine.state_dict())
    with torch.no_grad():
        for theirs, mine in pairs.items():
            theirs.copy_(mine)
