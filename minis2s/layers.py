"""Transformer layers and the two BERT stacks built from them: the encoder and the decoder.

BERT is post-LN: each sub-block adds its output to the residual stream and *then* normalises,

    x = LN(x + Dropout(Sublayer(x)))                                   (Devlin et al. 2018, arXiv 1810.04805)

An encoder layer has two sub-blocks (self-attention, FFN); a decoder layer three (causal self-attention,
cross-attention to the encoder output, FFN). The residual + LayerNorm lines in `Layer.forward` are exactly
where bottleneck adapters hook in (see adapters.py): an active adapter at a site rewrites that one line.
`Layer.step` is the same decoder layer for one new token per row while generating, written for speed.

Shape legend: B batch, T length of this stack's sequence, S source length, C hidden.
"""

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import Attention, LayerKV
from .config import BertConfig
from .embeddings import Embeddings
from .feedforward import FeedForward


class Layer(nn.Module):
    """x = LN1(x + SelfAttn(x));  [decoder: x = LN2(x + CrossAttn(x, enc))];  x = LN3(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C, eps = config.hidden_size, config.layer_norm_eps
        self.attn = Attention(config)  # HF: attention.self + attention.output.dense
        self.attn_ln = nn.LayerNorm(C, eps=eps)  # HF: attention.output.LayerNorm
        if config.add_cross_attention:
            self.cross_attn = Attention(config)  # HF: crossattention.self + crossattention.output.dense
            self.cross_ln = nn.LayerNorm(C, eps=eps)  # HF: crossattention.output.LayerNorm
        else:
            self.cross_attn = self.cross_ln = None
        self.ffn = FeedForward(config)  # HF: intermediate.dense + output.dense
        self.ffn_ln = nn.LayerNorm(C, eps=eps)  # HF: output.LayerNorm
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        # Bottleneck adapters, keyed by site: "attn", "cross", "ffn". Empty unless adapters were added.
        self.adapters = nn.ModuleDict()

    def forward(self, x, mask=None, is_causal=False, enc=None, enc_mask=None, cache: LayerKV | None = None):
        """x: (B, T, C); mask: additive self-attention mask; enc: (B, S, C) encoder output (decoder only)."""
        # 1. Self-attention. While generating, the cache appends this step's keys/values to the past ones.
        k, v = self.attn.project_kv(x)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, nh, past + T, hs)
        h = self.drop(self.attn(x, k, v, mask, is_causal))  # the sub-block's output before the residual
        del k, v  # freed now rather than at return: the FFN below holds the layer's largest activation
        x = self.attn_ln(x + h) if "attn" not in self.adapters else self.adapters["attn"](h, x, self.attn_ln)

        # 2. Cross-attention (decoder): queries from the target, keys/values from the encoder output. Those do
        #    not change while generating, so a cache projects them once per source.
        if self.cross_attn is not None:
            if cache is not None and cache.cross is not None:
                k, v = cache.cross
            else:
                k, v = self.cross_attn.project_kv(enc)  # (B, nh, S, hs)
                if cache is not None:
                    cache.cross = (k, v)
            h = self.drop(self.cross_attn(x, k, v, enc_mask))
            del k, v
            x = self.cross_ln(x + h) if "cross" not in self.adapters else self.adapters["cross"](h, x, self.cross_ln)

        # 3. Feed-forward.
        h = self.drop(self.ffn(x))
        x = self.ffn_ln(x + h) if "ffn" not in self.adapters else self.adapters["ffn"](h, x, self.ffn_ln)
        return x

    def step(self, x, cache: LayerKV, enc, enc_mask=None):
        """`forward` for a decoder layer in eval mode, one new position per row, with a cache. x: (N, C), 2-D.

        The same numbers (tests/test_fastpath.py); only Python is cut. At one token per step a layer is a few
        tiny matrix-vector products, and the module calls around them (dropout that is the identity in eval, each
        Linear and LayerNorm through nn.Module.__call__, the (N, 1, C) <-> (N, C) views) cost about as much as the
        arithmetic. So the rows stay 2-D, and the tensors a step reads are gathered once per generation
        (`step_weights`, kept in the cache, which like its K/V belongs to one state of the weights) and used
        directly; sub-module hooks do not fire here.
        """
        if cache.weights is None:
            cache.weights = self.step_weights()
        w, a, c, ad = cache.weights, self.attn, self.cross_attn, self.adapters
        N, nh, hs = x.shape[0], a.n_head, a.head_size
        q, k, v = F.linear(x, *w.qkv).view(N, 3, nh, 1, hs).unbind(1)  # (N, nh, 1, hs) each: one stacked product
        k, v = cache.extend(k, v)  # (N, nh, past + 1, hs)
        h = F.linear(a.attend(q, k, v).view(N, -1), *w.out)  # heads side by side, then W_o: (N, C)
        x = F.layer_norm(x + h, *w.attn_ln) if "attn" not in ad else ad["attn"](h, x, self.attn_ln)

        if cache.cross is None:  # once per source; contiguous, so that each step reads them in order
            cache.cross = tuple(t.contiguous() for t in c.project_kv(enc))  # 2 x (N, nh, S, hs)
        q = F.linear(x, *w.cross_query).view(N, nh, 1, hs)
        h = F.linear(c.attend(q, *cache.cross, enc_mask).view(N, -1), *w.cross_out)
        x = F.layer_norm(x + h, *w.cross_ln) if "cross" not in ad else ad["cross"](h, x, self.cross_ln)

        h = F.linear(w.act(F.linear(x, *w.up)), *w.down)
        return F.layer_norm(x + h, *w.ffn_ln) if "ffn" not in ad else ad["ffn"](h, x, self.ffn_ln)

    def step_weights(self) -> SimpleNamespace:
        """The tensors `step` reads, as F.linear / F.layer_norm arguments; Q, K, V stacked (Attention.stack_qkv)."""
        lin = lambda m: (m.weight, m.bias)  # noqa: E731
        ln = lambda m: (m.normalized_shape, m.weight, m.bias, m.eps)  # noqa: E731
        return SimpleNamespace(qkv=self.attn.stack_qkv(), out=lin(self.attn.out), attn_ln=ln(self.attn_ln),
                               cross_query=lin(self.cross_attn.query), cross_out=lin(self.cross_attn.out),
                               cross_ln=ln(self.cross_ln), up=lin(self.ffn.up), act=self.ffn.act,
                               down=lin(self.ffn.down), ffn_ln=ln(self.ffn_ln))


class Encoder(nn.Module):
    """BertModel: embeddings, then N bidirectional layers. Keeps BERT's pooler (unused by seq2seq) for its weights."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)  # HF: embeddings
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))  # HF: encoder.layer
        # The pooler, tanh(W h[CLS] + b), served next-sentence prediction. A seq2seq model never calls it, but
        # it is part of every BERT checkpoint, so it is kept to load and save them without loss.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)  # HF: pooler.dense

    def forward(self, input_ids, mask=None, token_type_ids=None):
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, C)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class Decoder(nn.Module):
    """BertLMHeadModel's body: embeddings, then N causal layers with cross-attention (no pooler)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)  # HF: bert.embeddings
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))  # HF: bert.encoder.layer

    def forward(self, input_ids, enc, mask=None, is_causal=False, enc_mask=None, cache=None):
        past = cache.past if cache is not None else 0
        x = self.embeddings(input_ids, past_len=past)  # (B, T, C); positions continue after the cached ones
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, is_causal, enc, enc_mask, cache.layers[i] if cache is not None else None)
        return x

    def step(self, input_ids, enc, enc_mask, cache):
        """`forward` for one new token per row (N, 1) in eval mode, through each layer's fast `step`: (N, C)."""
        x = self.embeddings(input_ids, past_len=cache.past)[:, 0]  # (N, C)
        for layer, layer_cache in zip(self.layers, cache.layers):
            x = layer.step(x, layer_cache, enc, enc_mask)
        return x
